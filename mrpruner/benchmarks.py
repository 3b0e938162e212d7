"""The paper's eight benchmarks as lmms-eval 0.7.3 tasks, with the metric each column of Table 1
reports, and a tiny offline lmms-eval task (real photos from scikit-image) for tests and notebooks.

Which lmms-eval task and metric the paper used is not printed in the paper; the choices below
follow the LLaVA-NeXT convention and say so in `note` where there was a choice to make.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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

# Tables 2 and 3 and Figure 4 use four of the eight.
TABLE2 = ("gqa", "mmb_en", "mme", "textvqa")
TABLE3 = ("gqa", "pope", "textvqa", "sqa_img")


def task_name(name: str) -> str:
    """The lmms-eval task for a benchmark key ('gqa', 'mmb_en', 'tiny', ...); any other name is
    taken to be an lmms-eval task name already and returned unchanged."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"task must be a non-empty string (a benchmark key {sorted(BENCHMARKS)} or an "
                        f"lmms-eval task name), got {name!r}")
    known = BENCHMARKS.get(name) or (TINY if name == TINY.key else None)
    return known.task if known else name


def benchmark_for_task(task: str) -> Benchmark | None:
    """The Benchmark whose lmms-eval task is `task`, or None for a task the paper does not use."""
    return next((b for b in (*BENCHMARKS.values(), TINY) if b.task == task), None)


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
