"""A chapter's sweep: the same cells for any model and any tasks, run and read back
(`chapter_sweep`), in the long form the chapters' plots and tables take (`task_frame`), pooled over
models trained alike (`across_models`), and as tables and differences; the miniature's chance levels;
measured numbers beside the paper's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mrpruner import models, rule
from mrpruner.mini.task import TASK_NAMES as MINI_TASKS


UNPRUNED = "all tokens"  # the label of the unpruned model in the chapters' sweeps


# The question kind of each of the miniatures' lmms-eval tasks, as the chapters label it: the first
# task's kinds by their names ("overview", "detail"), the others' with their task ("detail (tiles)").
KIND_OF_TASK = {name: kind if task == "marks" else f"{kind} ({task})"
                for task, by_kind in MINI_TASKS.items() for kind, name in by_kind.items()}


def models_label(model: str | Sequence[str]) -> str:
    """The `model` parameter in words for a title: "mini", or "3 models (mini, mini-seed1, mini-seed2)"."""
    names = models.check_models(model)
    return names[0] if len(names) == 1 else f"{len(names)} models ({', '.join(names)})"


def trained_alike(model: str) -> list[str]:
    """`model` and, for a committed miniature, the other committed miniatures of its task (one
    recipe, other seeds: `mrpruner.mini.models`), `model` first; any other model alone."""
    models.check_model(model)
    if not models.miniature(model):
        return [model]
    from mrpruner.mini import RECIPES
    from mrpruner.mini import models as of_task

    return [model, *(name for name in of_task(RECIPES[model][0]) if name != model)]


def results_folder(sweep: str, model: str) -> Path:
    """Where a chapter keeps its sweep `sweep` (a shipped sweep's name, or a YAML file's) run on
    `model`: results/<model>/<table>, e.g. results/mini/table1 (committed) or
    results/llava-hf--llama3-llava-next-8b-hf/table1."""
    name = Path(model).name if Path(model).is_dir() else model.replace("/", "--")
    return Path("results") / name / Path(sweep).stem.removeprefix("mini_")


def tiny_task(folder: str | Path) -> Path:
    """The tiny offline lmms-eval task written into `folder`/tasks (for a chapter's "tiny" task)."""
    from mrpruner.benchmarks import write_tiny_task

    return write_tiny_task(Path(folder).resolve() / "tasks")


def chapter_sweep(sweep: str, *, model: str | Sequence[str], tasks: Sequence[str], device: str,
                  limit: int | None = None, results_dir: str | Path | None = None, recompute: bool = True,
                  include_path: str | Path | None = None) -> pd.DataFrame:
    """A chapter's measurements: the grid of the shipped sweep `sweep` (its methods, options,
    ratios and protocol) on `model` and `tasks`, `limit` documents each, run into `results_dir`
    (default `results_folder`) with `mrpruner.sweep.run.run_sweep` (missing and stale cells only;
    on the CPU in this process, float32; on CUDA one lmms-eval process per cell, float16), then
    read back with `mrpruner.results.load_results`. With recompute=False the folder is only read.
    Tasks: mrpruner's own and lmms-eval's are found by name, others in `include_path`; "tiny" is
    the offline tiny task. A failed cell is an error naming its lmms-eval log. `model` may list
    several models (the grid's model axis): each runs into its own `results_folder` and their rows
    come one model after another (the `model` column tells them apart)."""
    from mrpruner import results
    from mrpruner.sweep.grid import grid_from_config, load_config
    from mrpruner.sweep.run import run_sweep
    from mrpruner.benchmarks import TINY, task_name

    names = models.check_models(model)
    if len(names) > 1:
        if results_dir is not None:
            raise ValueError(f"results_dir must be None with several models (each has its own folder "
                             f"results/<model>/<table>); got {results_dir!r} for {names}")
        frames = [chapter_sweep(sweep, model=name, tasks=tasks, device=device, limit=limit, recompute=recompute,
                                include_path=include_path) for name in names]
        frame = pd.concat(frames, ignore_index=True)
        frame.attrs["folder"] = ", ".join(f.attrs["folder"] for f in frames)
        return frame
    model = names[0]
    out = Path(results_dir) if results_dir is not None else results_folder(sweep, model)
    cpu = torch.device(device).type == "cpu"
    config = {**load_config(sweep), "model": model, "tasks": list(tasks), "limit": limit,
              "device": device, "dtype": "float32" if cpu else "float16",
              "runner": "in-process" if cpu else "lmms-eval"}
    if TINY.task in {task_name(t) for t in tasks}:
        if include_path is not None:
            raise ValueError("tasks: the offline task 'tiny' brings its own folder; give include_path=None")
        include_path = tiny_task(out.parent / "tiny-assets")
    if include_path is not None:
        config["include_path"] = str(include_path)
    grid = grid_from_config(config)
    if recompute:
        report = run_sweep(grid, out, progress=False)
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} sweep cell(s) failed; their lmms-eval logs are in "
                               f"{out / 'logs'}: {report.failed}")
    elif not (out / results.GRID_FILE).is_file():
        raise FileNotFoundError(f"results_dir {out} holds no results and recompute is False")
    frame = results.load_results(out)
    if frame["stale"].any():  # only without recompute: a sweep runs stale cells again
        raise ValueError(f"results_dir {out} holds {int(frame['stale'].sum())} stale cell(s) (measured by other code "
                         f"or weights): run with recompute=True to measure them again, e.g. {frame['file'][frame['stale']].iloc[0]}")
    frame.attrs["folder"] = str(out)
    return frame


