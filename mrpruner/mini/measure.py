"""Measuring the miniature: accuracy per question kind with bootstrap intervals, the visual tokens
the language model received, and how much of each answer's region a pruning method kept."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from mrpruner.mini import data
from mrpruner.hosts.llava_next import region_tokens
from mrpruner.methods import resolution_only
from mrpruner.rule import interval
from mrpruner.seam import recall
from mrpruner.mini.train import encode

# Table 1's controls, as the sweeps label them and `evaluate` takes them for a method: one resolution
# only (`mrpruner.methods.resolution_only`), or every image blank (`blank`).
CONTROLS = ("base only", "grid only", "blank images")


def evaluate(model, processor, samples: Sequence[data.Sample], method: str | None = None, ratio: float = 0.0, *,
             batch: int = 32, bootstrap: int = 2000, seed: int = 0, **options) -> pd.DataFrame:
    """Accuracy of the miniature on `samples`, unpruned (method None), pruned by
    `mrpruner.patch(model, method, ratio, **options)`, or under a control (`CONTROLS`).

    Returns a DataFrame indexed by kind ("overview", "detail", "all") with columns n, accuracy,
    ci_low, ci_high (95% percentile bootstrap over the samples, `bootstrap` draws, seeded),
    kept_tokens (mean visual tokens per image the language model received; FastV: from its layer
    K on), tokens (before pruning), recall (mean share of the answer region's base and grid tokens
    that were kept), flops_reduction (1 - the language model's prefill FLOPs over the unpruned
    ones, `mrpruner.flops` as `mrpruner.stats` reports them) and doc_scores ({sample's position:
    1.0 if right else 0.0}, to compare two runs question by question). A model you patched yourself
    (`mrpruner.patch`) is measured as it runs: with method None its kept tokens and FLOPs are read
    from `mrpruner.stats`."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be a positive number of draws, got {bootstrap!r}")
    rows = predict(model, processor, samples, method, ratio, batch=batch, **options)
    return summarize(rows, bootstrap=bootstrap, seed=seed)


def predict(model, processor, samples: Sequence[data.Sample], method: str | None = None, ratio: float = 0.0, *,
            batch: int = 32, **options) -> pd.DataFrame:
    """One row per sample: kind, topic, answer, prediction (the greedy first word), correct,
    tokens, kept_tokens, recall, kept (the indices of the visual tokens the language model
    received), prefill_flops and dense_prefill_flops (see `evaluate`)."""
    from mrpruner.patch import pruned, stats

    _check_samples(samples)
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise TypeError(f"batch must be a positive integer (samples per forward pass), got {batch!r}")
    if batch < 1:
        raise ValueError(f"batch must be a positive integer (samples per forward pass), got {batch!r}")
    if method in CONTROLS and (ratio or options):
        raise ValueError(f"method {method!r} takes no ratio or options (a control keeps what it keeps whole)")
    if method == "blank images":
        samples, method = blank(samples), None  # the unpruned model, on grey images
    patched = method is not None or _patched(model)
    if method in CONTROLS:
        context = pruned(model, resolution_only("low" if method == "base only" else "high"), 0.0)
    elif method is None:
        if ratio or options:
            raise ValueError("ratio and options need a method; method=None evaluates the unpruned model")
        context = contextlib.nullcontext()
    else:
        context = pruned(model, method, ratio, **options)
    rows = []
    with context, torch.no_grad():
        for at in range(0, len(samples), batch):
            chunk = list(samples[at:at + batch])
            inputs = encode(processor, chunk, with_answer=False)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
            words = processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
            counts = (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist()  # one image per row
            regions = list(zip(counts, region_tokens(model, processor, [s.image for s in chunk],
                                                     [s.region for s in chunk])))
            if not patched:
                kept = [torch.arange(tokens) for tokens, _ in regions]
                flops = [_dense_flops(model, int(n)) for n in inputs["attention_mask"].sum(1)]
            else:
                call = stats(model)
                kept = [image.kept for image in sorted(call.images, key=lambda image: image.row)]
                flops = list(zip(call.prefill_flops, call.dense_prefill_flops))
            for s, word, (tokens, region), keep, (pruned_flops, dense_flops) in zip(chunk, words, regions, kept, flops):
                rows.append({"kind": s.kind, "topic": s.topic, "answer": s.answer, "prediction": word,
                             "correct": word == s.answer, "tokens": tokens, "kept_tokens": len(keep),
                             "recall": recall(keep, region), "kept": [int(i) for i in keep], "prefill_flops": pruned_flops,
                             "dense_prefill_flops": dense_flops})
    return pd.DataFrame(rows)


def _check_samples(samples: object) -> None:
    """A TypeError/ValueError naming `samples` unless it is a non-empty sequence of `data.Sample`s."""
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of mrpruner.mini.Sample (mrpruner.mini.samples), got "
                        f"{type(samples).__name__}")
    if not samples:
        raise ValueError("samples must hold at least one mrpruner.mini.Sample, got an empty sequence")
    wrong = next((s for s in samples if not isinstance(s, data.Sample)), None)
    if wrong is not None:
        raise TypeError(f"samples must be a list of mrpruner.mini.Sample (mrpruner.mini.samples), got an element "
                        f"of type {type(wrong).__name__}: {wrong!r:.60}")


