"""The gateway: the public REST API (`service`)."""

from dex.gateway.service import Gateway

__all__ = ["Gateway"]
