"""The comparative sentences of the paper's results (abstract, Section 4.3), each written as a
statement over the transcribed Tables 1-3 (mrpruner.paper) and checked against them, with a
verdict that accounts for the benchmarks' sampling error. The sentences and their statements are
data (`CLAIMS_FILE`, mrpruner/data/claims.yaml); this module builds their tests and checks them.

A statement is a set of tests ("this cell is above that one", "this drop is smaller"), grouped in
parts and combined by "all" or "most" (more than half of the parts). A test's margin comes with
a standard error from each benchmark's test-set size (binomial, cells taken as independent);
its verdict follows the book's one rule (`mrpruner.rule`; in words for claims: `rule_text`).
Where the sentence can be read two ways (relative or absolute drop; drop from the unpruned model
or from the method's own 90% result; every cell or the mean), each reading is its own row.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mrpruner import benchmarks, paper
from mrpruner.checks import check_real
from mrpruner.rule import ABOVE, BELOW, TIE, direction, quantified

SUPPORTED, CONTRADICTED, WITHIN = "supported", "contradicted", "within sampling error"
MIXED = "mixed"  # "most" of the parts when exactly half hold and half fail: neither side is most
VERDICTS = (SUPPORTED, CONTRADICTED, WITHIN, MIXED)
Z95 = 1.96  # two-sided 95% interval, in standard errors


class Size(NamedTuple):
    """A benchmark's number of test questions and where that number comes from."""

    n: int
    source: str


# The test sets behind Table 1's columns (lmms-eval task names as mrpruner.benchmarks runs them).
# For VQA accuracy (VQA 2.0, TextVQA: a score in [0, 1] per question) the binomial SE is an upper bound.
SIZES = {
    "GQA": Size(12_578, "GQA test-dev balanced, 12,578 questions (lmms-eval task gqa)"),
    "VQA 2.0": Size(107_394, "VQAv2 test-dev, 107,394 questions; the paper names no split, and the val split "
                             "this repository runs (vqav2_val, 214,354) would give a smaller SE"),
    "POPE": Size(9_000, "POPE as lmms-eval's task pope runs it, 9,000 yes/no questions (3 splits x 3,000); "
                        "the column is F1, which a binomial SE only approximates"),
    "MMB-EN": Size(4_329, "MMBench-EN dev, 4,329 questions (lmms-eval task mmbench_en_dev)"),
    "MMB-CN": Size(4_329, "MMBench-CN dev, 4,329 questions (lmms-eval task mmbench_cn_dev)"),
    "TextVQA": Size(5_000, "TextVQA val, 5,000 questions (lmms-eval task textvqa_val)"),
    "SQA-IMG": Size(2_017, "ScienceQA test, the 2,017 questions with an image (lmms-eval task scienceqa_img)"),
}
# MME perception (the column: a score out of 2000, mrpruner.benchmarks): 10 subtasks, each scored
# 100 x (accuracy over its 2 questions per image + accuracy+ over images with both right).
MME_IMAGES = {"existence": 30, "count": 30, "position": 30, "color": 30, "posters": 147, "celebrity": 170,
              "scene": 200, "landmark": 200, "artwork": 200, "OCR": 20}


def mme_se_bound() -> float:
    """An upper bound on the SE of one MME perception score: per subtask, SE(acc) + SE(acc+) at
    p = 0.5 (the variance of a sum is at most the square of the summed SEs), subtasks independent."""
    return 100 * math.sqrt(sum((0.5 / math.sqrt(2 * m) + 0.5 / math.sqrt(m)) ** 2 for m in MME_IMAGES.values()))


def binomial_se(p: float, n: int) -> float:
    """sqrt(p (1 - p) / n): the SE of an accuracy p (a fraction) on n questions."""
    return math.sqrt(p * (1 - p) / n)


