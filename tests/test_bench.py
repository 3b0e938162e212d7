"""The selection benchmark runs and reports what it says; it never asserts a speed."""

import math

import pytest
import torch

from mrpruner import bench

NAMES = ["mr_prune paper", "mr_prune released", "gprune (2 graphs)", "l2_select", "random_select", "tome_merge",
         "dense products"]
TINY = {"repeats": 1, "n_low": 8, "n_high": 24, "dim": 16, "keep_ratio": 0.25}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_run_returns_one_row_per_selection_with_its_settings(dtype):
    rows = bench.run(dtype=dtype, **TINY)
    assert [row["name"] for row in rows] == NAMES
    reference = rows[-1]["median_ms"]
    for row in rows:
        assert row["device"] == "cpu" and row["dtype"] == dtype
        assert (row["n_low"], row["n_high"], row["dim"], row["repeats"]) == (8, 24, 16, 1)
        assert row["keep"] == 8  # 32 tokens, 25% kept
        assert math.isfinite(row["median_ms"]) and 0 < row["min_ms"] <= row["median_ms"]
        assert row["vs_products"] == pytest.approx(row["median_ms"] / reference)
    assert rows[-1]["vs_products"] == 1


def test_main_prints_the_table(capsys):
    assert bench.main(["--n-low", "6", "--n-high", "10", "--dim", "8", "--repeats", "2", "--keep-ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "N_l=6, N_h=10, d=8, keep K=8" in out
    for name in NAMES:
        assert name in out


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"repeats": 0}, "repeats"),
        ({"keep_ratio": 0.0}, "keep_ratio"),
        ({"keep_ratio": 1.5}, "keep_ratio"),
        ({"n_high": 0}, "n_high"),
        ({"dim": -1}, "dim"),
    ],
)
def test_bad_input_names_the_argument(options, name):
    with pytest.raises(ValueError, match=name):
        bench.run(**{**TINY, **options})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        bench.run(device="cuda", **TINY)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_on_cuda():
    rows = bench.run(device="cuda", dtype="float16", **TINY)
    assert [row["name"] for row in rows] == NAMES and rows[0]["device"] == "cuda"
