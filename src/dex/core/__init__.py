"""Domain values shared by every service: numbers, enums, markets, commands, events, errors.

Depends on nothing else in `dex`; everything else depends on it.
"""
