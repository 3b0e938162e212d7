"""The miniatures' test splits as offline lmms-eval tasks, one per task and question kind:
`mrpruner_mini_overview` and `mrpruner_mini_detail` ("marks"), `mrpruner_mini_tiles_overview` and
`mrpruner_mini_tiles_detail` ("tiles"), shipped in `mrpruner/tasks`, which mrpruner's sweeps and
chapters search by themselves; for lmms-eval's command line, pass that folder:

    python -m lmms_eval --include_path "$(python -c 'import mrpruner.benchmarks as b; print(b.tasks_folder())')" \
      --tasks mrpruner_mini_overview,mrpruner_mini_detail \
      --model llava_next_pruned --model_args pretrained=mini,method=mrpruner,ratio=0.9,device=cpu

Each document holds the sample's task, stream and index (its image is drawn again from them, so the
shipped files hold no pixels), the question, the answer and `region`, the box (x0, y0, x1, y1, in
the image's pixels) that holds the answer: `llava_next_pruned` reports for any task whose documents
have a region how much of its tokens each method kept (recall).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from PIL import Image

from mrpruner.mini import data
from mrpruner.mini.data import KINDS, SPLITS, sample
from mrpruner.results import atomic_write_bytes

# The lmms-eval task of each task's question kind; TASKS: the first ("marks") task's.
TASK_NAMES = {task: {kind: "mrpruner_mini_" + ("" if task == "marks" else f"{task}_") + kind for kind in KINDS}
              for task in data.TASKS}
TASKS = TASK_NAMES["marks"]
TEST_SIZE = 600  # the test split the book and the tasks use: samples(TEST_SIZE, SPLITS["test"])


def write_task(folder: str | Path, n: int = TEST_SIZE, seed: int = SPLITS["test"]) -> Path:
    """Write every task's lmms-eval tasks (a YAML and a parquet per kind: the first `n` samples of
    the task's stream `seed` split by kind, in order) into `folder`, each file whole; returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = resources.files("mrpruner").joinpath("data/tasks/mrpruner_mini.yaml").read_text()
    for name, by_kind in TASK_NAMES.items():
        drawn = [sample(seed, index, task=name) for index in range(n)]
        for kind, task in by_kind.items():
            rows = [{"question_id": index, "task": name, "seed": seed, "question": s.question, "answer": s.answer,
                     "topic": s.topic, "region": list(s.region)} for index, s in enumerate(drawn) if s.kind == kind]
            parquet = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pylist(rows), parquet)
            atomic_write_bytes(folder / f"{task}.parquet", parquet.getvalue().to_pybytes())
            atomic_write_bytes(folder / f"{task}.yaml", template.replace("TASK", task).encode())
    return folder


@functools.lru_cache(maxsize=64)
def _image(task: str, seed: int, index: int) -> Image.Image:
    return sample(seed, index, task=task).image


def doc_to_visual(doc: dict) -> list[Image.Image]:
    """lmms-eval doc_to_visual: the sample's image, drawn again from its task, stream and index."""
    return [_image(str(doc["task"]), int(doc["seed"]), int(doc["question_id"])).copy()]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """lmms-eval doc_to_text: the question as the miniature was trained on it (no added prompt)."""
    return doc["question"]
