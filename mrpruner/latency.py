"""Prefill latency of a pruned LLaVA-NeXT per method and pruning ratio: the time of one prefill as
generate() runs it (vision tower, projector, selection, the language model over the prompt, the
last position's logits), the selection's share of it and the speed-up over Random at the same ratio.

    python -m mrpruner.latency [--model 8b|tiny] [--device cuda] [--dtype bfloat16] [--image rocket]
                               [--methods random tome fastv gprune mrpruner] [--ratios 0 0.5 0.7 0.9 0.95]
                               [--repeats 10] [--out latency.json]

`--model 8b` builds random weights of llama3-llava-next-8b's real size on the device
(`testing.real_size_llava_next`): dense kernels take the same time whatever the weights, but the
selections see features that mean nothing, so which tokens they keep says nothing. `tiny` is the
test model. Both need `pip install 'mrpruner[bench]'`. After one warm-up each, every cell (the
unpatched model, then each method and ratio) takes its turn in every repeat, so drifting clocks or
load from other processes hit all alike. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import mrpruner
from mrpruner.checks import DTYPES, check_count, check_device, check_dtype, check_ratio
from mrpruner.methods import METHODS, check_method
from mrpruner.flops import DecoderShape, prefill_flops
from mrpruner.seam import now

MODEL_NAMES = {"8b": "random weights of llama3-llava-next-8b's size", "tiny": "tiny random LLaVA-NeXT"}
MODELS = tuple(MODEL_NAMES)
RATIOS = (0.0, 0.5, 0.7, 0.9, 0.95)
UNPRUNED = "none"  # the unpatched model's row
QUESTION = "what is shown in this image ? please describe it in detail ."


def measure(model, inputs: dict, *, methods: Sequence[str] = METHODS, ratios: Sequence[float] = RATIOS,
            repeats: int = 10) -> list[dict]:
    """One row per cell, the unpatched model first ("none", ratio 0), then each method at each
    ratio: median, fastest and slowest prefill ms and every run's, median selection ms and its
    share of the median prefill, visual tokens before/after and prompt length before/after (FastV:
    from its layer K on), prefill FLOPs (mrpruner.flops), the speed-up (median prefill time of
    Random at the same ratio / this one's, None without a Random row) and that over the unpatched
    model, each with its range (`_low`, `_high`) over the runs' ratios paired round by round."""
    repeats = check_count("repeats", repeats, 1, 10**6)
    methods = [check_method(m) for m in methods]
    if not methods or not ratios:
        raise ValueError("methods and ratios must each name at least one value")
    for ratio in ratios:
        check_ratio(ratio)
    if len(inputs["input_ids"]) != 1:
        raise ValueError(f"inputs must hold one prompt (batch 1), got {len(inputs['input_ids'])}")
    cells = [(UNPRUNED, 0.0)] + [(method, float(ratio)) for method in methods for ratio in ratios]
    times: dict[tuple, list[tuple[float, float]]] = {cell: [] for cell in cells}
    last: dict[tuple, Any] = {}
    with torch.inference_mode():
        for round_ in range(repeats + 1):  # round 0 warms up
            for cell in cells:
                seconds, last[cell] = _prefill(model, inputs, *cell)
                if round_:
                    times[cell].append((seconds, 0.0 if last[cell] is None else last[cell].selection_seconds))
    rows = [_row(model, inputs, cell, times[cell], last[cell]) for cell in cells]
    random_rows = {row["ratio"]: row for row in rows if row["method"] == "random"}
    for row in rows:
        for name, reference in (("vs_random", random_rows.get(row["ratio"])), ("vs_unpruned", rows[0])):
            if reference is None:
                row[name] = row[f"{name}_low"] = row[f"{name}_high"] = None
                continue
            row[name], row[f"{name}_low"], row[f"{name}_high"] = paired_speedup(reference["prefill_runs_ms"],
                                                                                row["prefill_runs_ms"])
    return rows


def paired_speedup(reference_ms: Sequence[float], runs_ms: Sequence[float]) -> tuple[float, float, float]:
    """The speed-up of a cell over a reference from their runs paired round by round: the median,
    lowest and highest of reference / cell (so the median always lies within its range)."""
    paired = sorted(a / b for a, b in zip(reference_ms, runs_ms))
    return statistics.median(paired), paired[0], paired[-1]


MIN_REPEATS = 3  # runs a timing needs before the book compares it: its spread is shown beside it


def spread_table(result: dict, names: dict[str, str] | None = None) -> pd.DataFrame:
    """A `run`'s rows as the book compares them, each timing with its spread over the runs:
    prefill "median [fastest, slowest]" ms and each speed-up "median [lowest, highest]" of the
    ratios taken round by round. A ValueError when it has fewer than MIN_REPEATS runs."""
    repeats = result["settings"]["repeats"]
    if repeats < MIN_REPEATS or "prefill_runs_ms" not in result["rows"][0]:
        raise ValueError(f"the latency result has {repeats} run(s) per cell and no per-run times: comparing timings "
                         f"needs their spread over at least {MIN_REPEATS}; time again with --repeats {MIN_REPEATS}")
    rows = pd.DataFrame(result["rows"])
    by_cell = {(m, r): runs for m, r, runs in zip(rows["method"], rows["ratio"], rows["prefill_runs_ms"])}
    for name, reference in (("vs_random", lambda r: by_cell.get(("random", r))), ("vs_unpruned", lambda r: rows["prefill_runs_ms"][0])):
        found = [None if reference(r) is None else paired_speedup(reference(r), runs)
                 for r, runs in zip(rows["ratio"], rows["prefill_runs_ms"])]
        for i, part in enumerate((name, f"{name}_low", f"{name}_high")):  # files timed before the median was paired
            rows[part] = [None if f is None else f[i] for f in found]
    if names:
        rows["method"] = rows["method"].map(lambda m: names.get(m, m))

    def ranged(median, low, high, unit: str = "") -> list[str]:  # three significant digits, at least 2 decimals
        def shown(x: float) -> str:
            return f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}" if x and abs(x) >= 10 else f"{x:.2f}"

        return ["" if pd.isna(m) else f"{shown(m)}{unit} [{shown(lo)}, {shown(hi)}]"
                for m, lo, hi in zip(median, low, high)]

    return pd.DataFrame({
        "visual tokens kept": rows["visual_after"].to_numpy(),
        f"prefill ms: median [fastest, slowest] of {repeats} runs": ranged(rows["prefill_ms"], rows["prefill_min_ms"], rows["prefill_max_ms"]),
        "selection share (%)": (100 * rows["selection_share"]).round(1).to_numpy(),
        "speed-up vs Random: median [range]": ranged(rows["vs_random"], rows["vs_random_low"], rows["vs_random_high"], "x"),
        "speed-up vs unpruned: median [range]": ranged(rows["vs_unpruned"], rows["vs_unpruned_low"],
                                               rows["vs_unpruned_high"], "x"),
    }, index=pd.MultiIndex.from_frame(rows[["method", "ratio"]]))