def standard_error(benchmark: str, value: float) -> float:
    """The SE of one reported score: 100 sqrt(p (1 - p) / n) with p = value / 100 for a benchmark
    scored in percent, the bound of `mme_se_bound` for MME, NaN for throughput (no spread known)."""
    if benchmark == "Throughput":
        return math.nan
    if benchmark == "MME":
        return mme_se_bound()
    if benchmark not in SIZES:
        raise ValueError(f"benchmark must be one of {[*SIZES, 'MME', 'Throughput']}, got {benchmark!r}")
    return 100 * binomial_se(check_real("value", value, 0.0, 100.0) / 100, SIZES[benchmark].n)


def difference_se(p1: float, p2: float, n: int) -> float:
    """The SE of p1 - p2, two accuracies (fractions) on n questions each, taken as independent:
    sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n). Paired runs on the same questions are positively
    correlated, so this overstates the SE of their difference: a conservative choice."""
    return math.hypot(binomial_se(p1, n), binomial_se(p2, n))


# --- statements -------------------------------------------------------------------------------

class Cell(NamedTuple):
    """One number of the paper's tables."""

    table: int
    method: str
    ratio: float
    benchmark: str


KINDS = ("value", "drop", "relative drop", "distance")


@dataclass(frozen=True)
class Term:
    """coef x one of: the cell's value; its drop below `ref` (points); its drop below `ref` in %
    of `ref`; its distance |ref - cell|."""

    cell: Cell
    coef: float = 1.0
    kind: str = "value"
    ref: Cell | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if (self.ref is None) != (self.kind == "value"):
            raise ValueError(f"kind {self.kind!r} {'needs' if self.ref is None else 'takes no'} ref")

    def evaluate(self, values: dict[Cell, float]) -> tuple[float, dict[Cell, float]]:
        """The term's value and its derivative by each cell (for the delta method)."""
        x = values[self.cell]
        if self.kind == "value":
            return self.coef * x, {self.cell: self.coef}
        r = values[self.ref]
        if self.kind == "drop":
            q, dx, dr = r - x, -1.0, 1.0
        elif self.kind == "relative drop":
            q, dx, dr = 100 * (1 - x / r), -100 / r, 100 * x / r**2
        else:
            q, dx, dr = abs(r - x), -math.copysign(1.0, r - x), math.copysign(1.0, r - x)
        return self.coef * q, {self.cell: self.coef * dx, self.ref: self.coef * dr}


OPS = (">", "<", "=")


@dataclass(frozen=True)
class Test:
    """sum(terms) > value, < value, or = value (the value the text prints, to its last digit)."""

    __test__ = False  # not a pytest test class
    label: str
    terms: tuple[Term, ...]
    op: str = ">"
    value: float = 0.0
    decimals: int = 2  # of a printed value (op "="): it holds within half a unit of its last digit
    exact: bool = False  # a statement about the printed numbers themselves: no sampling error (always for "=")

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")


QUANTIFIERS = ("all", "most")


@dataclass(frozen=True)
class Claim:
    """A sentence of the paper, where it is, and the statement it is checked as: `parts`, each
    holding when all its tests hold, combined by `quantifier` ("all", or "most": more than half)."""

    id: str
    section: str
    quote: str
    statement: str
    parts: tuple[tuple[Test, ...], ...]
    quantifier: str = "all"
    reading: str = ""
    note: str = ""

    def __post_init__(self):
        if self.quantifier not in QUANTIFIERS:
            raise ValueError(f"quantifier must be one of {QUANTIFIERS}, got {self.quantifier!r}")


# --- the claims, read from mrpruner/data/claims.yaml ------------------------------------------

