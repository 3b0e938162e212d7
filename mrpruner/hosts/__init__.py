"""What is model-specific, one module per multi-resolution family: where each resolution's
tokens sit in the language model's input, how the family packs them and the hooks `patch`
installs. Each host module states `NAME`, `CLASSES` (the transformers classes it takes, by
name), `inner_model`, `install` and `packed_layout`; `patch` drives all three families, and the
host-independent pruned prefill, decode steps and statistics live in `mrpruner.seam`."""

from __future__ import annotations

import importlib
from types import ModuleType

#: This package's host modules, one per family.
FAMILIES = ("llava_next", "llava_onevision", "internvl")


def patched() -> tuple[ModuleType, ...]:
    """The host modules `patch` drives: those that state their classes and hooks."""
    hosts = (importlib.import_module(f"mrpruner.hosts.{family}") for family in FAMILIES)
    return tuple(host for host in hosts if hasattr(host, "CLASSES") and hasattr(host, "install"))


def host_of(model: object) -> ModuleType:
    """The host module that drives `model`, picked by its class's (or a base class's) name; a
    TypeError that names the supported classes otherwise."""
    names = {cls.__name__ for cls in type(model).__mro__}
    for host in patched():
        if names & set(host.CLASSES):
            return host
    supported = [name for host in patched() for name in host.CLASSES]
    raise TypeError(f"model must be one of {supported} (transformers), got {type(model).__name__}")
