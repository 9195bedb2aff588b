"""Process assembly: the services as units (`units`), their lifecycle in one process
(`run`), the demo markets (`demo`) and the commands `dex up` / `dex serve` (`launch`).
"""
