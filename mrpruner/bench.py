"""Selection benchmark: time per image of MR-Pruner and the baselines at LLaVA-NeXT-8B shapes, next
to the dense similarity products MR-Pruner cannot avoid.

    python -m mrpruner.bench [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--repeats N]
                             [--n-low 576] [--n-high 2304] [--dim 4096] [--keep-ratio 0.1]

Features are seeded random normals: the dense kernels' time does not depend on the values. The
reference ("dense products") is the float32 Gram matrix of the high-resolution tokens, that of the
low-resolution tokens and the low x pruned-high cross product (Eq. 1 and 8), on rows normalised
beforehand: the least any implementation of Algorithm 1 computes. Speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from fractions import Fraction

import torch

import mrpruner
from mrpruner.budget import keep_count
from mrpruner.checks import DTYPES, check_count, check_device, check_dtype, check_real
from mrpruner.graph import unit_rows
from mrpruner.seam import now

REFERENCE = "dense products"


def run(
    *,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 5,
    n_low: int = 576,
    n_high: int = 2304,
    dim: int = 4096,
    keep_ratio: float = 0.1,
    seed: int = 0,
) -> list[dict]:
    """Median and fastest time per image (ms; one warm-up call each, then `repeats` interleaved rounds)
    of each selection and of the dense products; one dict per row with the settings, and
    vs_products = median / the dense products' median.

    keep_ratio is the fraction of visual tokens kept: K = keep_count(n_low + n_high, 1 - keep_ratio)
    for mr_prune, l2_select, random_select and tome_merge; gprune runs on the two resolutions as two
    graphs, each keeping keep_ratio of its tokens (as G-Prune does on LLaVA-NeXT).
    """
    device = check_device(device)
    torch_dtype = check_dtype(dtype)
    repeats = check_count("repeats", repeats, 1, 10**6)
    n_low, n_high = check_count("n_low", n_low, 1, 10**6), check_count("n_high", n_high, 1, 10**6)
    dim = check_count("dim", dim, 1, 10**6)
    if check_real("keep_ratio", keep_ratio, 0.0, 1.0) == 0:
        raise ValueError("keep_ratio must be in (0, 1] (the fraction of visual tokens kept), got 0")
    pruning = 1 - Fraction(str(keep_ratio))
    keep = keep_count(n_low + n_high, pruning)

    generator = torch.Generator().manual_seed(seed)
    low, high = (torch.randn(n, dim, generator=generator).to(device, torch_dtype) for n in (n_low, n_high))
    tokens = torch.cat([low, high])
    kept_high = torch.zeros(n_high, dtype=torch.bool, device=device)
    kept_high[mrpruner.mr_prune(low, high, keep).high] = True  # P^H of the paper variant
    unit_low, unit_high = unit_rows(low), unit_rows(high)
    unit_pruned = unit_high[~kept_high]

    def products() -> None:
        for rows, columns in ((unit_high, unit_high), (unit_low, unit_low), (unit_low, unit_pruned)):
            torch.mm(rows, columns.T)

    def gprune_two_graphs() -> None:
        mrpruner.gprune(low, keep_count(n_low, pruning))
        mrpruner.gprune(high, keep_count(n_high, pruning))

    timed: dict[str, Callable[[], object]] = {
        "mr_prune paper": lambda: mrpruner.mr_prune(low, high, keep),
        "mr_prune released": lambda: mrpruner.mr_prune(low, high, keep, variant="released"),
        "gprune (2 graphs)": gprune_two_graphs,
        "l2_select": lambda: mrpruner.l2_select(tokens, keep),
        "random_select": lambda: mrpruner.random_select(len(tokens), keep, device=device),
        "tome_merge": lambda: mrpruner.tome_merge(tokens, keep),
        REFERENCE: products,
    }
    settings = {"device": str(device), "dtype": dtype, "n_low": n_low, "n_high": n_high, "dim": dim, "keep": keep,
                "repeats": repeats, "torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        times = _times(timed, repeats, device)
    reference = statistics.median(times[REFERENCE])
    return [{"name": name, "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t),
             "vs_products": statistics.median(t) / reference, **settings} for name, t in times.items()]


def format_table(rows: list[dict]) -> str:
    """The rows of `run` as a plain-text table, settings on top."""
    first = rows[0]
    lines = [(f"{first['device']}, {first['dtype']}, torch {first['torch']}, {first['threads']} threads; "
             f"N_l={first['n_low']}, N_h={first['n_high']}, d={first['dim']}, keep K={first['keep']}; "
             f"median of {first['repeats']} after a warm-up"),
             f"{'selection':<20}{'median ms':>11}{'min ms':>11}{'x products':>12}"]
    lines += [f"{r['name']:<20}{r['median_ms']:>11.2f}{r['min_ms']:>11.2f}{r['vs_products']:>12.2f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrpruner.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-low", type=int, default=576)
    parser.add_argument("--n-high", type=int, default=2304)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--keep-ratio", type=float, default=0.1)
    args = parser.parse_args(argv)
    rows = run(device=args.device, dtype=args.dtype, repeats=args.repeats, n_low=args.n_low,
               n_high=args.n_high, dim=args.dim, keep_ratio=args.keep_ratio)
    print(format_table(rows))
    return 0


def _times(timed: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function, each call bracketed by device synchronisation, after one
    warm-up call each; the functions take turns in every repeat, so a burst of load from other
    processes hits them alike rather than one of them."""
    for fn in timed.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(repeats):
        for name, fn in timed.items():
            start = now(device)
            fn()
            times[name].append(now(device) - start)
    return times


if __name__ == "__main__":
    sys.exit(main())