def _patched(model) -> bool:
    """Whether `model` is patched by mrpruner (`mrpruner.patch`)."""
    from mrpruner.patch import stats

    try:
        stats(model)
    except ValueError:
        return False
    return True


def summarize(rows: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`predict`'s rows as `evaluate`'s table (per kind and "all"); intervals as a sweep's
    (`mrpruner.rule.interval`)."""
    out = {}
    for kind in (*data.KINDS, "all"):
        part = rows if kind == "all" else rows[rows["kind"] == kind]
        if not len(part):
            continue
        correct = part["correct"].to_numpy(dtype=float)
        low, high = interval([correct], draws=bootstrap, seed=seed)
        out[kind] = {"n": len(part), "accuracy": correct.mean(), "ci_low": low, "ci_high": high,
                     "kept_tokens": part["kept_tokens"].mean(), "tokens": part["tokens"].mean(),
                     "recall": part["recall"].mean(), "flops_reduction": _flops_reduction(part),
                     "doc_scores": dict(zip(part.index.tolist(), correct.tolist()))}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("kind")


def _dense_flops(model, length: int) -> tuple[int, int]:
    from mrpruner.flops import DecoderShape, prefill_flops

    flops = prefill_flops(length, DecoderShape.from_config(model.config), lm_head=True)
    return flops, flops


def _flops_reduction(part: pd.DataFrame) -> float:
    if "prefill_flops" not in part or part["prefill_flops"].isna().any():
        return float("nan")
    return float(1 - part["prefill_flops"].sum() / part["dense_prefill_flops"].sum())


def blank(samples: Sequence[data.Sample], value: int = 128) -> list[data.Sample]:
    """The samples with every image replaced by a uniform grey one of the same size."""
    from PIL import Image

    return [s._replace(image=Image.new("RGB", s.image.size, (value,) * 3)) for s in samples]


def question_only(samples: Sequence[data.Sample], reference: Sequence[data.Sample]) -> pd.DataFrame:
    """The best guess from the question alone: each question answered with its most frequent answer
    in `reference` (e.g. training samples); accuracy per kind in `evaluate`'s form (no tokens)."""
    guess = pd.DataFrame([(s.question, s.answer) for s in reference], columns=["question", "answer"])
    best = guess.groupby("question")["answer"].agg(lambda a: a.value_counts().index[0]).to_dict()
    rows = pd.DataFrame([{"kind": s.kind, "correct": best.get(s.question) == s.answer, "tokens": 0,
                          "kept_tokens": 0, "recall": 0.0} for s in samples])
    return summarize(rows)


def premise(model, processor, samples: Sequence[data.Sample], reference: Sequence[data.Sample]) -> pd.DataFrame:
    """The checks of the model card (issue 11, item 4) as one table, conditions x kinds: all tokens,
    every image blank, the best guess from the question alone (answers counted in `reference`),
    the base tokens only (grid hidden), the grid only (base hidden) and a random 90% of the visual
    tokens pruned (what losing tokens blindly costs)."""
    parts = {"all tokens": evaluate(model, processor, samples),
             "blank images": evaluate(model, processor, samples, "blank images"),
             "question only": question_only(samples, reference),
             "base only": evaluate(model, processor, samples, "base only"),
             "grid only": evaluate(model, processor, samples, "grid only"),
             "random 90%": evaluate(model, processor, samples, "random", 0.9)}
    return pd.concat(parts, names=["condition"])


SLICE = 100  # the test slice whose answers the card records, re-checked by the test suite


def write_card_metrics(folder: str | Path, n: int | None = None) -> Path:
    """Measure the trained miniature in `folder` and write `folder/metrics.json`: `premise` on the
    test split of the task it was trained on (its recipe.json; first `n` samples; question-only
    guesses counted on 5,000 training samples) and
    the greedy answers to the first SLICE test samples. Returns the file's path."""
    from mrpruner.mini.task import TEST_SIZE
    from mrpruner.models import load
    from mrpruner.results import atomic_write_json, device_name, provenance

    n = TEST_SIZE if n is None else n
    model, processor = load(folder)
    task = json.loads((Path(folder) / "recipe.json").read_text())["task"]
    test = data.samples(n, data.SPLITS["test"], task=task)
    table = premise(model, processor, test, data.samples(5000, data.SPLITS["train"], task=task))
    answers = predict(model, processor, test[:SLICE])
    return atomic_write_json(Path(folder) / "metrics.json", {
        "task": task, "test_samples": n,
        "premise": {f"{c}/{k}": {col: float(v) for col, v in row.items()} for (c, k), row in table.iterrows()},
        "slice": {"samples": SLICE, "predictions": answers["prediction"].tolist(),
                  "accuracy": float(answers["correct"].mean())},
        "provenance": provenance(model=f"mrpruner.mini ({Path(folder).name})", dtype="float32",
                                 device=device_name(torch.device("cpu")), seed=data.SPLITS["test"], limit=n),
    })
