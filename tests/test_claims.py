"""The paper's claims (mrpruner.claims): every verdict stated here by hand, with the numbers of the
transcribed tables behind it; the deciding numbers re-derived from the CSV files directly."""

import math
from importlib import resources

import pandas as pd
import pytest

from mrpruner import claims
from mrpruner.claims import CONTRADICTED as C
from mrpruner.claims import MIXED as M
from mrpruner.claims import SUPPORTED as S
from mrpruner.claims import WITHIN as W

# Test sizes as the chapter states them (GQA test-dev balanced, VQAv2 test-dev, POPE in lmms-eval,
# MMBench dev, TextVQA val, ScienceQA-IMG test).
N = {"GQA": 12578, "VQA 2.0": 107394, "POPE": 9000, "MMB-EN": 4329, "MMB-CN": 4329, "TextVQA": 5000, "SQA-IMG": 2017}
MME_SE = 39.21  # the bound worked by hand in test_mme_bound_by_hand


def _raw() -> pd.DataFrame:
    frames = [pd.read_csv(resources.files("mrpruner.data").joinpath(f"paper_table{n}.csv"), comment="#")
              for n in (1, 2, 3)]
    return pd.concat(frames, ignore_index=True)


RAW = _raw()


def v(table: int, method: str, ratio: float, benchmark: str) -> float:
    row = RAW[(RAW["table"] == table) & (RAW["method"] == method) & (RAW["ratio"] == ratio)
              & (RAW["benchmark"] == benchmark)]
    assert len(row) == 1, (table, method, ratio, benchmark)
    return float(row["value"].iloc[0])


def se1(benchmark: str, score: float) -> float:
    """SE of one score, in points: binomial on the benchmark's size, MME's bound."""
    if benchmark == "MME":
        return MME_SE
    p = score / 100
    return 100 * math.sqrt(p * (1 - p) / N[benchmark])


def se2(benchmark: str, a: float, b: float) -> float:
    return math.hypot(se1(benchmark, a), se1(benchmark, b))


