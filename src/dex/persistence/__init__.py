"""Persistence: the exchange's history in SQLite or PostgreSQL, and its queries (`service`)."""
