"""The prefill latency tool times what it says on the tiny model; it never asserts a speed."""

import json

import pytest
import torch

import mrpruner
from mrpruner import latency
from mrpruner.budget import keep_count
from mrpruner.methods import METHODS
from mrpruner.flops import DecoderShape, prefill_flops
from mrpruner.testing import chat_inputs, real_size_llava_next, sample_images, tiny_llava_next

RATIOS = [0.0, 0.5, 0.9]


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_llava_next()
    return model, chat_inputs(processor, [([sample_images()["chelsea"]], "what is shown in this image ?")])


def test_measure_gives_one_row_per_cell_with_exact_token_counts(tiny):
    model, inputs = tiny
    rows = latency.measure(model, inputs, ratios=RATIOS, repeats=1)
    cells = [(row["method"], row["ratio"]) for row in rows]
    assert cells == [("none", 0.0)] + [(m, r) for m in METHODS for r in RATIOS]
    visual = int((inputs["input_ids"] == model.config.image_token_id).sum())
    length = inputs["input_ids"].shape[1]
    shape = DecoderShape.from_config(model.config)
    assert (rows[0]["visual_after"], rows[0]["length_after"], rows[0]["selection_ms"]) == (visual, length, 0)
    assert rows[0]["prefill_tflops"] == prefill_flops(length, shape, lm_head=True) / 1e12
    for row in rows[1:]:
        assert (row["visual_before"], row["length_before"]) == (visual, length)
        assert row["visual_after"] == keep_count(visual, row["ratio"])  # FastV: from its layer K on
        assert row["length_after"] == length - visual + row["visual_after"]
        assert row["selection_ms"] > 0 and row["selection_share"] == row["selection_ms"] / row["prefill_ms"]
    for row in rows:
        assert 0 < row["prefill_min_ms"] <= row["prefill_ms"] <= row["prefill_max_ms"]
        assert row["prefill_runs_ms"] == [row["prefill_ms"]]  # one run
        random_row = next(r for r in rows if r["method"] == "random" and r["ratio"] == row["ratio"])
        assert row["vs_random"] == pytest.approx(random_row["prefill_ms"] / row["prefill_ms"])
        assert row["vs_unpruned"] == pytest.approx(rows[0]["prefill_ms"] / row["prefill_ms"])
        assert row["vs_unpruned_low"] == pytest.approx(row["vs_unpruned"]) == pytest.approx(row["vs_unpruned_high"])
    mr = {row["ratio"]: row["prefill_tflops"] for row in rows if row["method"] == "mrpruner"}
    assert mr[0.9] < mr[0.5] < rows[0]["prefill_tflops"]
    with pytest.raises(ValueError, match="not patched"):  # every cell unpatched the model again
        mrpruner.stats(model)


def test_without_random_there_is_no_speed_up_over_it(tiny):
    model, inputs = tiny
    rows = latency.measure(model, inputs, methods=["mrpruner"], ratios=[0.7], repeats=2)
    assert [row["vs_random"] for row in rows] == [None, None]
    assert [row["vs_random_low"] for row in rows] == [None, None]


def test_every_compared_timing_has_its_spread_over_at_least_three_runs(tiny):
    model, inputs = tiny
    rows = latency.measure(model, inputs, methods=["random", "mrpruner"], ratios=[0.9], repeats=3)
    for row in rows:
        runs = row["prefill_runs_ms"]
        assert len(runs) == 3 and (min(runs), max(runs)) == (row["prefill_min_ms"], row["prefill_max_ms"])
        paired = sorted(a / b for a, b in zip(rows[0]["prefill_runs_ms"], runs))  # round by round
        assert (row["vs_unpruned_low"], row["vs_unpruned"], row["vs_unpruned_high"]) == tuple(paired)  # the median
        assert row["vs_unpruned_low"] <= row["vs_unpruned"] * (1 + 1e-9) and row["vs_unpruned"] <= \
            row["vs_unpruned_high"] * (1 + 1e-9)
    result = {"settings": {"repeats": 3}, "rows": rows}
    table = latency.spread_table(result, {"mrpruner": "MR-Pruner"})
    assert list(table.index) == [("none", 0.0), ("random", 0.9), ("MR-Pruner", 0.9)]
    mr = table.loc[("MR-Pruner", 0.9)]
    assert mr["speed-up vs unpruned: median [range]"] == (f"{rows[2]['vs_unpruned']:.2f}x [{rows[2]['vs_unpruned_low']:.2f}, "
                                                  f"{rows[2]['vs_unpruned_high']:.2f}]")
    assert table.loc[("none", 0.0), "speed-up vs Random: median [range]"] == ""
    with pytest.raises(ValueError, match="at least 3; time again with --repeats 3"):
        latency.spread_table({"settings": {"repeats": 2}, "rows": rows})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repeats": 0}, "repeats"),
    ({"methods": ["mr-pruner"]}, "method must be one of"),
    ({"methods": []}, "methods and ratios"),
    ({"ratios": [0.5, 1.0]}, "ratio"),
])
def test_measure_names_the_bad_argument(tiny, kwargs, message):
    model, inputs = tiny
    with pytest.raises(ValueError, match=message):
        latency.measure(model, inputs, **kwargs)


def test_measure_takes_one_prompt(tiny):
    model, _ = tiny
    _, processor = tiny_llava_next()
    photos = sample_images()
    two = chat_inputs(processor, [([photos["chelsea"]], "what ?"), ([photos["coffee"]], "what ?")])
    with pytest.raises(ValueError, match="one prompt"):
        latency.measure(model, two, repeats=1)