# (as printed, verdict) of every claim, with the numbers that decide it (Tables 1-3 as transcribed).
EXPECTED = {
    # Mean relative drop at 50%: MR-Pruner 0.17 points of % more than G-Prune (G-Prune's MME 1623.27 is
    # 2.2% above the unpruned 1587.72); +-0.60 SE.
    "tradeoff-relative": (C, W),
    # Mean drop in points over 7 benchmarks at 50%: MR-Pruner 0.04 less than G-Prune, +-0.33 SE.
    "tradeoff-points": (S, W),
    # Mean relative drop at 90% over 8 = 4.94%, not 3.6.
    "average-3.6-relative": (C, C),
    # Mean drop in points at 90% over the 7 in percent = 25.50 / 7 = 3.64, prints as 3.6.
    "average-3.6-points": (S, S),
    # All 40 (method, benchmark) scores fall from 70% to 90%; smallest: G-Prune SQA-IMG 72.58 -> 71.74 (0.84 +- 1.41).
    "deteriorates": (S, W),
    # Each method's mean relative drop over the 8 benchmarks grows from 70% to 90% by several SE.
    "deteriorates-mean": (S, S),
    # ToMe above Random in 14 of 24 cells (1 tie: MMB-EN 90% 61.77), only 7 beyond 1.96 SE: not more than 12.
    "tome-beats-random": (S, W),
    # FastV above Random in 18 of 24, 12 beyond SE (not more than 12), 1 below beyond SE (SQA-IMG 90%: -3.02 +- 1.43).
    "fastv-beats-random": (S, W),
    # TextVQA 50%: G-Prune 65.17 > FastV 65.15 (-0.02 +- 0.95).
    "fastv-best-textvqa-50": (C, W),
    # 65.41 - 65.15 = 0.26 points; relative: 0.26 / 65.41 = 0.40%.
    "fastv-0.26-points": (S, S),
    "fastv-0.26-relative": (C, C),
    # MME: G-Prune 1623.27 top at 50%; 1604.86 vs FastV 1600.83 at 70% (4.03 +- 55.45).
    "gprune-best-mme": (S, W),
    # MMB-CN 50%: G-Prune 66.15 vs MR-Pruner 65.98 (0.17 +- 1.02).
    "gprune-best-mmbcn-50": (S, W),
    # MR-Pruner top in 20 of 24 cells (not MME 50/70%, MMB-CN 50%, TextVQA 50%); beyond SE only VQA 2.0 and POPE 90%.
    "mrpruner-best-most": (S, W),
    # SQA-IMG: 73.87 vs G-Prune 73.53 at 50%; 73.62 vs Random 73.53 at 70% (0.09 +- 1.39).
    "mrpruner-best-sqa": (S, W),
    # 90%: MME 1530.87 vs FastV 1488.16 (42.71 +- 55.45); MMB-CN 60.14 vs G-Prune 58.59 (1.55 +- 1.06).
    "mrpruner-best-mme-mmbcn-90": (S, W),
    # 73.87, 73.62, 1530.87, 60.14 are Table 1's cells.
    "main-quoted-numbers": (S, S),
    # Throughput: 2.24 > 2.13 (G-Prune), 2.35 > 2.26, 2.52 > 2.31; no spread known, so none beyond it.
    "mrpruner-throughput": (S, W),
    # Lowest 90% score of FastV/G-Prune/MR-Pruner: FastV on GQA, MMB-EN, TextVQA; not MME (G-Prune 1456.14 < 1488.16).
    "fastv-steepest-unpruned": (S, W),
    # Drop from own 50%: FastV largest on GQA and TextVQA only (MMB-EN: G-Prune 4.64 > 4.59; MME: 167.13 > 115.98).
    # Two of four hold as printed and two fail: "most" read both ways is neither (half is not most).
    "fastv-steepest-own50": (M, W),
    # FastV TextVQA 90% = 53.53, not below 53.
    "fastv-textvqa-below-53": (C, C),
    # G-Prune above FastV in 11 of 12 cells; MME 90%: 1456.14 < 1488.16 (-32.02 +- 55.45).
    "gprune-beats-fastv": (C, W),
    # G-Prune's lead over FastV, 90% minus 50%: +1.78 +- 1.46 (relative, 4 benchmarks); +2.26 +- 0.71 (points, 3).
    "gprune-lead-grows-relative": (S, W),
    "gprune-lead-grows-points": (S, S),
    # MR-Pruner top of the three in 9 of 12 (not MME 50/70%, TextVQA 50%).
    "mrpruner-best-fig4": (C, W),
    # Closest to the unpruned score in 11 of 12 (TextVQA 50%: MR-Pruner 0.65 away, G-Prune 0.24).
    "mrpruner-closest-fig4": (C, W),
    # 90% -> 95%: all 8 drops beyond SE, the smallest G-Prune MME 156.19 +- 55.45.
    "extreme-drops": (S, S),
    # 95%: TextVQA 52.15 - 49.10 = 3.05 +- 1.00; GQA 56.42 - 55.10 = 1.32 +- 0.63 (2.1 SE).
    "extreme-gprune-beats-fastv": (S, S),
    "extreme-quoted-numbers": (S, S),
    # MR-Pruner top at 95% on all four; MME 1312.11 vs 1301.74 and GQA 56.81 vs 56.42 within SE.
    "extreme-mrpruner-best": (S, W),
    # From the unpruned model: MR-Pruner keeps most on all three; MME 82.6% vs FastV 82.0% (+0.65% +- 3.49).
    "extreme-retention-unpruned": (S, W),
    # From own 90%: MME MR-Pruner 218.76 lost vs FastV 186.42, G-Prune 156.19; TextVQA 6.43 vs FastV 4.43.
    "extreme-retention-own90-points": (C, W),
    "extreme-retention-own90-relative": (C, W),
    # Table 3: the row without IR, CR, IA is lowest on all four; [-IR] SQA-IMG 71.36 vs 70.94 (0.42 +- 1.43).
    "ablation-none-worst": (S, W),
    # Full row above [-IR] on all four; SQA-IMG 72.68 - 71.36 = 1.32 +- 1.41.
    "ablation-without-ir": (S, W),
    # Full row above [-CR]: GQA 0.42, POPE 0.86, TextVQA 0.69, SQA-IMG 0.45, none beyond SE.
    "ablation-without-cr": (S, W),
    # Full row above [-IA]: GQA 1.06, POPE 1.50, TextVQA 1.37, SQA-IMG 0.74; GQA 1.06 +- 0.61 within.
    "ablation-without-ia": (S, W),
    # Full row top of Table 3 on all four; closest [-CR] on SQA-IMG (0.45 +- 1.41).
    "ablation-all-best": (S, W),
}