def run(*, model: str = "8b", device: str = "cuda", dtype: str = "bfloat16", image: str = "rocket",
        question: str = QUESTION, methods: Sequence[str] = METHODS, ratios: Sequence[float] = RATIOS,
        repeats: int = 10, seed: int = 0, attn_implementation: str = "sdpa") -> dict:
    """Build the model (`model`: "8b" or "tiny") and one prompt with the scikit-image photo
    `image`, then `measure`: {"provenance": mrpruner.results.provenance, "settings": the model's
    size, attention, image and prompt, repeats, threads, "rows": measure's rows}."""
    from mrpruner import results, testing

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    torch_dtype = check_dtype(dtype)
    photos = testing.sample_images()
    if image not in photos:
        raise ValueError(f"image must be one of {sorted(photos)} (scikit-image's photos), got {image!r}")
    device = check_device(device)
    if model == "8b":
        net, processor = testing.real_size_llava_next(seed=seed, dtype=torch_dtype, device=device,
                                                      attn_implementation=attn_implementation)
    else:
        net, processor = testing.tiny_llava_next(seed=seed, dtype=torch_dtype,
                                                 attn_implementation=attn_implementation)
        net = net.to(device)
    inputs = testing.chat_inputs(processor, [([photos[image]], question)], device=device)
    rows = measure(net, inputs, methods=methods, ratios=ratios, repeats=repeats)
    settings = {"model": model, "parameters": sum(p.numel() for p in net.parameters()),
                "attn_implementation": attn_implementation, "image": image,
                "image_size": list(photos[image].size[::-1]), "prompt_tokens": inputs["input_ids"].shape[1],
                "repeats": repeats, "threads": torch.get_num_threads()}
    provenance = results.provenance(model=MODEL_NAMES[model], dtype=dtype, device=results.device_name(device),
                                    seed=seed, limit=None)
    return {"provenance": provenance, "settings": settings, "rows": rows}


def load_or_run(paths: Sequence[str], *, device: str = "cpu", repeats: int = MIN_REPEATS) -> tuple[dict, str]:
    """The first of `paths` that is a saved `run` with at least MIN_REPEATS runs per cell, else a
    `run` of the tiny model on `device` in float32 with `repeats` runs: (result, where it came
    from, for a caption; a file passed over for too few runs is named there)."""
    from mrpruner.results import read_json

    passed = []
    for path in (p for p in paths if p and Path(p).is_file()):
        result = read_json(path)
        runs = result.get("settings", {}).get("repeats", 0)
        if runs >= MIN_REPEATS and "prefill_runs_ms" in (result.get("rows") or [{}])[0]:
            return result, f"from `{path}`"
        passed.append(f"`{path}` has {runs} run(s) per cell, fewer than {MIN_REPEATS}")
    missing = [f"no `{p}`" for p in paths if p and not Path(p).is_file()]
    reasons = "; ".join(missing + passed)
    return run(model="tiny", device=device, dtype="float32", repeats=repeats), (
        f"run in this build ({reasons})" if reasons else "run in this build")


