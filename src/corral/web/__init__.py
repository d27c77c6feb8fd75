"""The web console: server-rendered pages over the same services as the API."""

from corral.web.mount import install

__all__ = ["install"]