def test_every_claim_has_its_stated_verdict():
    table = claims.table().set_index("id")
    assert list(table.index) == list(EXPECTED)
    for claim_id, (printed, verdict) in EXPECTED.items():
        assert (table.loc[claim_id, "as printed"], table.loc[claim_id, "verdict"]) == (printed, verdict), claim_id
    assert set(table["verdict"]) <= set(claims.VERDICTS)


def test_difference_se_by_hand():
    # SQA-IMG at 50%: MR-Pruner 73.87 vs G-Prune 73.53 on 2,017 questions:
    # 0.7387 * 0.2613 = 0.19302, 0.7353 * 0.2647 = 0.19463; (0.19302 + 0.19463) / 2017 = 1.9219e-4; sqrt = 0.013863.
    assert claims.difference_se(0.7387, 0.7353, 2017) == pytest.approx(0.013863, abs=1e-6)
    assert math.hypot(claims.standard_error("SQA-IMG", 73.87), claims.standard_error("SQA-IMG", 73.53)) == \
        pytest.approx(1.3863, abs=1e-4)


def test_mme_bound_by_hand():
    # Per subtask (0.5 / sqrt(2m) + 0.5 / sqrt(m))^2 = (0.5 / sqrt 2 + 0.5)^2 / m = 0.728553 / m;
    # sum 1/m = 4/30 + 1/147 + 1/170 + 3/200 + 1/20 = 0.211020; 100 * sqrt(0.728553 * 0.211020) = 39.21.
    assert claims.mme_se_bound() == pytest.approx(39.21, abs=0.01)
    assert 2 * sum(claims.MME_IMAGES.values()) == 2114  # + 260 cognition questions = MME's 2,374


@pytest.mark.parametrize("claim_id, margin, se", [
    ("fastv-best-textvqa-50", v(1, "FastV", .5, "TextVQA") - v(1, "G-Prune", .5, "TextVQA"),
     se2("TextVQA", 65.15, 65.17)),
    ("gprune-best-mmbcn-50", v(1, "G-Prune", .5, "MMB-CN") - v(1, "MR-Pruner", .5, "MMB-CN"),
     se2("MMB-CN", 66.15, 65.98)),
    ("gprune-beats-fastv", v(1, "G-Prune", .9, "MME") - v(1, "FastV", .9, "MME"), math.sqrt(2) * MME_SE),
    ("extreme-gprune-beats-fastv", v(2, "G-Prune", .95, "GQA") - v(2, "FastV", .95, "GQA"),
     se2("GQA", 56.42, 55.10)),
    # A drop from its own 90% result: four cells, one SE each.
    ("extreme-retention-own90-points",
     (v(1, "FastV", .9, "TextVQA") - v(2, "FastV", .95, "TextVQA"))
     - (v(1, "MR-Pruner", .9, "TextVQA") - v(2, "MR-Pruner", .95, "TextVQA")),
     math.sqrt(sum(se1("TextVQA", x) ** 2 for x in (53.53, 49.10, 60.90, 54.47)))),
    ("ablation-without-ir", v(3, "MR-Pruner", .9, "SQA-IMG") - v(3, "MR-Pruner [-IR]", .9, "SQA-IMG"),
     se2("SQA-IMG", 72.68, 71.36)),
])
def test_the_weakest_test_re_derived_from_the_csv(claim_id, margin, se):
    row = claims.verdict(claim_id)
    assert row["margin"] == pytest.approx(margin, abs=1e-9)
    assert row["SE"] == pytest.approx(se, rel=1e-3)


def test_counts_re_derived_from_the_csv():
    table1 = RAW[(RAW["table"] == 1) & (RAW["unit"] == "score")]
    wide = table1.pivot_table(index=["method", "ratio"], columns="benchmark", values="value")
    for method, held, beyond in (("ToMe", 14, 7), ("FastV", 18, 12)):
        margins = wide.loc[method] - wide.loc["Random"]
        ses = pd.DataFrame({b: [se2(b, x, y) for x, y in zip(wide.loc[method][b], wide.loc["Random"][b])]
                            for b in wide.columns}, index=margins.index)
        row = claims.verdict(f"{method.lower()}-beats-random")
        assert (row["parts"], row["hold as printed"], row["hold beyond SE"]) == (24, held, beyond)
        assert int((margins > 0).sum().sum()) == held and int((margins >= 1.96 * ses).sum().sum()) == beyond
    mr = wide.xs("MR-Pruner")
    rivals = wide.drop(index=["MR-Pruner", "LLaVA-NeXT-8B"], level="method")
    best = sum(bool((mr.loc[r] > rivals.xs(r, level="ratio")).all(axis=0)[b])
               for r in (.5, .7, .9) for b in wide.columns)
    assert best == 20 == claims.verdict("mrpruner-best-most")["hold as printed"]


