"""Plug-ins picked by name (runtimes, profilers): a registry maps each name to "module:Class",
imported only when asked for, so a device without a plug-in's library still runs the others."""

from __future__ import annotations

import importlib

from edgerob.errors import EdgerobError


def load_plugin(kind: str, registry: dict[str, str], name: str) -> type:
    """The class registered under `name`; one clear error for an unknown name or a plug-in whose
    library is missing here."""
    if name not in registry:
        raise EdgerobError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    module, cls = registry[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise EdgerobError(f"{kind} {name!r} cannot be used here: {e}") from None
