"""Service shells: the matching-engine and risk-engine shards, the thin readers and the
gateway, assembled into `dex up` (embedded) and `dex serve <service>` (distributed).

Shells are thin: read a batch from the bus, apply it to a pure core, append the outcome
through a fenced write. The stream layout is in `dex.services.layout`, the entry formats in
`dex.services.codec`, the rules in docs/services.md.
"""
