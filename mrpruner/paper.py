"""The paper's reported numbers (Tables 1-3, transcribed in mrpruner/data/paper_table*.csv) as
tidy DataFrames, and their side-by-side comparison with numbers measured here, each number
labelled with where it comes from."""

from __future__ import annotations

from importlib import resources

import pandas as pd

CITATION = ("S. Han, H. Lee, S. Park, J.-R. Lee, S. Lim. MR-Pruner: Training-free Multi-resolution Visual "
            "Token Pruning for Multi-modal Large Language Models. WACV 2026.")
TABLES = (1, 2, 3)
COLUMNS = ["table", "method", "ratio", "benchmark", "value", "unit"]
# The paper's row labels and the mrpruner method names measured results use.
METHODS = {"LLaVA-NeXT-8B": "none", "Random": "random", "ToMe": "tome", "FastV": "fastv",
           "G-Prune": "gprune", "MR-Pruner": "mrpruner"}
LABELS = {method: label for label, method in METHODS.items()}
# Table 3: the components each row removes -> mr_prune options (IR: intra, CR: cross, IA: adaptive).
ABLATIONS = {
    "MR-Pruner [-IR -CR -IA]": {"intra": False, "cross": False, "adaptive": False},
    "MR-Pruner [-IR]": {"intra": False, "cross": True, "adaptive": True},
    "MR-Pruner [-CR]": {"intra": True, "cross": False, "adaptive": True},
    "MR-Pruner [-IA]": {"intra": True, "cross": True, "adaptive": False},
    "MR-Pruner": {"intra": True, "cross": True, "adaptive": True},
}
NOT_MEASURED = "not measured"


def reported(table: int | None = None) -> pd.DataFrame:
    """The numbers the paper reports, one row per (table, method, ratio, benchmark), in the
    paper's order; `table` selects one of Tables 1-3 (None: all). Adds a provenance column."""
    if table is not None and table not in TABLES:
        raise ValueError(f"table must be one of {TABLES} or None, got {table!r}")
    frames = []
    for number in TABLES if table is None else (table,):
        with resources.files("mrpruner.data").joinpath(f"paper_table{number}.csv").open(encoding="utf-8") as f:
            frame = pd.read_csv(f, comment="#")
        if list(frame.columns) != COLUMNS:
            raise ValueError(f"paper_table{number}.csv has columns {list(frame.columns)}, expected {COLUMNS}")
        frames.append(frame.assign(provenance=provenance(number)))
    return pd.concat(frames, ignore_index=True)


def provenance(table: int) -> str:
    """The label of a number the paper reports in `table`."""
    return f"reported in the paper, Table {table}"


def wide(frame: pd.DataFrame, values: str = "value") -> pd.DataFrame:
    """One row per (method, ratio), one column per benchmark, both in the order they first appear."""
    rows, benchmarks = _order(frame)
    table = frame.pivot_table(index=["method", "ratio"], columns="benchmark", values=values,
                              aggfunc="first", sort=False)
    return table.reindex(index=rows, columns=benchmarks)


def _order(frame: pd.DataFrame) -> tuple[pd.MultiIndex, list[str]]:
    rows = list(dict.fromkeys(zip(frame["method"], frame["ratio"])))
    return pd.MultiIndex.from_tuples(rows, names=["method", "ratio"]), list(dict.fromkeys(frame["benchmark"]))


