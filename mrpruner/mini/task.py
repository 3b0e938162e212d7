"""The miniature's test split as two offline lmms-eval tasks, `mrpruner_mini_overview` and
`mrpruner_mini_detail` (one per question kind), so the sweep runner measures the miniature through
the real `python -m lmms_eval` command line:

    python -m lmms_eval --include_path FOLDER --tasks mrpruner_mini_overview,mrpruner_mini_detail \\
      --model llava_next_pruned --model_args pretrained=$(python -c 'import mrpruner.mini as m; print(m.checkpoint())'),...
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

from PIL import Image

from mrpruner.mini.data import KINDS, SPLITS, samples
from mrpruner.results import atomic_write_bytes

TASKS = {kind: f"mrpruner_mini_{kind}" for kind in KINDS}
TEST_SIZE = 600  # the test split the book and the tasks use: samples(TEST_SIZE, SPLITS["test"])


def write_task(folder: str | Path, n: int = TEST_SIZE, seed: int = SPLITS["test"]) -> Path:
    """Write both tasks (a YAML and a parquet per kind, the first `n` samples of stream `seed`
    split by kind, in order) into `folder`, each file whole; returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    test = samples(n, seed)
    template = resources.files("mrpruner").joinpath("data/tasks/mrpruner_mini.yaml").read_text()
    for kind, task in TASKS.items():
        rows = {"question_id": [], "image": [], "question": [], "answer": [], "topic": [], "region": []}
        for index, s in enumerate(test):
            if s.kind != kind:
                continue
            buffer = io.BytesIO()
            s.image.save(buffer, format="PNG")
            for key, value in (("question_id", index), ("image", buffer.getvalue()), ("question", s.question),
                               ("answer", s.answer), ("topic", s.topic), ("region", list(s.region))):
                rows[key].append(value)
        parquet = pa.BufferOutputStream()
        pq.write_table(pa.table(rows), parquet)
        atomic_write_bytes(folder / f"{task}.parquet", parquet.getvalue().to_pybytes())
        atomic_write_bytes(folder / f"{task}.yaml", template.replace("TASK", task).encode())
    return folder


def doc_to_visual(doc: dict) -> list[Image.Image]:
    """lmms-eval doc_to_visual: the PNG bytes as one RGB PIL image."""
    return [Image.open(io.BytesIO(doc["image"])).convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """lmms-eval doc_to_text: the question as the miniature was trained on it (no added prompt)."""
    return doc["question"]