def load_saved(folder: str | Path) -> pd.DataFrame | None:
    """A saved results folder (`mrpruner.results.load_results`), or None where nobody has
    measured it yet (no grid.json)."""
    from mrpruner.results import GRID_FILE, load_results

    return load_results(folder) if Path(folder, GRID_FILE).is_file() else None


def task_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`chapter_sweep`'s rows in the long form the chapters' plots and tables take: model, label,
    method, ratio, `kind` (the question kind for the miniature's tasks, else the benchmark), `accuracy`
    (the task's score: accuracy on the miniature), ci_low, ci_high, recall, kept_tokens (per
    image), flops_reduction, n (documents) and doc_scores (each document's score, for pooling
    over models); attrs["provenance"] names where it was measured."""
    out = pd.DataFrame({
        "model": frame["model"], "label": frame["label"], "method": frame["method"], "options": frame["options"],
        "ratio": frame["ratio"], "kind": [KIND_OF_TASK.get(t, b) for t, b in zip(frame["task"], frame["benchmark"])],
        "accuracy": frame["score"], "ci_low": frame["ci_low"], "ci_high": frame["ci_high"],
        "recall": frame["recall"], "kept_tokens": frame["image_kept_tokens"],
        "tokens": frame["image_visual_tokens"], "flops_reduction": frame["flops_reduction"],
        "n": frame["samples"], "doc_scores": frame["doc_scores"]})
    from mrpruner.results import sources

    out = out.reset_index(drop=True)
    out.attrs["provenance"] = sources(frame) if len(frame) else "not measured"
    return out


def across_models(frame: pd.DataFrame) -> pd.DataFrame:
    """A `task_frame` of one or more models as one row per (label, ratio, kind), in its order:
    `accuracy` the mean over the models, ci_low/ci_high its 95% interval over the models and their
    questions (`mrpruner.rule.interval`: a two-level bootstrap, so it speaks of other training runs
    too; one model's own interval when there is one), `model_low`/`model_high` the lowest and
    highest model's score, `models` their number; recall, token counts and FLOPs reduction averaged."""
    keys = ["label", "method", "options", "ratio", "kind"]
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        row = {**dict(zip(keys, key)), "accuracy": group["accuracy"].mean(),
               "model_low": group["accuracy"].min(), "model_high": group["accuracy"].max(), "models": len(group),
               **{c: group[c].mean() for c in ("recall", "kept_tokens", "tokens", "flops_reduction")},
               "n": int(group["n"].sum())}
        scores = [s for s in group.get("doc_scores", [None] * len(group)) if isinstance(s, Mapping) and s]
        if len(group) == 1 or len(scores) < len(group):
            row["ci_low"], row["ci_high"] = ((group["ci_low"].iloc[0], group["ci_high"].iloc[0]) if len(group) == 1
                                             else (np.nan, np.nan))
        else:
            row["ci_low"], row["ci_high"] = rule.interval([list(s.values()) for s in scores])
        rows.append(row)
    columns = [*keys, "accuracy", "ci_low", "ci_high", "model_low", "model_high", "models", "recall", "kept_tokens",
               "tokens", "flops_reduction", "n"]
    out = pd.DataFrame(rows, columns=columns)
    out.attrs = dict(frame.attrs)
    return out


def model_count(frame: pd.DataFrame) -> int:
    """How many models a `task_frame` (or `across_models`' frame) holds."""
    if "models" in frame:
        return int(frame["models"].max())
    return int(frame["model"].nunique()) if "model" in frame else 1


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as one row per (label, ratio, kind): `across_models` when it holds several models,
    else as it is."""
    return across_models(frame) if "models" not in frame and model_count(frame) > 1 else frame


def score_table(frame: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """One row per (label, ratio) of a `task_frame` (or of `across_models`' frame), in the sweep's
    order; per kind its score in the book's notation, "mean [95% interval]" (`mrpruner.rule`: with
    several models, the interval over the models and their questions), with several models a
    column "models" per kind with each model's score, and, where the task gives answer regions,
    the recall of the answer's tokens."""
    several = model_count(frame) > 1
    per_model = frame.pivot_table(index=["label", "ratio", "kind"], columns="model", values="accuracy", sort=False) \
        if several and "model" in frame else None
    frame = pooled(frame)
    keyed = frame.assign(shown=frame.apply(_with_interval, axis=1, digits=digits))
    kinds = list(dict.fromkeys(keyed["kind"]))
    table = keyed.pivot_table(index=["label", "ratio"], columns="kind", values="shown", aggfunc="first", sort=False)
    parts = [table[kinds].add_prefix("score: ")]
    if per_model is not None:
        each = per_model.apply(lambda row: "\u00a0".join(f"{v:.{digits}f}" for v in row.dropna()), axis=1)
        wide = each.rename("each").reset_index().pivot_table(index=["label", "ratio"], columns="kind", values="each",
                                                            aggfunc="first", sort=False)
        parts.append(wide[[k for k in kinds if k in wide]].add_prefix("each model: "))
    recall = keyed.dropna(subset=["recall"])
    if len(recall):
        wide = recall.pivot_table(index=["label", "ratio"], columns="kind", values="recall", aggfunc="first",
                                  sort=False)
        parts.append(wide[[k for k in kinds if k in wide]].round(digits).add_prefix("recall: "))
    return pd.concat(parts, axis=1).reindex(table.index)


def shown(frame: pd.DataFrame, label: str, ratio: float, kind: str, *, digits: int = 2) -> str:
    """One cell of a `task_frame` (or a `pooled` one) in the book's notation: "0.86 [0.82, 0.90]"
    (score and 95% interval), or "not measured"."""
    rows = frame[(frame["label"] == label) & np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind)]
    if rows.empty:
        return "not measured"
    return _with_interval(rows.iloc[0], digits)


def _with_interval(row, digits: int) -> str:
    """A `task_frame` row's score with its 95% interval where it has one, on one line."""
    return rule.shown(row.accuracy, row.ci_low, row.ci_high, digits)


def evaluated(table: pd.DataFrame, label: str, method: str | None, ratio: float, model: str = "mini") -> pd.DataFrame:
    """`mrpruner.mini.measure.evaluate`'s table (per question kind) as `task_frame` rows of `model` under
    `label`, to stand beside a sweep's (its "all" row left out: a sweep scores each task alone);
    its per-question scores keyed by the sample's position, so two methods evaluated on the same
    samples are compared question by question."""
    rows = table.drop(index="all", errors="ignore").reset_index()
    return pd.DataFrame({"model": model, "label": label, "method": method, "options": "{}", "ratio": ratio,
                         "kind": rows["kind"], "accuracy": rows["accuracy"], "ci_low": rows["ci_low"],
                         "ci_high": rows["ci_high"], "recall": rows["recall"], "kept_tokens": rows["kept_tokens"],
                         "tokens": rows["tokens"], "flops_reduction": rows["flops_reduction"], "n": rows["n"],
                         "doc_scores": rows["doc_scores"] if "doc_scores" in rows else None})


def difference(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row of a `task_frame` minus the unpruned model's score on the same kind (of the same
    model), in points (x100), with the interval and the per-document scores shifted alike (the
    unpruned model's own sampling error is not added); the unpruned rows are left out."""
    keys = ["model", "kind"] if "model" in frame else ["kind"]
    base = frame[frame["label"] == UNPRUNED].set_index(keys)["accuracy"].rename("unpruned")
    out = frame[frame["label"] != UNPRUNED].copy()
    shift = out.join(base, on=keys)["unpruned"]
    for column in ("accuracy", "ci_low", "ci_high"):
        out[column] = 100 * (out[column] - shift)
    if "doc_scores" in out:
        out["doc_scores"] = [None if scores is None else {d: 100 * (v - s) for d, v in scores.items()}
                             for scores, s in zip(out["doc_scores"], shift)]
    out.attrs = frame.attrs
    return out


def complementarity(frame: pd.DataFrame, low: str = "base only", high: str = "grid only") -> pd.DataFrame:
    """Fig. 2b's question, per document: from the per-document scores of a `chapter_sweep` frame's
    rows `low` (the base image's tokens only) and `high` (the grid's only), per task (its kind for
    the miniature's) and, with more than one task, over all their documents ("all"), the share of
    documents that only the low-resolution run answers ("low resolution only"), only the
    high-resolution run ("high resolution only"), both, neither (answered: any credit, score > 0)
    and their number ("documents"); a frame of several models pools their documents."""
    answered: dict[str, pd.DataFrame] = {}
    part = frame[frame["label"].isin([low, high])]
    model = part["model"] if "model" in part else pd.Series("", index=part.index)
    for (_, task), group in part.groupby([model, part["task"]], sort=False):
        by_label = group.set_index("label")["doc_scores"]
        if low not in by_label or high not in by_label or by_label[low] is None or by_label[high] is None:
            continue
        scores = pd.DataFrame({"low": pd.Series(by_label[low]), "high": pd.Series(by_label[high])}).dropna() > 0
        kind = KIND_OF_TASK.get(task, group["benchmark"].iloc[0])
        answered[kind] = pd.concat([answered[kind], scores], ignore_index=True) if kind in answered else scores
    if len(answered) > 1:
        answered["all"] = pd.concat(answered.values(), ignore_index=True)
    rows = {kind: {"low resolution only": (s["low"] & ~s["high"]).mean(),
                   "high resolution only": (s["high"] & ~s["low"]).mean(), "both": (s["low"] & s["high"]).mean(),
                   "neither": (~s["low"] & ~s["high"]).mean(), "documents": len(s)} for kind, s in answered.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("kind")


def chance(kind: str) -> float:
    """The miniature's accuracy of guessing uniformly among each topic's answers, averaged over a
    question kind's topics: `kind` as the chapters label it (KIND_OF_TASK's values), or "all" (the
    first task's two kinds, which its test split asks equally often)."""
    from mrpruner.mini.data import ANSWERS, KINDS, topics

    if kind == "all":
        return float(np.mean([chance(k) for k in KINDS]))
    labels = {KIND_OF_TASK[name]: (task, k) for task, by_kind in MINI_TASKS.items() for k, name in by_kind.items()}
    if kind not in labels:
        raise ValueError(f"kind must be one of {(*labels, 'all')}, got {kind!r}")
    return float(np.mean([1 / len(ANSWERS[t]) for t in topics(*labels[kind])]))


def chance_levels(kinds: Iterable[str]) -> dict[str, float]:
    """`chance` of each of `kinds` that is a question kind of the miniature's tasks (other tasks
    have no chance level here)."""
    return {kind: chance(kind) for kind in kinds if kind in KIND_OF_TASK.values()}


def tokens_beside_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method (label), protocol and ratio of a `mrpruner.results.load_results` frame: the
    visual tokens per image the language model actually received (mean over the cells' images)
    beside each benchmark's score (with several models, the mean over them)."""
    weights = frame["samples"] * frame["image_kept_tokens"]
    keys = ["label", "protocol", "ratio"]
    received = (weights.groupby([frame[k] for k in keys]).sum() / frame.groupby(keys)["samples"].sum())
    scores = frame.pivot_table(index=keys, columns="benchmark", values="score", aggfunc="mean")
    return pd.concat([received.rename("visual tokens per image"), scores], axis=1)


def paper_measurements(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Measured numbers to put beside the paper's (`mrpruner.paper.compare`): the cells of the
    paper's eight benchmarks from `mrpruner.results.load_results` frames, in the long form of
    `mrpruner.results.paper_frame` (throughput pooled over those benchmarks only). Cells of other
    tasks (the offline tiny task, the miniature's) are left out: they have no counterpart in the
    paper. The unpruned row (`UNPRUNED`) is the paper's "LLaVA-NeXT-8B"."""
    from mrpruner.benchmarks import BENCHMARKS
    from mrpruner.results import paper_frame

    tasks = {b.task for b in BENCHMARKS.values()}
    unpruned = {UNPRUNED: "LLaVA-NeXT-8B"}  # the chapters' sweeps' name for the paper's unpruned row
    parts = [paper_frame(frame[frame["task"].isin(tasks)].assign(
        label=lambda f: f["label"].replace(unpruned),
        provenance=lambda f: f["provenance"].where(~f.get("stale", pd.Series(False, index=f.index)).astype(bool),
                                                   f["provenance"] + " (stale: measured by other code)")))
        for frame in frames if frame is not None]
    parts = [part for part in parts if len(part)]
    if not parts:
        return pd.DataFrame(columns=["method", "ratio", "benchmark", "value", "provenance"])
    return pd.concat(parts, ignore_index=True)
