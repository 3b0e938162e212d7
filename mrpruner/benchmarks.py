"""The paper's eight benchmarks as lmms-eval 0.7.3 tasks, with the metric each column of Table 1
reports, a tiny offline lmms-eval task (real photos from scikit-image) for tests and notebooks, and
the first documents of any lmms-eval task (image, question, the task's own scoring) as lmms-eval
builds them, for the chapters that ask questions outside a sweep (Fig. 2).

Which lmms-eval task and metric the paper used is not printed in the paper; the choices below
follow the LLaVA-NeXT convention and say so in `note` where there was a choice to make.
"""

from __future__ import annotations

import io
import string
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from numbers import Real
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from PIL import Image

from mrpruner.results import atomic_write_bytes


@dataclass(frozen=True)
class Benchmark:
    """One benchmark column: its short key, the paper's column name (as mrpruner.paper uses it),
    the lmms-eval task, the metric key in lmms-eval's results (`<metric>,<filter>`), and the factor
    that turns lmms-eval's value into the paper's unit (fractions -> percent)."""

    key: str
    paper_name: str
    task: str
    metric: str
    scale: float
    note: str = ""

    def score(self, task_results: dict) -> float:
        """The paper-unit score from lmms-eval's `results[task]` dict."""
        if self.metric not in task_results:
            raise KeyError(f"lmms-eval results for task {self.task!r} have no metric {self.metric!r}; "
                           f"they have {sorted(task_results)}")
        return float(task_results[self.metric]) * self.scale


# Table 1's columns, in the paper's order.
BENCHMARKS: dict[str, Benchmark] = {b.key: b for b in (
    Benchmark("gqa", "GQA", "gqa", "exact_match,none", 100.0, "testdev-balanced"),
    Benchmark("vqav2", "VQA 2.0", "vqav2_val", "exact_match,none", 100.0,
              "val split, scored locally; the paper does not name the split (test-dev needs the "
              "EvalAI server: lmms-eval task vqav2_test writes a submission file)"),
    Benchmark("mme", "MME", "mme", "mme_perception_score,none", 1.0,
              "perception score (sum of 10 subtasks, max 2000); the cognition score is also recorded"),
    Benchmark("pope", "POPE", "pope", "pope_f1_score,none", 100.0,
              "F1 over the adversarial/popular/random splits (the LLaVA convention); accuracy is also recorded"),
    Benchmark("mmb_en", "MMB-EN", "mmbench_en_dev", "gpt_eval_score,none", 1.0,
              "dev split; answers that are not a plain option letter are matched by GPT (OPENAI_API_KEY)"),
    Benchmark("mmb_cn", "MMB-CN", "mmbench_cn_dev", "gpt_eval_score,none", 1.0,
              "dev split; answers that are not a plain option letter are matched by GPT (OPENAI_API_KEY)"),
    Benchmark("textvqa", "TextVQA", "textvqa_val", "exact_match,none", 100.0,
              "val split, lmms-eval's default prompt without OCR tokens"),
    Benchmark("sqa_img", "SQA-IMG", "scienceqa_img", "exact_match,none", 100.0, "test split, image questions"),
)}

# The offline stand-in written by `write_tiny_task`: not a paper benchmark.
TINY = Benchmark("tiny", "Tiny (offline)", "mrpruner_tiny", "exact_match,none", 100.0,
                 "seven scikit-image photos with one-word answers; a plumbing check, not a benchmark")
# The miniatures' test splits (mrpruner.mini.task, shipped in mrpruner/tasks): accuracy as a fraction.
MINI = {b.key: b for b in (
    Benchmark("mini_overview", "Miniature: overview", "mrpruner_mini_overview", "exact_match,none", 1.0,
              "the miniature's overview questions (the base image answers them); accuracy"),
    Benchmark("mini_detail", "Miniature: detail", "mrpruner_mini_detail", "exact_match,none", 1.0,
              "the miniature's detail questions (only the grid resolves them); accuracy"),
    Benchmark("mini_tiles_overview", "Miniature tiles: overview", "mrpruner_mini_tiles_overview",
              "exact_match,none", 1.0, "the second task's form questions (a shape across the tiles' borders: "
              "only the base image sees it whole); accuracy"),
    Benchmark("mini_tiles_detail", "Miniature tiles: detail", "mrpruner_mini_tiles_detail", "exact_match,none", 1.0,
              "the second task's detail questions (only the grid resolves them); accuracy"),
)}
_LOCAL = (TINY, *MINI.values())  # benchmarks that are not the paper's

