"""Model names: what every entry point (the chapters, the lmms-eval model, the sweep runner) accepts
where a model is named, and what it resolves to.

    "mini"         the miniature trained here (committed in mrpruner/data/mini): the CPU default;
                   "mini-seed1", "mini-seed2": the same recipe, other training seeds (mrpruner.mini.MODELS);
                   "mini-heldout": one more seed, held out from the book (mrpruner.mini.HELD_OUT);
                   "mini-tiles", "mini-tiles-seed2": the second task's, two seeds (mrpruner.mini.RECIPES)
    "tiny"         a randomly initialised tiny LLaVA-NeXT (mrpruner.testing), a smoke test only;
                   "tiny-onevision", "tiny-internvl": the same for LLaVA-OneVision and InternVL
    a folder       a saved checkpoint (config.json inside)
    "owner/name"   a Hugging Face hub id, e.g. llava-hf/llama3-llava-next-8b-hf

A name keeps its short form in results (a grid on "mini" is the same grid on every machine); the
checkpoint behind it is fingerprinted into every measured cell (`fingerprint`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

MINI, TINY = "mini", "tiny"
# The random tiny models of each host family (mrpruner.testing's builders, by function name), seed 0.
TINY_MODELS = {TINY: "tiny_llava_next", "tiny-onevision": "tiny_llava_onevision", "tiny-internvl": "tiny_internvl"}
CACHE_ENV = "MRPRUNER_CACHE"  # where the tiny model is saved (default ~/.cache/mrpruner)
_HASH_WHOLE = 200 * 2**20  # bytes: checkpoints up to this size are hashed whole
_NOT_WEIGHTS = {"metrics.json", "recipe.json"}  # a model card's measurements and training settings
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
FORMS = (f"{MINI!r} (the miniature trained here; 'mini-seed1', 'mini-seed2': its other seeds; 'mini-heldout': "
         f"one more, held out; 'mini-tiles', 'mini-tiles-seed2': the second task's), {TINY!r} (a random tiny LLaVA-NeXT, for smoke tests; "
         "'tiny-onevision', 'tiny-internvl': a random tiny LLaVA-OneVision, InternVL), a local "
         "folder holding config.json, or a hub id 'owner/name'")


def miniature(name: str) -> bool:
    """Whether `name` names one of the committed miniatures (`mrpruner.mini.RECIPES`)."""
    from mrpruner.mini import RECIPES

    return name in RECIPES


def check_model(name: object, argument: str = "model") -> str:
    """`name` if it is one of the accepted forms (module docstring), else a ValueError naming
    `argument` and the forms. A folder must exist; a hub id is only checked for its shape."""
    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument} must be {FORMS}; got {name!r}")
    if name in TINY_MODELS or miniature(name) or (Path(name) / "config.json").is_file():
        return name
    if Path(name).exists():
        raise ValueError(f"{argument}: the folder {name!r} holds no config.json; {argument} must be {FORMS}")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ValueError(f"{argument} must be {FORMS}; got {name!r} (no such folder, and not a hub id)")
    return name


def check_models(names: object, argument: str = "model") -> list[str]:
    """`names` as a list: one model name (`check_model`) or a non-empty list of distinct ones (a
    sweep's model axis, e.g. the miniatures trained alike with other seeds); else a ValueError
    naming `argument`."""
    if isinstance(names, (str, Path)):
        return [check_model(names, argument)]
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{argument} must be one model name or a non-empty list of them, each {FORMS}; "
                         f"got {names!r}")
    checked = [check_model(name, argument) for name in names]
    if len(set(checked)) < len(checked):
        raise ValueError(f"{argument}: each model may be named once; got {names!r}")
    return checked


def resolve(name: str, argument: str = "model") -> str:
    """What transformers' `from_pretrained` loads for `name`: a miniature's or the saved tiny
    model's folder, a folder as given, or the hub id."""
    name = check_model(name, argument)
    if miniature(name):
        from mrpruner.mini import checkpoint

        return str(checkpoint(name))
    if name in TINY_MODELS:
        return str(tiny_checkpoint(name=name))
    return name


def load(name: str | Path, device: str = "cpu"):
    """(model, processor) by any name `check_model` accepts, in eval mode on `device`: the one loader
    of the chapters, the miniatures' cards and the tests (the lmms-eval model loads through lmms-eval's
    own `__init__`). A tiny model is built by `mrpruner.testing` (random, seed 0, float32); a committed
    miniature loads in float32, as it was trained; a folder or hub id of a LLaVA-NeXT, LLaVA-OneVision
    or InternVL loads by the class its config names, float16 on CUDA, float32 on the CPU."""
    name = check_model(name, "name")
    if name in TINY_MODELS:
        from mrpruner import testing

        net, processor = getattr(testing, TINY_MODELS[name])()
        return net.to(device), processor
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    from mrpruner.hosts import host_of

    check_cached(name, "name")
    folder = resolve(name, "name")
    if miniature(name) and not (Path(folder) / "model.safetensors").is_file():
        from mrpruner.mini import train_command

        raise FileNotFoundError(f"no miniature checkpoint: {Path(folder) / 'model.safetensors'} is missing; "
                                f"train it with: {train_command(name)}")
    dtype = torch.float16 if torch.device(device).type == "cuda" and not miniature(name) else torch.float32
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebooks
    try:
        net = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(device).eval()
    finally:
        hf_logging.enable_progress_bar()
    host_of(net)  # a family `mrpruner.patch` drives, else a TypeError naming them
    return net, AutoProcessor.from_pretrained(folder)


def check_cached(name: str, argument: str = "model") -> None:
    """When the hub is offline (HF_HUB_OFFLINE) and `name` is a hub id, a FileNotFoundError unless
    its checkpoint is in the local cache, saying how to get it there; local models pass."""
    from huggingface_hub import constants, try_to_load_from_cache

    name = check_model(name, argument)
    if name in TINY_MODELS or miniature(name) or Path(name).is_dir() or not constants.HF_HUB_OFFLINE:
        return
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise FileNotFoundError(
            f"{argument} {name!r} is not in the local cache ({constants.HF_HUB_CACHE}) and the hub is offline "
            f"(HF_HUB_OFFLINE=1): run `huggingface-cli download {name}` on a machine with internet, with the same "
            "HF_HOME (or copy its cache folder here), or unset HF_HUB_OFFLINE")


def cache_dir() -> Path:
    """mrpruner's cache folder: $MRPRUNER_CACHE, else ~/.cache/mrpruner."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mrpruner")


def tiny_checkpoint(folder: str | Path | None = None, name: str = TINY) -> Path:
    """The random tiny model `name` (one of TINY_MODELS: its `mrpruner.testing` builder, seed 0) saved
    like a hub checkpoint under `folder` (default: the cache), written once and whole."""
    from transformers.utils import logging as hf_logging

    from mrpruner import testing

    if name not in TINY_MODELS:
        raise ValueError(f"name must be one of {tuple(TINY_MODELS)}, got {name!r}")
    build = getattr(testing, TINY_MODELS[name])
    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / f"{build.__name__.replace('_', '-')}-seed0"
    if (target / "config.json").is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder, prefix=".tiny-"))
    hf_logging.disable_progress_bar()
    try:
        net, processor = build()
        net.save_pretrained(partial)
        processor.save_pretrained(partial)
        try:
            os.replace(partial, target)
        except OSError:  # another process saved it first
            if not (target / "config.json").is_file():
                raise
    finally:
        hf_logging.enable_progress_bar()
        shutil.rmtree(partial, ignore_errors=True)
    return target


def fingerprint(name: str) -> str:
    """A hash of the weights and configuration behind `name` for a local model ("mini", "tiny", a
    folder); for a hub id, the id itself (its commit is recorded in each cell's provenance)."""
    path = Path(resolve(name))
    if not path.is_dir():
        return f"hub:{name}"
    digest = hashlib.sha256()
    files = sorted(p for p in path.glob("*.json") if p.name not in _NOT_WEIGHTS) + sorted(path.glob("*.safetensors"))
    whole = sum(p.stat().st_size for p in files) <= _HASH_WHOLE
    for file in files:  # a large checkpoint: its configs whole, its weights by name, size and time
        content = file.read_bytes() if whole or file.suffix == ".json" else f"{file.stat().st_size}:{file.stat().st_mtime_ns}".encode()
        digest.update(file.name.encode() + b"\0" + content)
    return digest.hexdigest()
