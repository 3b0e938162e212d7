"""What is model-specific, one module per multi-resolution family: where each resolution's
tokens sit in the language model's input, how the family packs them and the hooks `patch`
installs. Each host module states `NAME`, `CLASSES` (the transformers classes it takes, by
name), `MODEL_TYPE` (its checkpoints' config.model_type), `inner_model`, `install`,
`packed_layout` and `image_layouts`; `patch` drives all three families, and the
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


def host_for(model_type: str, argument: str = "pretrained") -> ModuleType:
    """The host module of checkpoints whose config says `model_type`; a ValueError that names
    `argument` and the supported families otherwise."""
    for host in patched():
        if host.MODEL_TYPE == model_type:
            return host
    supported = ", ".join(f"{host.NAME} ({host.MODEL_TYPE!r})" for host in patched())
    raise ValueError(f"{argument} must be a checkpoint of one of {supported} (its config's model_type), "
                     f"got model_type {model_type!r}")