def speedups(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1's printed throughput speed-ups beside throughput / throughput of the unpruned model."""
    frame = reported(1) if frame is None else frame
    throughput = frame[frame["benchmark"] == "Throughput"].set_index(["method", "ratio"])["value"]
    printed = frame[frame["benchmark"] == "Throughput speed-up"].set_index(["method", "ratio"])["value"]
    base = throughput.loc[("LLaVA-NeXT-8B", 0.0)]
    return pd.DataFrame({"throughput": throughput, "printed": printed, "computed": throughput / base}).dropna()


def compare(reported_frame: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Reported and measured numbers side by side, keyed by (method, ratio, benchmark).

    `measured` has columns method, ratio, benchmark, value and provenance (method as the paper
    labels it). Every reported cell is kept; a cell with no measurement has measured = NaN and
    provenance "not measured"; gap = measured - reported where both exist.
    """
    missing = {"method", "ratio", "benchmark", "value", "provenance"} - set(measured.columns)
    if missing:
        raise ValueError(f"measured lacks column(s) {sorted(missing)}")
    keys = ["method", "ratio", "benchmark"]
    left = reported_frame[keys + ["value", "unit"]].rename(columns={"value": "reported"})
    right = measured[keys + ["value", "provenance"]].rename(columns={"value": "measured"})
    right = right.assign(ratio=right["ratio"].astype(float))
    twice = right[right.duplicated(keys, keep=False)]
    if len(twice):
        raise ValueError(f"measured holds more than one value for {sorted(set(map(tuple, twice[keys].values)))}: "
                         "compare one run per (method, ratio, benchmark)")
    merged = left.assign(ratio=left["ratio"].astype(float)).merge(right, on=keys, how="left")
    merged["gap"] = merged["measured"] - merged["reported"]
    merged["provenance"] = merged["provenance"].fillna(NOT_MEASURED)
    return merged


def side_by_side(comparison: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """`compare`'s output as a display table: one row per (method, ratio); per benchmark the
    reported number, the measured one (or "not measured") and the gap."""
    def show(x: float) -> str:
        return NOT_MEASURED if pd.isna(x) else f"{x:.{digits}f}"

    sources = ["paper", "measured", "gap"]
    cells = comparison.assign(paper=comparison["reported"].map(show), measured=comparison["measured"].map(show),
                              gap=comparison["gap"].map(lambda x: "" if pd.isna(x) else f"{x:+.{digits}f}"))
    rows, benchmarks = _order(comparison)
    table = cells.pivot_table(index=["method", "ratio"], columns="benchmark", values=sources,
                              aggfunc="first", sort=False)
    columns = pd.MultiIndex.from_product([benchmarks, sources], names=["benchmark", ""])
    return table.swaplevel(axis=1).reindex(index=rows, columns=columns)


def measured_rows(comparison: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """`side_by_side` of only the (method, ratio) rows and benchmarks that hold a measured number:
    what a page shows beside the paper (empty when nothing was measured; the page says so in a
    sentence rather than a table of "not measured")."""
    measured = comparison[comparison["measured"].notna()]
    if measured.empty:
        return pd.DataFrame()
    rows = comparison.set_index(["method", "ratio"]).index.isin(measured.set_index(["method", "ratio"]).index)
    shown = comparison[rows & comparison["benchmark"].isin(measured["benchmark"])]
    return side_by_side(shown, digits)


def degradation(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (method, ratio) of Table 1 (or another frame holding its unpruned row): the mean drop
    from the unpruned model relative to it over the eight benchmarks (%), and the mean drop in
    points over the benchmarks scored in percent (all but MME, a 0-2000 score)."""
    frame = reported(1) if frame is None else frame
    scores = wide(frame[frame["unit"] == "score"])
    base = scores.loc[("LLaVA-NeXT-8B", 0.0)]
    percent = [b for b in scores.columns if b != "MME"]
    return pd.DataFrame({"relative drop (%)": (100 * (1 - scores / base)).mean(axis=1),
                         "drop in points, without MME": (base[percent] - scores[percent]).mean(axis=1)})


def differences(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each number of a `long_form` frame minus the number of the `reference` method (e.g. the
    unpruned model, or Table 3's full MR-Pruner) on the same benchmark from the same source: a
    measured number minus a measured one, a reported number minus a reported one. The reference's
    own rows, and rows whose source has no reference number for their benchmark, are left out."""
    keys = ["benchmark", "source"]
    base = frame[frame["method"] == reference]
    if base.duplicated(keys).any():
        raise ValueError(f"reference {reference!r} has more than one number per benchmark and source; keep one ratio")
    if base.empty:
        raise ValueError(f"reference {reference!r} is not a method of the frame; it has {sorted(set(frame['method']))}")
    rows = frame[frame["method"] != reference].merge(base[keys + ["value"]].rename(columns={"value": "reference"}),
                                                     on=keys, how="inner")
    return rows.assign(difference=rows["value"] - rows["reference"])


def long_form(comparison: pd.DataFrame) -> pd.DataFrame:
    """`compare`'s output with one row per number: method, ratio, benchmark, source ("reported in
    the paper" or "measured here") and value; unmeasured cells have no "measured here" row."""
    frame = comparison.melt(id_vars=["method", "ratio", "benchmark"], value_vars=["reported", "measured"],
                            var_name="source", value_name="value").dropna(subset=["value"])
    return frame.assign(source=frame["source"].map({"reported": "reported in the paper",
                                                    "measured": "measured here"}))
