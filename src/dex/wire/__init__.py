"""What every process shares on the bus, pure (no I/O): the stream, lease and snapshot names
and the shard mapping (`layout`), the entry formats (`codec`), and the ids of the credits
the exchange makes itself (`ids`).
"""
