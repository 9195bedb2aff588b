"""Operator controls: the admin HTTP routes of the matching-engine and risk-engine services
(markets, market status, fees, limits, kill switches, credits, snapshots) and their request
models. Every route is behind the admin token (`DEX_ADMIN_TOKEN`); each checks what it is
given against what the engines know before appending a command, so a refused request
changes nothing.
"""
