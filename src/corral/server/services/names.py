"""Generated names for jobs submitted without one: readable, short, unlikely to collide."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "deft",
    "eager",
    "fair",
    "glad",
    "hardy",
    "keen",
    "lucid",
    "merry",
    "noble",
    "proud",
    "quick",
    "rapid",
    "sunny",
    "tidy",
    "vivid",
)
_NOUNS = (
    "bison",
    "colt",
    "drake",
    "egret",
    "finch",
    "gecko",
    "heron",
    "ibex",
    "lynx",
    "moose",
    "otter",
    "panda",
    "quail",
    "raven",
    "stoat",
    "tapir",
    "viper",
    "wren",
)


def generate_job_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.token_hex(2)}"
