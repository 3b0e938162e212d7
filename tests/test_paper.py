"""The paper's reported numbers (mrpruner.paper) and the notebooks' parameter checks (mrpruner.book)."""

import math

import pandas as pd
import pytest
import torch

from mrpruner import paper
from mrpruner.book import check_params

TABLE1_BENCHMARKS = ["GQA", "VQA 2.0", "MME", "POPE", "MMB-EN", "MMB-CN", "TextVQA", "SQA-IMG", "Throughput"]


def test_table1_is_16_rows_by_9_value_columns_in_the_papers_order():
    table = paper.wide(paper.reported(1).query("benchmark != 'Throughput speed-up'"))
    assert table.shape == (16, 9)
    assert list(table.columns) == TABLE1_BENCHMARKS
    assert not table.isna().any().any()
    assert table.index[0] == ("LLaVA-NeXT-8B", 0.0)
    assert list(dict.fromkeys(m for m, _ in table.index)) == list(paper.METHODS)
    for method in list(paper.METHODS)[1:]:
        assert [r for m, r in table.index if m == method] == [0.5, 0.7, 0.9]


def test_spot_values_as_printed_in_the_paper():
    t1, t2, t3 = (paper.wide(paper.reported(n)) for n in paper.TABLES)
    assert t1.loc[("LLaVA-NeXT-8B", 0.0), "MME"] == 1587.72
    assert t1.loc[("MR-Pruner", 0.9), "TextVQA"] == 60.90
    assert t1.loc[("ToMe", 0.5), "Throughput"] == 0.59
    assert t2.shape == (3, 4) and t2.loc[("FastV", 0.95), "TextVQA"] == 49.10
    assert t3.shape == (5, 4) and t3.loc[("MR-Pruner [-IR -CR -IA]", 0.9), "TextVQA"] == 43.26


def test_every_speedup_is_the_printed_ratio_to_the_unpruned_throughput():
    # Throughputs are printed to 2 decimals: the speed-up must be reachable from numbers that round
    # to the printed ones (0.59 / 1.46 = 0.404 is printed 0.41: fine, 0.5913 / 1.46 = 0.405).
    table = paper.speedups()
    assert len(table) == 15
    for throughput, printed in zip(table["throughput"], table["printed"]):
        low, high = (throughput - 0.005) / 1.465, (throughput + 0.005) / 1.455
        assert low <= printed + 0.005 and printed - 0.005 <= high, (throughput, printed)


def test_table3_full_row_is_table1s_mrpruner_at_90_percent():
    t1, t3 = paper.wide(paper.reported(1)), paper.wide(paper.reported(3))
    full = t3.loc[("MR-Pruner", 0.9)]
    assert (t1.loc[("MR-Pruner", 0.9), full.index] == full).all()
    assert set(t3.index.get_level_values("method")) == set(paper.ABLATIONS)


def test_reported_rows_carry_their_table_and_provenance():
    frame = paper.reported()
    assert list(frame.columns) == paper.COLUMNS + ["provenance"]
    assert (frame["provenance"] == frame["table"].map(paper.provenance)).all()
    assert set(frame["unit"]) == {"score", "samples/s", "x"}
    assert not frame.duplicated(["table", "method", "ratio", "benchmark"]).any()
    with pytest.raises(ValueError, match="table must be one of"):
        paper.reported(4)


def test_compare_keeps_every_reported_cell_and_marks_the_unmeasured():
    measured = pd.DataFrame({"method": ["MR-Pruner", "MR-Pruner"], "ratio": [0.95, 0.5], "benchmark": ["GQA", "GQA"],
                             "value": [50.0, 1.0], "provenance": ["measured here, x", "measured here, y"]})
    both = paper.compare(paper.reported(2), measured)
    assert len(both) == 12
    hit = both[(both["method"] == "MR-Pruner") & (both["benchmark"] == "GQA")].iloc[0]
    assert hit["measured"] == 50.0 and math.isclose(hit["gap"], 50.0 - 56.81)
    assert hit["provenance"] == "measured here, x"
    rest = both.drop(hit.name)
    assert rest["measured"].isna().all() and (rest["provenance"] == paper.NOT_MEASURED).all()
    shown = paper.side_by_side(both)
    assert shown.loc[("FastV", 0.95), ("GQA", "measured")] == paper.NOT_MEASURED
    assert shown.loc[("MR-Pruner", 0.95), ("GQA", "gap")] == "-6.81"
    with pytest.raises(ValueError, match="provenance"):
        paper.compare(paper.reported(2), measured.drop(columns="provenance"))
    beside = paper.measured_rows(both)  # what a page shows: the measured row and benchmark only
    assert list(beside.index) == [("MR-Pruner", 0.95)] and list(beside.columns.get_level_values(0).unique()) == ["GQA"]
    assert not (beside == paper.NOT_MEASURED).any().any()
    assert paper.measured_rows(paper.compare(paper.reported(2), measured.iloc[:0])).empty


