"""Shared test settings and helpers."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _float32_without_tf32():
    """CUDA tests compare float32 results to 1e-5, as on the CPU: no TF32 in convolutions (cuDNN's
    default) or matrix products."""
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    yield


class FastVChoices:
    """FastV's per-image choices (scores, kept indices), recorded as its `top_indices` makes them.
    After `replay(calls)` the next runs choose as those recorded ones did, once checked that this
    is their own choice up to tokens tied within the two runs' score differences: comparisons of
    FastV across kernels or batch shapes then compare everything after the ranking, whatever a
    last bit does to a near tie (a random tiny model attends almost uniformly)."""

    def __init__(self, original):
        self.original, self.calls, self.pending = original, [], []

    def take(self) -> list:
        calls, self.calls = self.calls, []
        return calls

    def replay(self, calls) -> None:
        self.pending = list(calls)

    def __call__(self, scores, keep):
        from mrpruner.testing import same_up_to_ties

        own = self.original(scores, keep)
        self.calls.append((scores.detach().cpu(), own.cpu()))
        if not self.pending:
            return own
        reference_scores, reference = self.pending.pop(0)
        scores = scores.detach().cpu()
        torch.testing.assert_close(scores, reference_scores, rtol=1e-4, atol=1e-9)
        assert same_up_to_ties(own.cpu(), reference, scores, float((scores - reference_scores).abs().max()))
        return reference.to(own.device)


@pytest.fixture
def fastv_choices(monkeypatch):
    """Record (and replay) FastV's choices in this test (FastVChoices)."""
    import mrpruner.fastv

    choices = FastVChoices(mrpruner.fastv.top_indices)
    monkeypatch.setattr(mrpruner.fastv, "top_indices", choices)
    yield choices
    assert not choices.pending, "a replayed FastV choice was never made"


def _local_task(folder: Path, name: str, extra: str = "") -> Path:
    """The tiny task's documents as another local lmms-eval task `name` in `folder` (its YAML under
    that name, plus the YAML lines `extra`): what a hub benchmark is to the code that loads it."""
    from mrpruner.benchmarks import TINY, write_tiny_task

    write_tiny_task(folder)
    (folder / f"{TINY.task}.parquet").rename(folder / f"{name}.parquet")
    yaml = (folder / f"{TINY.task}.yaml").read_text().replace(TINY.task, name)
    (folder / f"{TINY.task}.yaml").unlink()
    (folder / f"{name}.yaml").write_text(yaml + extra)
    return folder


@pytest.fixture
def local_task(tmp_path, monkeypatch):
    """Write a local lmms-eval task (`_local_task`); datasets caches it under tmp_path."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    return _local_task