UNPRUNED = "LLaVA-NeXT-8B"
TABLE1 = tuple(b.paper_name for b in benchmarks.BENCHMARKS.values())
FIGURE4 = tuple(benchmarks.BENCHMARKS[k].paper_name for k in benchmarks.TABLE2)  # as the FLOPs chapter reads Fig. 4
TABLE3_FULL = "MR-Pruner"
# The sets a claim's lists of methods, ratios and benchmarks may name instead of their members.
SETS = {"pruners": ("Random", "ToMe", "FastV", "G-Prune", "MR-Pruner"),  # Table 1's pruning methods
        "figure4 methods": ("FastV", "G-Prune", "MR-Pruner"), "ratios": (0.5, 0.7, 0.9), "table1": TABLE1,
        "percent": tuple(b for b in TABLE1 if b != "MME"),  # scored in percent: points can be averaged
        "figure4": FIGURE4, "figure4 percent": tuple(b for b in FIGURE4 if b != "MME"),
        "table3": tuple(benchmarks.BENCHMARKS[k].paper_name for k in benchmarks.TABLE3)}
_LISTS = ("methods", "rivals", "ratios", "benchmarks")  # the arguments of a check that take a set's name
CLAIMS_FILE = "data/claims.yaml"

Parts = tuple[tuple[Test, ...], ...]


def _c(method: str, ratio: float, benchmark: str) -> Cell:
    table = 2 if ratio == 0.95 else 3 if method in paper.ABLATIONS and method != TABLE3_FULL else 1
    return Cell(table, method, ratio, benchmark)


def _base(benchmark: str) -> Cell:
    return Cell(1, UNPRUNED, 0.0, benchmark)


def _above(a: Cell, b: Cell, label: str = "") -> Test:
    """a's value above b's."""
    return Test(label or f"{a.method} > {b.method}, {b.benchmark} {b.ratio:.0%}", (Term(a), Term(b, -1.0)))


def _mean_drop(method: str, ratio: float, benchmarks, kind: str, coef: float = 1.0, ref_ratio=None) -> tuple[Term, ...]:
    """Terms of the mean drop of method at ratio over benchmarks, from the unpruned model (or from
    its own score at ref_ratio)."""
    ref = (lambda b: _c(method, ref_ratio, b)) if ref_ratio is not None else _base
    return tuple(Term(_c(method, ratio, b), coef / len(benchmarks), kind, ref(b)) for b in benchmarks)


def _smaller_drop(method: str, rival: str, ratio: float, benchmarks, kind: str, ref_ratio=None) -> Test:
    """method's mean drop below rival's (rival's minus method's > 0)."""
    terms = (_mean_drop(rival, ratio, benchmarks, kind, 1.0, ref_ratio)
             + _mean_drop(method, ratio, benchmarks, kind, -1.0, ref_ratio))
    where = benchmarks[0] if len(benchmarks) == 1 else f"mean of {len(benchmarks)}"
    return Test(f"{method} drops less than {rival}, {where} {ratio:.0%}", terms)


# The checks a claim's parts are built by (CLAIMS_FILE names one per claim, with its arguments).

def _tradeoff(kind: str, benchmarks) -> Parts:
    """Per ratio, MR-Pruner's mean drop smaller than each other pruning method's."""
    return tuple(tuple(_smaller_drop("MR-Pruner", r, ratio, benchmarks, kind) for r in SETS["pruners"] if r != "MR-Pruner")
                 for ratio in SETS["ratios"])


def _average_drop(kind: str, benchmarks, printed: float, decimals: int, label: str) -> Parts:
    """MR-Pruner's mean drop at 90% equals the printed number."""
    return ((Test(label, _mean_drop("MR-Pruner", 0.9, benchmarks, kind), "=", printed, decimals),),)


def _falls(methods, benchmarks, start: float, end: float) -> Parts:
    """Per method and benchmark, the score at `start` above the one at `end`."""
    return tuple((_above(_c(m, start, b), _c(m, end, b), f"{m} {b}: {start:.0%} > {end:.0%}"),)
                 for m in methods for b in benchmarks)