def test_both_readings_of_the_abstracts_3_6_percent():
    percent = ["GQA", "VQA 2.0", "POPE", "MMB-EN", "MMB-CN", "TextVQA", "SQA-IMG"]
    base = {b: v(1, "LLaVA-NeXT-8B", 0.0, b) for b in percent + ["MME"]}
    mr = {b: v(1, "MR-Pruner", 0.9, b) for b in base}
    relative = sum(100 * (1 - mr[b] / base[b]) for b in base) / 8
    points = sum(base[b] - mr[b] for b in percent) / 7
    assert relative == pytest.approx(4.938, abs=1e-3) and points == pytest.approx(3.643, abs=1e-3)
    assert claims.verdict("average-3.6-relative")["quantity"] == pytest.approx(relative)
    assert claims.verdict("average-3.6-points")["quantity"] == pytest.approx(points)


def test_every_claim_reads_existing_cells():
    keys = RAW[["table", "method", "ratio", "benchmark"]].values
    cells = {claims.Cell(int(t), m, float(r), b) for t, m, r, b in keys}
    for claim in claims.CLAIMS:
        used = claims.cells(claim)
        assert used and used <= cells, (claim.id, used - cells)
        assert claim.quantifier in ("all", "most") and claim.quote and claim.statement


def test_claim_ids_are_unique_and_every_reading_is_named():
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids))
    rows = pd.DataFrame([(c.quote, c.statement, c.reading) for c in claims.CLAIMS], columns=["q", "s", "reading"])
    for _, same in rows.groupby(["q", "s"]):  # one statement checked several ways: each reading named, once
        if len(same) > 1:
            assert same["reading"].str.len().gt(0).all() and same["reading"].is_unique, same


def test_quantifier_rules_on_a_made_up_table():
    # SQA-IMG (2,017 questions): a - b = +5 (SE 1.57: supported), a - c = +1 (within), b - a = -5 (contradicted).
    cell = {name: claims.Cell(1, name, 0.5, "SQA-IMG") for name in "abc"}
    table = {cell["a"]: 55.0, cell["b"]: 50.0, cell["c"]: 54.0}

    def above(x: str, y: str) -> tuple:
        return (claims.Test(f"{x} > {y}", (claims.Term(cell[x]), claims.Term(cell[y], -1.0))),)

    sup, within, contra = above("a", "b"), above("a", "c"), above("b", "a")
    for parts, quantifier, printed, verdict in (
            ((sup, within, contra), "all", C, C),
            ((sup, within, contra), "most", S, W),  # 2 of 3 hold as printed; beyond SE one each way, one undecided
            ((sup, contra), "most", M, M),  # half is not most, in either direction
            ((within, within), "most", S, W),
            ((sup, sup, within), "most", S, S),  # 2 of 3 beyond SE: more than half
            ((sup, within), "all", S, W)):
        row = claims.verdict(claims.Claim("made-up", "none", "q", "s", parts, quantifier), table=table)
        assert (row["as printed"], row["verdict"]) == (printed, verdict), (quantifier, len(parts))
    assert claims.details(claims.Claim("made-up", "none", "q", "s", (sup,)), table=table)["se"].iloc[0] == \
        pytest.approx(100 * claims.difference_se(0.55, 0.50, 2017))


def test_one_rule_decides_every_verdict_whatever_the_spread():
    """Printed numbers have SE 0 (their sign decides), an unknown spread (throughput) is never
    beyond sampling error however large the margin, and the chapter prints the rule the code applies."""
    cell = {name: claims.Cell(1, name, 0.5, b) for name, b in (("a", "Throughput"), ("b", "Throughput"),
                                                              ("c", "GQA"))}
    table = {cell["a"]: 9.0, cell["b"]: 1.0, cell["c"]: 60.0}
    gap = claims.check_test(claims.Test("a > b", (claims.Term(cell["a"]), claims.Term(cell["b"], -1.0))), table)
    assert gap["margin"] == 8.0 and math.isnan(gap["se"]) and (gap["as printed"], gap["state"]) == (S, W)
    for op, value, state in ((">", 59.99, S), ("<", 59.99, C)):
        exact = claims.check_test(claims.Test("c vs", (claims.Term(cell["c"]),), op, value, exact=True), table)
        assert exact["se"] == 0.0 and math.isnan(exact["z"]) and exact["state"] == exact["as printed"] == state
    verdicts = claims.table()
    assert not ((verdicts["SE"].isna()) & (verdicts["verdict"] != W)).any()  # no verdict without a spread
    text = claims.rule_text(2.5)
    assert "\u00b12.5 standard errors" in text and "throughput" in text and "SE\nset to 0" not in text and "SE set to 0" in text
    assert all(v in text for v in claims.VERDICTS)


