"""The revisions, oldest first (`NNNN_<what>.py`); each one's `down_revision` is the one before."""
