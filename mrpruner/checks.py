"""Argument checks shared by the public functions: each error names the argument and what is allowed."""

from __future__ import annotations

import math
import operator
from fractions import Fraction
from numbers import Real

import torch

VARIANTS = ("paper", "released")
PROTOCOLS = ("exact", "paper")  # the budgets of mrpruner.patch: one for all methods, or each as its authors ran it
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_tokens(name: str, x: object, min_tokens: int = 1) -> torch.Tensor:
    """A finite, floating (N, d) feature tensor of at least `min_tokens` tokens (and d >= 1)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, d), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (float32/float16/bfloat16), got {x.dtype}")
    if x.shape[0] < min_tokens or x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least {min_tokens} token(s) of at least one feature, "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        return x
    lowest, highest = torch.aminmax(x)  # NaN and +-inf surface here, in one cheap pass
    if not bool(torch.isfinite(lowest) & torch.isfinite(highest)):
        raise ValueError(f"{name} holds non-finite values (inf or nan)")
    return x


def check_count(name: str, value: object, low: int, high: int) -> int:
    """An integer (not a bool) in [low, high]."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer in [{low}, {high}], got a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer in [{low}, {high}], got {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_real(name: str, value: object, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def check_ratio(ratio: object, name: str = "ratio") -> Fraction:
    """A pruning ratio in [0, 1) (the fraction of visual tokens pruned), read as the decimal it
    prints as (0.29 -> 29/100) so that budgets do not depend on binary rounding."""
    if isinstance(ratio, bool) or not isinstance(ratio, (Real, Fraction)) or not math.isfinite(ratio):
        raise TypeError(f"{name} must be a real number in [0, 1), got {ratio!r}")
    if not 0 <= ratio < 1:
        raise ValueError(f"{name} must be in [0, 1) (the fraction of visual tokens pruned), got {ratio}")
    return Fraction(str(ratio))


def check_flag(name: str, value: object) -> bool:
    """A bool (not merely truthy: 0, 1 or "yes" are errors, so a misplaced argument is caught)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_variant(variant: object) -> str:
    """One of VARIANTS: MR-Pruner as the paper writes it or as the authors' released code computes it."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant  # type: ignore[return-value]


def check_protocol(protocol: object) -> str:
    """One of PROTOCOLS: every method on the same budget ("exact"), or each on its authors' ("paper")."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol  # type: ignore[return-value]


def check_device(device: object) -> torch.device:
    """'cpu' or 'cuda' (optionally 'cuda:N'), the latter only where torch sees a CUDA GPU."""
    allowed = "device must be a torch device: 'cpu' or 'cuda' (optionally 'cuda:N')"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{allowed}, got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{allowed}, got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asks for a CUDA GPU, but this machine has none "
                         "(torch.cuda.is_available() is False): use 'cpu' or run on a GPU machine")
    return device


def check_dtype(dtype: object) -> torch.dtype:
    """The torch dtype of a name in DTYPES (the command lines' --dtype)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