def test_differences_subtract_the_reference_of_the_same_benchmark_and_source():
    reported, measured = "reported in the paper", "measured here"
    frame = pd.DataFrame([("LLaVA-NeXT-8B", 0.0, "GQA", reported, 65.0), ("FastV", 0.9, "GQA", reported, 60.0),
                          ("FastV", 0.95, "GQA", reported, 55.5), ("LLaVA-NeXT-8B", 0.0, "MME", reported, 1500.0),
                          ("FastV", 0.95, "MME", reported, 1300.0), ("LLaVA-NeXT-8B", 0.0, "GQA", measured, 64.0),
                          ("FastV", 0.95, "GQA", measured, 50.0), ("FastV", 0.95, "MME", measured, 1200.0)],
                         columns=["method", "ratio", "benchmark", "source", "value"])
    out = paper.differences(frame, "LLaVA-NeXT-8B")
    # measured MME has no measured unpruned number: left out, not set against the reported one
    assert out[["ratio", "benchmark", "source", "difference"]].values.tolist() == [
        [0.9, "GQA", reported, -5.0], [0.95, "GQA", reported, -9.5], [0.95, "MME", reported, -200.0],
        [0.95, "GQA", measured, -14.0]]
    with pytest.raises(ValueError, match=r"reference 'Random' is not a method of the frame; it has \['FastV', "):
        paper.differences(frame, "Random")
    with pytest.raises(ValueError, match="reference 'FastV' has more than one number per benchmark and source"):
        paper.differences(frame, "FastV")


METHODS = ("mrpruner", "gprune")


def test_check_params_accepts_what_can_run():
    check_params(device="cpu", methods=METHODS, ratios=[0.0, 0.5, 0.95], limit=3, known_methods=METHODS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": ["mr-pruner"]}, r"unknown method 'mr-pruner'.*\['gprune', 'mrpruner'\]"),
    ({"ratios": [0.5, 1.0]}, r"ratios\[1\] must be in \[0, 1\) \(the fraction of visual tokens pruned\)"),
    ({"ratios": [-0.1]}, r"ratios\[0\] must be in"),
    ({"limit": 0}, "limit must be in"),
    ({"device": "gpu0"}, "device must be a torch device"),
    ({"samples": 0}, "samples must be in"),
    ({"include_path": "/no/such/folder"}, "include_path must be a folder of lmms-eval task YAMLs or None"),
])
def test_check_params_names_the_bad_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_params(**{"device": "cpu", "known_methods": METHODS, **kwargs})


def test_check_params_knows_the_plugins_methods_and_the_unpruned_model():
    check_params(methods=["none", "random", "tome", "fastv", "gprune", "mrpruner"])
    with pytest.raises(ValueError, match=r"unknown method 'g-prune'; the methods are \['fastv', 'gprune', 'mrpruner', "
                                         r"'none', 'random', 'tome'\]"):
        check_params(methods=["g-prune"])
    with pytest.raises(ValueError, match=r"unknown Table 3 row 'MR-Pruner \[-XX\]'"):
        check_params(ablations=["MR-Pruner [-IR]", "MR-Pruner [-XX]"])


def test_check_params_wants_tasks_as_a_list_of_names():
    check_params(tasks=["gqa", "tiny", "textvqa_val"], samples=3)
    with pytest.raises(TypeError, match="tasks must be a list of task names, got the string 'gqa'"):
        check_params(tasks="gqa")
    with pytest.raises(TypeError, match="task must be a non-empty string"):
        check_params(tasks=[["textvqa"]])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_check_params_refuses_cuda_without_a_gpu():
    with pytest.raises(ValueError, match="asks for a CUDA GPU, but this machine has none"):
        check_params(device="cuda", known_methods=METHODS)