def test_main_writes_the_json_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "sub" / "latency.json"
    assert latency.main(["--model", "tiny", "--device", "cpu", "--dtype", "float32", "--image", "coffee",
                         "--methods", "random", "gprune", "--ratios", "0.9", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    settings, provenance = result["settings"], result["provenance"]
    assert (settings["model"], settings["image"], settings["image_size"], settings["repeats"]) == ("tiny", "coffee",
                                                                                                  [400, 600], 1)
    assert settings["parameters"] == sum(p.numel() for p in tiny_llava_next()[0].parameters())
    assert (provenance["model"], provenance["dtype"]) == ("tiny random LLaVA-NeXT", "float32")
    assert provenance["versions"]["transformers"] and provenance["date"]
    assert [(row["method"], row["ratio"]) for row in result["rows"]] == [("none", 0.0), ("random", 0.9),
                                                                        ("gprune", 0.9)]
    table = capsys.readouterr().out
    assert table.startswith(f"{latency.label(result)}\n")
    assert "coffee photo (400x600" in table and "gprune" in table and "median of 1 runs after" in table
    assert f"with {torch.get_num_threads()} CPU threads" in table
    assert [p.name for p in out.parent.iterdir()] == ["latency.json"]  # no temporary file left


def test_load_or_run_reads_the_first_saved_run_with_three_runs_else_times_the_tiny_model(tmp_path, monkeypatch):
    def saved(which: str, repeats: int) -> dict:
        return {"settings": {"repeats": repeats}, "rows": [{"prefill_runs_ms": [1.0] * repeats}], "which": which}

    first, second, few = tmp_path / "gpu.json", tmp_path / "cpu.json", tmp_path / "old.json"
    first.write_text(json.dumps(saved("gpu", 3)))
    second.write_text(json.dumps(saved("cpu", 5)))
    few.write_text(json.dumps(saved("old", 2)))
    missing = str(tmp_path / "none.json")
    assert latency.load_or_run([missing, str(first), str(second)]) == (saved("gpu", 3), f"from `{first}`")
    assert latency.load_or_run(["", missing, str(few), str(second)])[0]["which"] == "cpu"  # 2 runs: passed over
    monkeypatch.setattr(latency, "run", lambda **kwargs: kwargs)
    assert latency.load_or_run([missing, str(few)]) == (
        {"model": "tiny", "device": "cpu", "dtype": "float32", "repeats": 3},
        f"run in this build (no `{missing}`; `{few}` has 2 run(s) per cell, fewer than 3)")
    assert latency.load_or_run([], device="cpu", repeats=4) == (
        {"model": "tiny", "device": "cpu", "dtype": "float32", "repeats": 4}, "run in this build")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"model": "13b"}, "model"),
    ({"dtype": "int8"}, "dtype"),
    ({"image": "lena"}, "image"),
    ({"device": "tpu"}, "device"),
])
def test_run_names_the_bad_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        latency.run(**{"model": "tiny", "device": "cpu", **kwargs})


def test_the_real_size_model_takes_the_processors_token_ids():
    model, processor = real_size_llava_next(device="meta")
    assert 8.3e9 < sum(p.numel() for p in model.parameters()) < 8.4e9 and model.dtype == torch.bfloat16
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.text_config.pad_token_id == processor.tokenizer.pad_token_id
    assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_on_cuda():
    result = latency.run(model="tiny", device="cuda", dtype="bfloat16", methods=["random", "fastv", "mrpruner"],
                         ratios=[0.9], repeats=1)
    assert result["settings"]["device"] == torch.cuda.get_device_name()
    visual = result["rows"][0]["visual_after"]
    assert [row["visual_after"] for row in result["rows"][1:]] == [keep_count(visual, 0.9)] * 3


def test_the_spread_table_shows_three_significant_digits():
    row = {"method": "none", "ratio": 0.0, "visual_after": 2144, "prefill_runs_ms": [587, 643, 653], "prefill_ms": 275325.04,
           "prefill_min_ms": 250652.16, "prefill_max_ms": 275883.29, "selection_share": 0.0, "vs_random": None,
           "vs_random_low": None, "vs_random_high": None, "vs_unpruned": 1.0, "vs_unpruned_low": 1.0,
           "vs_unpruned_high": 1.0}
    fast = {**row, "method": "random", "ratio": 0.9, "prefill_runs_ms": [100, 100, 100], "prefill_ms": 42.837, "prefill_min_ms": 38.359,
            "prefill_max_ms": 1.5, "vs_unpruned": 6.43, "vs_unpruned_low": 5.87, "vs_unpruned_high": 6.53}
    table = latency.spread_table({"settings": {"repeats": 3}, "rows": [row, fast]})
    assert list(table["prefill ms: median [fastest, slowest] of 3 runs"]) == ["275325 [250652, 275883]",
                                                                               "42.8 [38.4, 1.50]"]
    assert table.loc[("random", 0.9), "speed-up vs unpruned: median [range]"] == "6.43x [5.87, 6.53]"


def test_a_speed_up_is_the_median_of_its_paired_runs_so_it_lies_within_its_range():
    median, low, high = latency.paired_speedup([10.0, 12.0, 30.0], [5.0, 4.0, 6.0])  # 2, 3 and 5 round by round
    assert (low, median, high) == (2.0, 3.0, 5.0)