def _mean_drop_grows(methods, benchmarks, kind: str, start: float, end: float) -> Parts:
    """Per method, its mean drop larger at `end` than at `start`."""
    return tuple((Test(f"{m}: mean drop {end:.0%} > {start:.0%}", _mean_drop(m, end, benchmarks, kind)
                       + _mean_drop(m, start, benchmarks, kind, -1.0)),) for m in methods)


def _above_each(method: str, rival: str, ratios, benchmarks) -> Parts:
    """Per (ratio, benchmark) cell, method above rival."""
    return tuple((_above(_c(method, r, b), _c(rival, r, b)),) for r in ratios for b in benchmarks)


def _best(method: str, ratios, benchmarks, rivals=SETS["pruners"]) -> Parts:
    """Per (ratio, benchmark) cell, method above every other of `rivals`."""
    return tuple(tuple(_above(_c(method, r, b), _c(rival, r, b)) for rival in rivals if rival != method)
                 for r in ratios for b in benchmarks)


def _printed(label: str, cell, op: str, value: float, kind: str = "value", exact: bool = False) -> Parts:
    """One cell's value (or its `kind` of drop from the unpruned model) against a printed number."""
    term = Term(_c(*cell)) if kind == "value" else Term(_c(*cell), 1.0, kind, _base(cell[2]))
    return ((Test(label, (term,), op, value, exact=exact),),)


def _quoted(cells) -> Parts:
    """Each [method, ratio, benchmark, value] the text quotes equals the table's."""
    return tuple((Test(f"{m} {b} {r:.0%} = {v:.2f}", (Term(_c(m, r, b)),), "=", v),) for m, r, b, v in cells)


def _smaller_drops(methods, rivals, ratio: float, benchmarks, kind: str, reference: float | None = None) -> Parts:
    """Per benchmark, each method's drop at `ratio` smaller than each rival's, from the unpruned
    model (or from the method's own score at `reference`)."""
    return tuple(tuple(_smaller_drop(m, r, ratio, (b,), kind, reference) for m in methods for r in rivals)
                 for b in benchmarks)


def _lead_grows(kind: str, benchmarks) -> Parts:
    """G-Prune's mean lead over FastV (FastV's drop minus G-Prune's) larger at 90% than at 50%."""
    def lead(ratio: float, sign: float) -> tuple[Term, ...]:
        return (_mean_drop("FastV", ratio, benchmarks, kind, sign)
                + _mean_drop("G-Prune", ratio, benchmarks, kind, -sign))

    return ((Test("lead at 90% > lead at 50%", lead(0.9, 1.0) + lead(0.5, -1.0)),),)


def _closer(method: str, rivals, ratios, benchmarks) -> Parts:
    """Per (ratio, benchmark) cell, method's distance to the unpruned score smaller than each rival's."""
    return tuple(tuple(Test(f"{method} closer than {r}, {b} {ratio:.0%}",
                            (Term(_c(r, ratio, b), 1.0, "distance", _base(b)),
                             Term(_c(method, ratio, b), -1.0, "distance", _base(b))))
                       for r in rivals) for ratio in ratios for b in benchmarks)


def _table3_above(rows, others) -> Parts:
    """Per Table 3 benchmark, each of Table 3's `rows` above each of `others` ("*": every row but the other side's)."""
    rows = [r for r in paper.ABLATIONS if r not in others] if rows == "*" else rows
    others = [r for r in paper.ABLATIONS if r not in rows] if others == "*" else others
    return tuple(tuple(_above(Cell(3, row, 0.9, b), Cell(3, other, 0.9, b), f"{row} > {other}, {b}")
                       for row in rows for other in others) for b in SETS["table3"])


CHECKS = {"tradeoff": _tradeoff, "average_drop": _average_drop, "falls": _falls, "mean_drop_grows": _mean_drop_grows,
          "above": _above_each, "best": _best, "printed": _printed, "quoted": _quoted, "smaller_drop": _smaller_drops,
          "lead_grows": _lead_grows, "closer": _closer, "table3_above": _table3_above}