def label(result: dict) -> str:
    """One line saying where the times of a `run` come from, for tables and the book."""
    from mrpruner.results import commit_words

    p, s = result["provenance"], result["settings"]
    commit = commit_words(p["git"]["commit"], p["git"]["dirty"])
    size = f"{s['parameters'] / 1e9:.2f}B" if s["parameters"] >= 1e9 else f"{s['parameters'] / 1e6:.2f}M"
    return (f"measured here: {p['model']} ({size} parameters, {p['dtype']}, "
            f"{s['attn_implementation']}) on {p['device']} with {s['threads']} CPU threads; one prefill of the "
            f"{s['image']} photo ({s['image_size'][0]}x{s['image_size'][1]}, {s['prompt_tokens']} prompt tokens), "
            f"median of {s['repeats']} runs after a warm-up, [range] over the runs; torch {p['versions']['torch']}, transformers "
            f"{p['versions']['transformers']}, mrpruner ({commit}); {p['date']}")


def format_table(result: dict) -> str:
    """The result of `run` as a plain-text table under its `label`."""
    header = (f"{'method':<10}{'ratio':>6}{'visual':>13} {'prefill ms':>11} {'min ms':>10} {'max ms':>10}"
              f"{'select ms':>10}{'share':>8}{'vs random':>11}{'vs none [range]':>22}")
    lines = [label(result), header]
    for r in result["rows"]:
        vs_random = "" if r["vs_random"] is None else f"{r['vs_random']:.2f}x"
        vs_none = f"{r['vs_unpruned']:.2f}x [{r['vs_unpruned_low']:.2f}, {r['vs_unpruned_high']:.2f}]"
        lines.append(f"{r['method']:<10}{r['ratio']:>6.2f}{r['visual_before']:>6}->{r['visual_after']:<5}"
                     f" {r['prefill_ms']:>11.2f} {r['prefill_min_ms']:>10.2f} {r['prefill_max_ms']:>10.2f}"
                     f"{r['selection_ms']:>10.2f}{100 * r['selection_share']:>7.1f}%{vs_random:>11}{vs_none:>22}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrpruner.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="8b", choices=MODELS)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES))
    parser.add_argument("--image", default="rocket", help="a scikit-image photo (mrpruner.testing.sample_images)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    parser.add_argument("--out", help="also write the result as JSON to this file (whole or not at all)")
    args = parser.parse_args(argv)
    result = run(model=args.model, device=args.device, dtype=args.dtype, image=args.image, methods=args.methods,
                 ratios=args.ratios, repeats=args.repeats, attn_implementation=args.attn)
    if args.out:
        from mrpruner.results import atomic_write_json

        atomic_write_json(args.out, result)
    print(format_table(result))
    return 0


def _prefill(model, inputs: dict, method: str, ratio: float):
    """(seconds, stats) of one prefill with `method` patched at `ratio` (stats None unpatched)."""
    if method != UNPRUNED:
        mrpruner.patch(model, method, ratio)
    try:
        start = now(model.device)
        model(**inputs, use_cache=True, logits_to_keep=1)
        seconds = now(model.device) - start
        return seconds, None if method == UNPRUNED else mrpruner.stats(model)
    finally:
        if method != UNPRUNED:
            mrpruner.unpatch(model)


def _row(model, inputs: dict, cell: tuple[str, float], times: list[tuple[float, float]], stats) -> dict:
    """One cell's row of `measure` (before the speed-ups)."""
    method, ratio = cell
    prefill = [t for t, _ in times]
    selection = statistics.median(s for _, s in times)
    if stats is None:
        visual = int((inputs["input_ids"] == model.config.image_token_id).sum())
        length = int(inputs["attention_mask"].sum())
        before = after = (visual, length)
        flops = prefill_flops(length, DecoderShape.from_config(model.config), lm_head=True)
    else:
        before, after = (stats.tokens_before, stats.lengths_before[0]), (stats.tokens_after, stats.lengths_after[0])
        flops = stats.prefill_flops[0]
    return {"method": method, "ratio": ratio, "visual_before": before[0], "visual_after": after[0],
            "length_before": before[1], "length_after": after[1], "prefill_ms": 1e3 * statistics.median(prefill),
            "prefill_min_ms": 1e3 * min(prefill), "prefill_max_ms": 1e3 * max(prefill),
            "prefill_runs_ms": [1e3 * t for t in prefill], "selection_ms": 1e3 * selection,
            "selection_share": selection / statistics.median(prefill), "prefill_tflops": flops / 1e12}


if __name__ == "__main__":
    sys.exit(main())
