"""mrpruner: MR-Pruner (WACV 2026) and its baselines as tensor functions, plus a one-call
plug-in for LLaVA-NeXT in Hugging Face transformers."""

from mrpruner.baselines import Merge, gprune, l2_select, random_select, tome_merge
from mrpruner.core import MROptions, Selection, Trace, explain, mr_prune, mr_prune_batched
from mrpruner.methods import register_method
from mrpruner.patch import patch, pruned, stats, unpatch

__version__ = "0.1.0"

__all__ = [
    "MROptions",
    "Merge",
    "Selection",
    "Trace",
    "explain",
    "gprune",
    "l2_select",
    "mr_prune",
    "mr_prune_batched",
    "patch",
    "pruned",
    "random_select",
    "register_method",
    "stats",
    "tome_merge",
    "unpatch",
]