_FIELDS = {"id", "section", "quote", "statement", "parts", "quantifier", "reading", "note"}


def _parts(spec: Any, where: str) -> Parts:
    """A claim's parts from its `parts` entry: {check name: its arguments}."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in CHECKS:
        raise ValueError(f"{where}: parts must name one check of {sorted(CHECKS)} with its arguments, got {spec!r}")
    (name, args), = spec.items()
    check = CHECKS[name]
    if isinstance(args, list):
        return check(args)
    if not isinstance(args, dict):
        raise ValueError(f"{where}: check {name!r} takes a mapping of arguments, got {args!r}")
    for key in _LISTS:
        value = args.get(key)
        if isinstance(value, str) and value not in SETS:
            raise ValueError(f"{where}: {key} must be a list or one of the sets {sorted(SETS)}, got {value!r}")
        if value is not None:
            args = {**args, key: SETS[value] if isinstance(value, str) else tuple(value)}
    try:
        inspect.signature(check).bind(**args)
    except TypeError as error:
        raise ValueError(f"{where}: check {name!r} takes {list(inspect.signature(check).parameters)}: {error}") from None
    return check(**args)


def load(path: str | Path | None = None) -> tuple[tuple[Claim, ...], tuple[tuple[str, str, str], ...]]:
    """CLAIMS and NOT_CHECKED from the YAML file `path` (None: the shipped CLAIMS_FILE), each entry
    checked: known keys and sections, one check per claim with the arguments it takes, ids unique."""
    import yaml

    path = resources.files("mrpruner").joinpath(CLAIMS_FILE) if path is None else Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    sections = data["sections"]

    def section(entry: dict, where: str) -> str:
        if entry.get("section") not in sections:
            raise ValueError(f"{where}: section must be one of {sorted(sections)}, got {entry.get('section')!r}")
        return sections[entry["section"]]

    found = []
    for i, entry in enumerate(data["claims"]):
        where = f"{path}, claim {entry.get('id', i)!r}"
        if set(entry) - _FIELDS or not {"id", "section", "quote", "statement", "parts"} <= set(entry):
            raise ValueError(f"{where}: a claim takes the keys {sorted(_FIELDS)} (id, section, quote, statement and "
                             f"parts required), got {sorted(entry)}")
        found.append(Claim(entry["id"], section(entry, where), entry["quote"], entry["statement"],
                           _parts(entry["parts"], where), entry.get("quantifier", "all"), entry.get("reading", ""),
                           entry.get("note", "")))
    ids = [c.id for c in found]
    if len(set(ids)) < len(ids):
        raise ValueError(f"{path}: claim ids must be unique, repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    skipped = tuple((section(e, f"{path}, not_checked {i}"), e["quote"], e["why"])
                    for i, e in enumerate(data["not_checked"]))
    return tuple(found), skipped


# The claims, and sentences of the same sections that the tables cannot decide (section, quote, why).
CLAIMS, NOT_CHECKED = load()


# --- checking -----------------------------------------------------------------------------------

def cells(claim: Claim) -> set[Cell]:
    """Every table cell a claim's tests read."""
    return {c for part in claim.parts for test in part for term in test.terms for c in (term.cell, term.ref)
            if c is not None}


def values(frame: pd.DataFrame | None = None) -> dict[Cell, float]:
    """The paper's Tables 1-3 (`paper.reported()`, or `frame` in its columns) as {Cell: value}."""
    frame = paper.reported() if frame is None else frame
    return {Cell(int(t), m, float(r), b): float(v)
            for t, m, r, b, v in frame[["table", "method", "ratio", "benchmark", "value"]].itertuples(index=False)}


