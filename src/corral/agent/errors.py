"""How the agent's dealings with the server fail: for good, or for now."""

from __future__ import annotations


class FatalError(Exception):
    """The agent cannot go on; the message is the one line to tell the operator."""


class RetryLater(Exception):
    """The server could not be reached or answered 5xx; the message says why."""


class NodeTokenRejected(Exception):
    """The server does not know our node token: register again, if a join token allows."""
