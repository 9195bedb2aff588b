"""The history store on its own: migrations, `dex db`."""
