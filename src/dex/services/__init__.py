"""The shard runtime and the two sharded services: a shard's writer (`shard.ShardWorker`:
recovery, fenced appends, snapshots, trimming), the replica that holds shard leases and
fails over (`replica`), the log reader the other services use (`reader`), and the
matching-engine and risk-engine shells (`matching`, `risk`).

Shells are thin: read a batch from the bus, apply it to a pure core, append the outcome
through a fenced write. The stream layout is in `dex.wire.layout`, the entry formats in
`dex.wire.codec`, the rules in docs/services.md.
"""
