"""Explicit name -> factory registries. An unknown name is an error that lists the valid ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from sourcetrace.errors import ConfigError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise a ConfigError naming the valid choices.

    >>> lookup({"a": 1}, "a", "model")
    1
    """
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {kind} {name!r}; valid {kind}s: {valid}") from None
