"""What a sweep will cost before it runs: device-hours per cell and in all, from the throughput
already measured in its results folder, else the paper's Table 1 throughput (LLaVA-NeXT-8B on one
H100, batch 1), and each task's size; and the datasets its tasks download, to fetch beforehand on a
cluster whose compute nodes have no internet. Model loading and download time are not counted."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mrpruner import paper

# Documents in the split each of the paper's lmms-eval tasks evaluates (the datasets' cards).
SIZES = {"gqa": 12578, "vqav2_val": 214354, "mme": 2374, "pope": 9000, "mmbench_en_dev": 4329,
         "mmbench_cn_dev": 4329, "textvqa_val": 5000, "scienceqa_img": 2017}
PAPER_MODEL = "llava-hf/llama3-llava-next-8b-hf"  # the model whose throughput Table 1 reports
COLUMNS = ["cell_id", "model", "label", "ratio", "task", "samples", "throughput", "hours", "source"]


def estimate(cells: Sequence[Any], records: Sequence[dict[str, Any]], processes: int = 1) -> pd.DataFrame:
    """One row per cell (`mrpruner.sweep.grid.Cell`s) with its samples, throughput per device (samples/s),
    device-hours and where the throughput comes from (a key of SOURCES): the folder's finished cell
    `records` of the same model, label, ratio and task, or else of any task (mean); else, for the
    paper's model, Table 1's row of the label at that ratio, or Table 1's unpruned model (slower: an
    upper bound); None where neither applies.
    `processes`: devices per cell (throughput is per device, so hours count all of them)."""
    reported = paper.reported(1)
    reported = reported[reported["benchmark"] == "Throughput"].set_index(["method", "ratio"])["value"]
    measured: dict[tuple, list[float]] = {}
    sizes: dict[str, int] = {}
    for record in records:
        spec, summary = record["cell"], record["summary"]
        for key in ((spec["model"], spec["label"], spec["ratio"], spec["task"]),
                    (spec["model"], spec["label"], spec["ratio"])):
            measured.setdefault(key, []).append(summary["throughput"] / record.get("world_size", 1))
        if spec["limit"] is None:
            sizes[spec["task"]] = summary["samples"]
    rows = []
    for cell in cells:
        size = SIZES.get(cell.task, sizes.get(cell.task))
        samples = cell.limit if size is None else size if cell.limit is None else min(cell.limit, size)
        throughput, source = _throughput(cell, measured, reported)
        hours = None if samples is None or throughput is None else samples / throughput / 3600 * processes
        rows.append([cell.cell_id, cell.model, cell.label, cell.ratio, cell.task, samples, throughput, hours, source])
    return pd.DataFrame(rows, columns=COLUMNS)


# Where a cell's throughput comes from (the `source` column of `estimate`), in words.
SOURCES = {"measured": "measured here: the mean of the results folder's finished cells of the same row (and task)",
           "paper": "reported in the paper, Table 1: the same row on one H100, batch 1",
           "paper, unpruned": "reported in the paper, Table 1: the unpruned model's (the row is not in Table 1; "
                              "the slowest row, so an upper bound)",
           "unknown": "unknown: no finished cell of the row here, and the paper reports only its own model"}


def _throughput(cell: Any, measured: dict[tuple, list[float]], reported: pd.Series) -> tuple[float | None, str]:
    found = measured.get((cell.model, cell.label, cell.ratio, cell.task)) or measured.get(
        (cell.model, cell.label, cell.ratio))
    if found:
        return sum(found) / len(found), "measured"
    if cell.model != PAPER_MODEL:
        return None, "unknown"
    if (cell.label, cell.ratio) in reported.index:
        return float(reported[(cell.label, cell.ratio)]), "paper"
    return float(reported[("LLaVA-NeXT-8B", 0.0)]), "paper, unpruned"


def total(frame: pd.DataFrame) -> float | None:
    """The device-hours of all cells of an `estimate` frame, None if any cell's is unknown."""
    return None if frame["hours"].isna().any() else float(frame["hours"].sum())


def sources(frame: pd.DataFrame) -> str:
    """How many cells of an `estimate` frame take their throughput from each source, in words."""
    return "; ".join(f"{n} cell(s) {source}" for source, n in frame["source"].value_counts().items())


def summary_line(frame: pd.DataFrame, unit: str) -> str:
    """One sentence: cells, samples and the estimated `unit`-hours (e.g. "GPU") in all, and their sources."""
    hours = total(frame)
    unknown = int(frame["hours"].isna().sum())
    return (f"{len(frame)} cell(s), {int(frame['samples'].fillna(0).sum()):,} samples: estimated "
            + (f"{hours:,.3g} {unit}-hours in all" if hours is not None
               else f"{frame['hours'].sum():,.3g} {unit}-hours for the {len(frame) - unknown} cell(s) with an "
                    f"estimate; {unknown} unknown (no throughput or size to go by)")
            + f" (evaluation only; model loading and downloads not counted). Throughput: {sources(frame)}")


def datasets(tasks: Sequence[str], include_path: str | Path | None = None) -> dict[str, list[str]]:
    """The Hugging Face datasets each lmms-eval task of `tasks` reads (its YAML's dataset_path,
    following `include` and a group's member tasks), as this installation of lmms-eval has them."""
    from mrpruner.benchmarks import task_manager

    index = task_manager(tasks, include_path).task_index

    def of(name: str) -> list[str]:
        entry = index[name]
        path = Path(entry["yaml_path"])
        if entry["type"] == "group":
            members = re.findall(r"^\s*-\s*(\S+)\s*$", path.read_text(), re.M)
            return list(dict.fromkeys(d for m in members if m in index for d in of(m)))
        while path is not None:
            text = path.read_text()
            found = re.search(r"^dataset_path:\s*(\S+)", text, re.M)
            if found:
                return [found.group(1)]
            include = re.search(r"^include:\s*(\S+)", text, re.M)
            path = path.parent / include.group(1) if include else None
        return []

    return {task: of(task) for task in tasks}