def rule_text(z: float = Z95) -> str:
    """How the book's rule (`mrpruner.rule`) decides a claim, in words, for the claims chapter."""
    return (f"A test's difference comes with the interval \u00b1{z:g} standard errors of the benchmarks' test sets, and "
            f"the book's rule reads it: *{SUPPORTED}* when the tested direction holds (above, or below for a "
            f"\"below\" claim), *{CONTRADICTED}* when the other does, *{WITHIN}* on a tie. A claim that a number "
            "*equals* a printed one holds on a tie within half a unit of the printed number's last digit (plus the "
            "rounding of the inputs it is computed from) and is contradicted outside it. Printed numbers have no "
            "sampling error (the interval is a point); throughput has no spread printed, so none of its margins "
            f"is beyond it (*{WITHIN}*). A part is {CONTRADICTED} when any of its tests is, {SUPPORTED} when all "
            f"are; a claim combines its parts by its quantifier: **all**: {CONTRADICTED} when any part is, "
            f"{SUPPORTED} when every part is; **most**, read the same way both ways: {SUPPORTED} when more than "
            f"half are, {CONTRADICTED} when more than half are, *{MIXED}* when exactly half hold "
            f"and half fail, else {WITHIN}. *As printed* applies the same rule with every SE set to 0.")


_STATE = {">": {ABOVE: SUPPORTED, BELOW: CONTRADICTED, TIE: WITHIN},
          "<": {ABOVE: CONTRADICTED, BELOW: SUPPORTED, TIE: WITHIN},
          "=": {ABOVE: CONTRADICTED, BELOW: CONTRADICTED, TIE: SUPPORTED}}


def _state(op: str, difference: float, se: float, z: float, tolerance: float = 0.0) -> str:
    """One test by the book's rule: the direction of `difference` (quantity - value) with its
    interval +- z SE (a point for SE 0; no direction for SE NaN), as a claim's state."""
    low, high = (math.nan, math.nan) if math.isnan(se) else (difference - z * se, difference + z * se)
    return _STATE[op][direction(low, high, tolerance)]


def check_test(test: Test, table: dict[Cell, float], z: float = Z95) -> dict:
    """One test against the tables: its quantity, margin (> 0: holds as printed), SE of the margin
    (delta method over its cells; 0 for a printed value, NaN where a cell's spread is unknown:
    throughput), margin / SE (NaN without a positive SE), its state as printed and by the rule."""
    quantity, gradient = 0.0, {}
    for term in test.terms:
        missing = [c for c in (term.cell, term.ref) if c is not None and c not in table]
        if missing:
            raise KeyError(f"test {test.label!r} reads {missing}, which the paper's tables do not hold")
        q, grad = term.evaluate(table)
        quantity += q
        for cell, g in grad.items():
            gradient[cell] = gradient.get(cell, 0.0) + g
    difference, tolerance = quantity - test.value, 0.0
    if test.op == "=":
        tolerance = 0.5 * 10 ** -test.decimals + 0.005 * sum(map(abs, gradient.values()))  # inputs print 2 decimals
        margin, se = tolerance - abs(difference), 0.0
    else:
        margin = difference if test.op == ">" else -difference
        se = 0.0 if test.exact else math.sqrt(
            sum(g**2 * standard_error(c.benchmark, table[c]) ** 2 for c, g in gradient.items() if g))
    return {"test": test.label, "quantity": quantity, "margin": margin, "se": se, "tolerance": tolerance,
            "z": margin / se if se > 0 else math.nan, "as printed": _state(test.op, difference, 0.0, z, tolerance),
            "state": _state(test.op, difference, se, z, tolerance)}


def _combine(states: list[str], quantifier: str) -> str:
    """The verdict of parts combined by "all" (every part) or "most" (more than half, read the same
    way in both directions: `mrpruner.rule.quantified`), as `rule_text` says."""
    if quantifier == "all":
        return CONTRADICTED if CONTRADICTED in states else SUPPORTED if all(s == SUPPORTED for s in states) else WITHIN
    found = quantified([ABOVE if s == SUPPORTED else BELOW if s == CONTRADICTED else TIE for s in states])
    if found != "mixed":
        return {ABOVE: SUPPORTED, BELOW: CONTRADICTED}[found]
    return WITHIN if WITHIN in states else MIXED  # MIXED: exactly half hold and half fail


