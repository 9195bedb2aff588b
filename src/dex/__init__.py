"""Hybrid DEX backend: a deterministic order book, a risk ledger and the services around them."""

__version__ = "0.1.0"