# Tables 2 and 3 and Figure 4 use four of the eight.
TABLE2 = ("gqa", "mmb_en", "mme", "textvqa")
TABLE3 = ("gqa", "pope", "textvqa", "sqa_img")


def task_name(name: str) -> str:
    """The lmms-eval task for a benchmark key ('gqa', 'mmb_en', 'tiny', ...); any other name is
    taken to be an lmms-eval task name already and returned unchanged."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"task must be a non-empty string (a benchmark key {sorted(BENCHMARKS)} or an "
                        f"lmms-eval task name), got {name!r}")
    known = BENCHMARKS.get(name) or next((b for b in _LOCAL if b.key == name), None)
    return known.task if known else name


def benchmark_for_task(task: str) -> Benchmark | None:
    """The Benchmark whose lmms-eval task is `task`, or None for a task the paper does not use."""
    return next((b for b in (*BENCHMARKS.values(), *_LOCAL) if b.task == task), None)


def tasks_folder() -> Path:
    """The folder of the lmms-eval tasks shipped with mrpruner (mrpruner/tasks: the miniature's),
    which every TaskManager and sweep of mrpruner searches first."""
    return Path(str(resources.files("mrpruner").joinpath("tasks")))


def include_paths(include_path: str | Path | None = None) -> list[str]:
    """The folders mrpruner gives lmms-eval to find tasks in: its own tasks, then `include_path`."""
    return [str(tasks_folder())] + ([str(include_path)] if include_path is not None else [])


def task_manager(tasks: Sequence[str], include_path: str | Path | None = None):
    """An lmms-eval TaskManager that knows every task of `tasks`: mrpruner's own tasks and those
    of include_path alone when they hold them all (quick), else lmms-eval's own tasks as well. A
    ValueError names the tasks none of them knows and the folders searched."""
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    include = include_paths(include_path)
    logger.disable("lmms_eval")  # indexing logs every YAML it skips
    try:
        manager = TaskManager("ERROR", include_path=include, include_defaults=False)
        if not set(tasks) <= set(manager.all_tasks):
            manager = TaskManager("ERROR", include_path=include)
    finally:
        logger.enable("lmms_eval")
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise ValueError(f"unknown lmms-eval task(s) {missing}: give a benchmark key "
                         f"{list(BENCHMARKS) + [b.key for b in _LOCAL]}, an lmms-eval task name (`python -m "
                         f"lmms_eval tasks list`), or a task in include_path; searched lmms-eval's own tasks "
                         f"and {include}")
    return manager


class TaskQuestions(NamedTuple):
    """The first documents of an lmms-eval task as lmms-eval builds them. `frame`: one row per
    document with image (its first visual, a PIL RGB image), question (the prompt doc_to_text
    gives, with the task's default pre- and post-prompt), answer (doc_to_target; None where the
    task's target names no field of the document) and region (the box x0, y0, x1, y1 in pixels
    that holds the answer, where the document gives one, as the miniature's do; else None).
    `score(i, text)`: the task's own score of the answer `text` to document i (process_results,
    its metric), 1.0 for a correct answer."""

    task: str
    frame: pd.DataFrame
    score: Callable[[int, str], float]


def task_questions(task: str, samples: int, include_path: str | Path | None = None) -> TaskQuestions:
    """The first `samples` documents of `task` (a benchmark key such as "textvqa" or "mmb_en",
    "tiny", or an lmms-eval task name), loaded through lmms-eval's own task and dataset code:
    lmms-eval's tasks download their dataset from the Hugging Face hub; "tiny" is written offline
    (`write_tiny_task`) unless include_path is given; other local tasks come from include_path.

    Scores: the task's per-document metric (the one of Table 1's column for the paper's
    benchmarks) where process_results gives a number; where it gives none (MMB-EN's answers are
    judged by GPT when lmms-eval aggregates them), 1.0 if the answer equals the target up to
    case and punctuation (a plain option letter), else 0.0."""
    import datasets
    from lmms_eval.api.task import Task
    from lmms_eval.tasks import get_task_dict
    from loguru import logger

    from mrpruner.checks import check_count

    samples = check_count("samples", samples, 1, 2**31)
    name = task_name(task)
    with tempfile.TemporaryDirectory(prefix="mrpruner-tiny-") as scratch:  # the datasets cache keeps what it loads
        if name == TINY.task and include_path is None:
            include_path = write_tiny_task(scratch)
        manager = task_manager([name], include_path)
        logger.disable("lmms_eval")  # its dataset cache logs at DEBUG level
        datasets.disable_progress_bars()
        try:
            loaded = get_task_dict([name], manager).get(name)
        finally:
            logger.enable("lmms_eval")
            datasets.enable_progress_bars()
    if not isinstance(loaded, Task):
        raise ValueError(f"task: {task!r} is a group of lmms-eval tasks, not one task; name one of its tasks")
    docs, plain = loaded.eval_docs, loaded.eval_docs_no_media
    if samples > len(docs):
        raise ValueError(f"samples must be at most the {len(docs)} documents of task {name!r}, got {samples}")
    benchmark = benchmark_for_task(name)
    metric = benchmark.metric.split(",")[0] if benchmark else loaded.config.metric_list[0]["metric"]
    rows = []
    for i in range(samples):
        doc = docs[i]
        visuals = loaded.doc_to_visual(doc)
        if not visuals:
            raise ValueError(f"task {name!r}: document {i} has no image")
        target = loaded.doc_to_target(plain[i])
        known = not (target == loaded.config.doc_to_target and target not in plain[i])  # not the setting itself
        region = doc.get("region")
        rows.append({"image": visuals[0].convert("RGB"), "question": loaded.doc_to_text(doc),
                     "answer": str(target) if known else None,
                     "region": tuple(region) if region is not None else None})
    frame = pd.DataFrame(rows)

    def score(i: int, text: str) -> float:
        value = loaded.process_results(plain[i], [text]).get(metric)
        if isinstance(value, Real) and not isinstance(value, bool):
            return float(value)
        answer = frame["answer"][i]
        return float(answer is not None and _normal(text) == _normal(answer))

    return TaskQuestions(name, frame, score)


def _normal(text: str) -> str:
    """`text` in lower case without punctuation or surrounding spaces, as lmms-eval's exact_match
    with ignore_case and ignore_punctuation compares."""
    return text.lower().translate(str.maketrans("", "", string.punctuation)).strip()


# --- the tiny offline task ---------------------------------------------------------------------

# (scikit-image photo, question, one-word answer): different sizes and aspect ratios, so
# LLaVA-NeXT's anyres picks different tilings and token counts.
_TINY_QUESTIONS = (
    ("astronaut", "What is this person's profession?", "astronaut"),
    ("coffee", "What drink is in the cup?", "coffee"),
    ("chelsea", "What animal is in the picture?", "cat"),
    ("rocket", "What vehicle is on the launch pad?", "rocket"),
    ("camera", "What is the man holding?", "camera"),
    ("coins", "What objects are shown?", "coins"),
    ("page", "What is printed on the page?", "text"),
)


def write_tiny_task(folder: str | Path) -> Path:
    """Write the tiny lmms-eval task (mrpruner_tiny.yaml + mrpruner_tiny.parquet) into `folder`
    and return the folder, ready for `lmms_eval --include_path FOLDER --tasks mrpruner_tiny`.

    The YAML ships with the package (mrpruner/data/tasks/); the parquet is written here from the
    photos that scikit-image ships, so nothing is downloaded. Files are written whole (temporary
    name, then os.replace: `mrpruner.results.atomic_write_bytes`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import skimage.data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"question_id": [], "image": [], "question": [], "answer": []}
    for index, (photo, question, answer) in enumerate(_TINY_QUESTIONS):
        image = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows["question_id"].append(index)
        rows["image"].append(buffer.getvalue())
        rows["question"].append(question)
        rows["answer"].append(answer)
    parquet = pa.BufferOutputStream()
    pq.write_table(pa.table(rows), parquet)
    atomic_write_bytes(folder / f"{TINY.task}.parquet", parquet.getvalue().to_pybytes())
    yaml = resources.files("mrpruner").joinpath(f"data/tasks/{TINY.task}.yaml").read_bytes()
    atomic_write_bytes(folder / f"{TINY.task}.yaml", yaml)
    return folder


def tiny_doc_to_visual(doc: dict) -> list[Image.Image]:
    """lmms-eval doc_to_visual of the tiny task: the PNG bytes as one RGB PIL image."""
    return [Image.open(io.BytesIO(doc["image"])).convert("RGB")]


def tiny_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """lmms-eval doc_to_text of the tiny task: pre_prompt + question + post_prompt."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"