def details(claim: Claim | str, z: float = Z95, table: dict[Cell, float] | None = None) -> pd.DataFrame:
    """One row per test of a claim (given as a Claim or its id), with its part's number."""
    claim = _claim(claim)
    z = check_real("z", z, 0.0, 10.0)
    table = values() if table is None else table
    rows = [{"part": i, **check_test(test, table, z)} for i, part in enumerate(claim.parts) for test in part]
    return pd.DataFrame(rows)


def _claim(claim: Claim | str) -> Claim:
    if isinstance(claim, Claim):
        return claim
    known = {c.id: c for c in CLAIMS}
    if claim not in known:
        raise ValueError(f"claim must be a Claim or one of the ids {sorted(known)}, got {claim!r}")
    return known[claim]


def verdict(claim: Claim | str, z: float = Z95, table: dict[Cell, float] | None = None) -> dict:
    """A claim's verdict as printed (sampling ignored) and with sampling error; how many of its
    parts hold as printed, hold beyond z SE, fail beyond z SE; its weakest test (lowest margin / SE,
    or lowest margin where there is no SE) with the quantity it computes."""
    claim = _claim(claim)
    checked = details(claim, z, table)
    parts = checked.groupby("part", sort=True)
    printed = [_combine(list(p["as printed"]), "all") for _, p in parts]
    sampled = [_combine(list(p["state"]), "all") for _, p in parts]
    weakest = checked.loc[checked["z"].where(checked["z"].notna(), checked["margin"]).idxmin()]
    return {"id": claim.id, "section": claim.section, "quote": claim.quote, "statement": claim.statement,
            "reading": claim.reading, "as printed": _combine(printed, claim.quantifier),
            "verdict": _combine(sampled, claim.quantifier), "parts": len(printed),
            "hold as printed": printed.count(SUPPORTED), "hold beyond SE": sampled.count(SUPPORTED),
            "fail beyond SE": sampled.count(CONTRADICTED), "weakest test": weakest["test"],
            "quantity": weakest["quantity"], "margin": weakest["margin"], "SE": weakest["se"],
            "margin / SE": weakest["z"], "note": claim.note}


def tests(z: float = Z95) -> pd.DataFrame:
    """Every test of every claim (`details` rows) with the claim's id in a claim column."""
    numbers = values()
    return pd.concat([details(c, z, numbers).assign(claim=c.id) for c in CLAIMS], ignore_index=True)


def table(z: float = Z95) -> pd.DataFrame:
    """The claims table: one row per claim (and reading) of `CLAIMS`, checked against the paper's
    Tables 1-3 with threshold `z` standard errors (1.96: 95%)."""
    numbers = values()
    return pd.DataFrame([verdict(c, z, numbers) for c in CLAIMS])


def sizes() -> pd.DataFrame:
    """Each benchmark's test size, its source, and the SE of a difference of two scores at the
    unpruned model's score (MME: the bound of `mme_se_bound`, times sqrt 2)."""
    base = values(paper.reported(1))
    rows = [{"benchmark": b, "questions": s.n, "source": s.source,
             "SE of a difference (points)": math.sqrt(2) * standard_error(b, base[_base(b)])} for b, s in SIZES.items()]
    rows.append({"benchmark": "MME", "questions": 2 * sum(MME_IMAGES.values()),
                 "source": f"MME perception: {sum(MME_IMAGES.values()):,} images x 2 yes/no questions in 10 subtasks "
                           "(the cognition subtasks are not in the column); SE bounded at p = 0.5",
                 "SE of a difference (points)": math.sqrt(2) * mme_se_bound()})
    return pd.DataFrame(rows).set_index("benchmark").loc[list(TABLE1)]