def test_bad_input_names_the_argument_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"benchmark must be one of .*'GQA'.*got 'FOO'"):
        claims.standard_error("FOO", 50.0)
    with pytest.raises(ValueError, match=r"value must be in \[0.0, 100.0\]"):
        claims.standard_error("GQA", 150.0)
    with pytest.raises(ValueError, match=r"z must be in"):
        claims.table(z=-1.0)
    with pytest.raises(TypeError, match=r"z must be a finite real number"):
        claims.table(z="1.96")
    with pytest.raises(ValueError, match=r"claim must be a Claim or one of the ids .*got 'nope'"):
        claims.details("nope")
    with pytest.raises(ValueError, match=r"kind must be one of"):
        claims.Term(claims.Cell(1, "FastV", 0.5, "GQA"), kind="ratio")
    with pytest.raises(ValueError, match=r"op must be one of"):
        claims.Test("x", (), op=">=")
    with pytest.raises(ValueError, match=r"quantifier must be one of \('all', 'most'\), got 'some'"):
        claims.Claim("x", "s", "q", "t", (), "some")
    with pytest.raises(KeyError, match="do not hold"):
        claims.check_test(claims.Test("x", (claims.Term(claims.Cell(1, "FastV", 0.6, "GQA")),)), claims.values())


def test_a_larger_threshold_never_adds_support():
    loose, strict = claims.table(1.0).set_index("id"), claims.table(3.0).set_index("id")
    assert (strict["as printed"] == loose["as printed"]).all()
    assert ((strict["verdict"] != S) | (loose["verdict"] == S)).all()
    assert (strict["verdict"] == W).sum() >= (loose["verdict"] == W).sum()


def test_sizes_table_names_a_source_for_every_benchmark():
    sizes = claims.sizes()
    assert list(sizes.index) == ["GQA", "VQA 2.0", "MME", "POPE", "MMB-EN", "MMB-CN", "TextVQA", "SQA-IMG"]
    assert sizes["source"].str.len().gt(20).all()
    assert sizes.loc["SQA-IMG", "SE of a difference (points)"] == pytest.approx(se2("SQA-IMG", 73.43, 73.43))


def test_the_claims_file_is_read_back_exactly_and_a_bad_entry_is_named(tmp_path):
    import yaml

    shipped = yaml.safe_load(resources.files("mrpruner").joinpath(claims.CLAIMS_FILE).read_text())
    assert claims.load() == (claims.CLAIMS, claims.NOT_CHECKED)
    assert [c.id for c in claims.CLAIMS] == [entry["id"] for entry in shipped["claims"]]
    best = next(c for c in claims.CLAIMS if c.id == "fastv-best-textvqa-50")  # one part: FastV above the 4 others
    assert [t.label for t in best.parts[0]] == [f"FastV > {m}, TextVQA 50%" for m in ("Random", "ToMe", "G-Prune",
                                                                                        "MR-Pruner")]

    def loaded(change):
        data = yaml.safe_load(yaml.safe_dump(shipped))
        change(data["claims"][0])
        (tmp_path / "claims.yaml").write_text(yaml.safe_dump(data))
        return claims.load(tmp_path / "claims.yaml")

    for change, match in [(lambda c: c.update(verdict="yes"), r"claim 'tradeoff-relative': a claim takes the keys"),
                          (lambda c: c.update(section="intro"), r"section must be one of"),
                          (lambda c: c.update(parts={"biggest": {}}), r"parts must name one check of"),
                          (lambda c: c["parts"]["tradeoff"].update(benchmarks="table9"), r"benchmarks must be a list or one of the sets"),
                          (lambda c: c["parts"]["tradeoff"].update(ratio=0.5), r"check 'tradeoff' takes \['kind', 'benchmarks'\]")]:
        with pytest.raises(ValueError, match=match):
            loaded(change)
    with pytest.raises(ValueError, match="claim ids must be unique"):
        loaded(lambda c: c.update(id="tradeoff-points"))
