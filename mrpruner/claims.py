"""The comparative sentences of the paper's results (abstract, Section 4.3), each written as a
statement over the transcribed Tables 1-3 (mrpruner.paper) and checked against them, with a
verdict that accounts for the benchmarks' sampling error.

A statement is a set of tests ("this cell is above that one", "this drop is smaller"), grouped in
parts and combined by "all" or "most" (more than half of the parts). A test's margin comes with
a standard error from each benchmark's test-set size (binomial, cells taken as independent);
its verdict follows the book's one rule (`mrpruner.rule`; in words for claims: `rule_text`).
Where the sentence can be read two ways (relative or absolute drop; drop from the unpruned model
or from the method's own 90% result; every cell or the mean), each reading is its own row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

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


# --- the claims as data -----------------------------------------------------------------------

PRUNERS = ("Random", "ToMe", "FastV", "G-Prune", "MR-Pruner")  # Table 1's pruning methods
UNPRUNED = "LLaVA-NeXT-8B"
TABLE1 = tuple(b.paper_name for b in benchmarks.BENCHMARKS.values())
PERCENT = tuple(b for b in TABLE1 if b != "MME")  # scored in percent: points can be averaged
FIGURE4 = tuple(benchmarks.BENCHMARKS[k].paper_name for k in benchmarks.TABLE2)  # as the FLOPs chapter reads Fig. 4
TABLE3 = tuple(benchmarks.BENCHMARKS[k].paper_name for k in benchmarks.TABLE3)
FIGURE4_METHODS = ("FastV", "G-Prune", "MR-Pruner")
TABLE3_FULL, NO_COMPONENT = "MR-Pruner", "MR-Pruner [-IR -CR -IA]"
RATIOS = (0.5, 0.7, 0.9)


def _c(method: str, ratio: float, benchmark: str) -> Cell:
    table = 2 if ratio == 0.95 else 3 if method in paper.ABLATIONS and method != TABLE3_FULL else 1
    return Cell(table, method, ratio, benchmark)


def _base(benchmark: str) -> Cell:
    return Cell(1, UNPRUNED, 0.0, benchmark)


def _above(a: Cell, b: Cell, label: str = "") -> Test:
    """a's value above b's."""
    return Test(label or f"{a.method} > {b.method}, {b.benchmark} {b.ratio:.0%}", (Term(a), Term(b, -1.0)))


def _best(method: str, ratio: float, benchmark: str, rivals=PRUNERS) -> tuple[Test, ...]:
    """method above every other of `rivals` at this ratio on this benchmark."""
    return tuple(_above(_c(method, ratio, benchmark), _c(r, ratio, benchmark)) for r in rivals if r != method)


def _mean_drop(method: str, ratio: float, benchmarks, kind: str, coef: float = 1.0, ref_ratio=None) -> tuple[Term, ...]:
    """Terms of the mean drop of method at ratio over benchmarks, from the unpruned model (or from
    its own score at ref_ratio)."""
    ref = (lambda b: _c(method, ref_ratio, b)) if ref_ratio is not None else _base
    return tuple(Term(_c(method, ratio, b), coef / len(benchmarks), kind, ref(b)) for b in benchmarks)


def _smaller_drop(method: str, rival: str, ratio: float, benchmarks, kind: str, ref_ratio=None, label="") -> Test:
    """method's mean drop below rival's (rival's minus method's > 0)."""
    terms = (_mean_drop(rival, ratio, benchmarks, kind, 1.0, ref_ratio)
             + _mean_drop(method, ratio, benchmarks, kind, -1.0, ref_ratio))
    where = benchmarks[0] if len(benchmarks) == 1 else f"mean of {len(benchmarks)}"
    return Test(label or f"{method} drops less than {rival}, {where} {ratio:.0%}", terms)


def _tradeoff(kind: str, benchmarks) -> tuple[tuple[Test, ...], ...]:
    return tuple(tuple(_smaller_drop("MR-Pruner", r, ratio, benchmarks, kind) for r in PRUNERS if r != "MR-Pruner")
                 for ratio in RATIOS)


def _average_drop(kind: str, benchmarks, printed: float, decimals: int, label: str) -> tuple[tuple[Test, ...], ...]:
    return ((Test(label, _mean_drop("MR-Pruner", 0.9, benchmarks, kind), "=", printed, decimals),),)


def _quoted(*cells_and_values: tuple[Cell, float]) -> tuple[tuple[Test, ...], ...]:
    return tuple((Test(f"{c.method} {c.benchmark} {c.ratio:.0%} = {v:.2f}", (Term(c),), "=", v),)
                 for c, v in cells_and_values)


def _retention(reading: str) -> tuple[tuple[Test, ...], ...]:
    """MR-Pruner keeps more at 95% than FastV and G-Prune, per benchmark of Section 4.3's sentence."""
    kind, ref_ratio = {"unpruned": ("relative drop", None), "own 90%, points": ("drop", 0.9),
                       "own 90%, relative": ("relative drop", 0.9)}[reading]
    return tuple(tuple(_smaller_drop("MR-Pruner", r, 0.95, (b,), kind, ref_ratio) for r in ("FastV", "G-Prune"))
                 for b in ("MMB-EN", "MME", "TextVQA"))


def _lead_growth(kind: str, benchmarks) -> tuple[tuple[Test, ...], ...]:
    """G-Prune's mean lead over FastV (FastV's drop minus G-Prune's) larger at 90% than at 50%."""
    def lead(ratio: float, sign: float) -> tuple[Term, ...]:
        return (_mean_drop("FastV", ratio, benchmarks, kind, sign)
                + _mean_drop("G-Prune", ratio, benchmarks, kind, -sign))

    return ((Test("lead at 90% > lead at 50%", lead(0.9, 1.0) + lead(0.5, -1.0)),),)


def _table3_above(row: str, rows) -> tuple[tuple[Test, ...], ...]:
    """Table 3's `row` above each of `rows`, per benchmark."""
    return tuple(tuple(_above(Cell(3, row, 0.9, b), Cell(3, other, 0.9, b), f"{row} > {other}, {b}") for other in rows)
                 for b in TABLE3)


ABSTRACT, MAIN, FIG4 = "Abstract", "4.3, Main results", "4.3, Figure 4 paragraph"
EXTREME, ABLATION = "4.3, Extreme pruning scenario", "4.3, Ablation study"
RETENTION_QUOTE = ("MR-Pruner demonstrates stronger performance retention than existing methods on MMB-EN, MME, "
                   "and TextVQA.")
CLOSEST_QUOTE = ("Notably, MR-Pruner achieves the best results, maintaining accuracy closest to the baseline across "
                 "different pruning ratios.")
DETERIORATES_QUOTE = "However, performance deteriorates considerably as the pruning ratio increases."
FIG4_NOTE = "Figure 4's values are not printed: checked on Table 1 for Table 2's four benchmarks."

CLAIMS: tuple[Claim, ...] = (
    Claim("tradeoff-relative", ABSTRACT,
          "Experiments on eight benchmarks show that MR-Pruner achieves superior efficiency-performance trade-offs.",
          "At 50%, 70% and 90% (equal token budgets), MR-Pruner's mean drop from the unpruned model over the eight "
          "benchmarks is the smallest of the five pruning methods.",
          _tradeoff("relative drop", TABLE1), reading="drop relative to the unpruned score, 8 benchmarks",
          note="the efficiency half: claim mrpruner-throughput"),
    Claim("tradeoff-points", ABSTRACT,
          "Experiments on eight benchmarks show that MR-Pruner achieves superior efficiency-performance trade-offs.",
          "As above, with the drop in points over the seven benchmarks scored in percent.",
          _tradeoff("drop", PERCENT), reading="drop in points, 7 benchmarks (MME left out)"),
    Claim("average-3.6-relative", ABSTRACT,
          "when only 10% of the visual tokens are retained, it leads to an average performance degradation of 3.6%.",
          "MR-Pruner's mean drop at 90%, relative to the unpruned model, over the eight benchmarks is 3.6%.",
          _average_drop("relative drop", TABLE1, 3.6, 1, "mean relative drop, 90%"),
          reading="drop relative to the unpruned score, 8 benchmarks", note="a number the text prints: no sampling"),
    Claim("average-3.6-points", ABSTRACT,
          "when only 10% of the visual tokens are retained, it leads to an average performance degradation of 3.6%.",
          "MR-Pruner's mean drop at 90% over the seven benchmarks scored in percent is 3.6 points.",
          _average_drop("drop", PERCENT, 3.6, 1, "mean drop in points, 90%"),
          reading="drop in points, 7 benchmarks (MME left out)", note="a number the text prints: no sampling"),
    Claim("deteriorates", MAIN, DETERIORATES_QUOTE,
          "Every pruning method scores lower at 90% than at 70% on every benchmark.",
          tuple((_above(_c(m, 0.7, b), _c(m, 0.9, b), f"{m} {b}: 70% > 90%"),) for m in PRUNERS for b in TABLE1),
          reading="on every benchmark"),
    Claim("deteriorates-mean", MAIN, DETERIORATES_QUOTE,
          "Every pruning method's mean drop from the unpruned model over the eight benchmarks, relative to the "
          "unpruned score, is larger at 90% than at 70%.",
          tuple((Test(f"{m}: mean drop 90% > 70%", _mean_drop(m, 0.9, TABLE1, "relative drop")
                      + _mean_drop(m, 0.7, TABLE1, "relative drop", -1.0)),) for m in PRUNERS),
          reading="the mean over the eight benchmarks, relative to the unpruned score"),
    *(Claim(f"{m.lower()}-beats-random", MAIN,
            "ToMe and FastV generally outperform random pruning across most benchmarks.",
            f"{m} scores above Random in more than half of the 24 (benchmark, ratio) cells of Table 1.",
            tuple((_above(_c(m, r, b), _c("Random", r, b)),) for r in RATIOS for b in TABLE1), "most")
      for m in ("ToMe", "FastV")),
    Claim("fastv-best-textvqa-50", MAIN,
          "In particular, FastV achieves the best result among all methods on the TextVQA dataset [...] under the "
          "50% pruning setting.",
          "FastV scores highest of the five pruning methods on TextVQA at 50%.", (_best("FastV", 0.5, "TextVQA"),)),
    *(Claim(f"fastv-0.26-{name}", MAIN, "with only a 0.26% accuracy drop under the 50% pruning setting.",
            f"FastV's TextVQA score at 50% is 0.26 {unit} below the unpruned model's.",
            ((Test("FastV TextVQA drop, 50%", (Term(_c("FastV", 0.5, "TextVQA"), 1.0, kind, _base("TextVQA")),),
                   "=", 0.26),),),
            reading=reading, note="a number the text prints: no sampling")
      for name, unit, kind, reading in (("points", "points", "drop", "drop in points"),
                                        ("relative", "%", "relative drop", "drop relative to the unpruned score"))),
    Claim("gprune-best-mme", MAIN, "G-Prune, on the other hand, shows the strongest performance on MME at 50% and "
                                   "70% pruning",
          "G-Prune scores highest of the five pruning methods on MME at 50% and at 70%.",
          (_best("G-Prune", 0.5, "MME"), _best("G-Prune", 0.7, "MME"))),
    Claim("gprune-best-mmbcn-50", MAIN, "as well as on MMB-CN at 50% pruning.",
          "G-Prune scores highest of the five pruning methods on MMB-CN at 50%.", (_best("G-Prune", 0.5, "MMB-CN"),)),
    Claim("mrpruner-best-most", MAIN,
          "MR-Pruner consistently achieves the best results across most datasets and pruning levels.",
          "MR-Pruner scores highest of the five pruning methods in more than half of the 24 (benchmark, ratio) cells.",
          tuple(_best("MR-Pruner", r, b) for r in RATIOS for b in TABLE1), "most"),
    Claim("mrpruner-best-sqa", MAIN, "Notably, it attains 73.87 and 73.62 on SQA-IMG at 50% and 70% pruning",
          "MR-Pruner scores highest of the five pruning methods on SQA-IMG at 50% and at 70%.",
          (_best("MR-Pruner", 0.5, "SQA-IMG"), _best("MR-Pruner", 0.7, "SQA-IMG"))),
    Claim("mrpruner-best-mme-mmbcn-90", MAIN,
          "and preserves robust performance on more challenging benchmarks such as MME and MMB-CN at 90%, reaching "
          "1530.87 and 60.14.",
          "MR-Pruner scores highest of the five pruning methods on MME and on MMB-CN at 90%.",
          (_best("MR-Pruner", 0.9, "MME"), _best("MR-Pruner", 0.9, "MMB-CN"))),
    Claim("main-quoted-numbers", MAIN, "it attains 73.87 and 73.62 [...] reaching 1530.87 and 60.14.",
          "The four scores the paragraph quotes are Table 1's.",
          _quoted((_c("MR-Pruner", 0.5, "SQA-IMG"), 73.87), (_c("MR-Pruner", 0.7, "SQA-IMG"), 73.62),
                  (_c("MR-Pruner", 0.9, "MME"), 1530.87), (_c("MR-Pruner", 0.9, "MMB-CN"), 60.14)),
          note="numbers the text prints: no sampling"),
    Claim("mrpruner-throughput", MAIN,
          "MR-Pruner also achieves the highest throughput among existing pruning methods, excluding random pruning.",
          "At 50%, 70% and 90%, MR-Pruner's throughput is above ToMe's, FastV's and G-Prune's.",
          tuple(_best("MR-Pruner", r, "Throughput", ("ToMe", "FastV", "G-Prune", "MR-Pruner")) for r in RATIOS),
          note="one timing per cell, no spread printed: no margin is beyond sampling error"),
    *(Claim(f"fastv-steepest-{name}", FIG4, "FastV shows the steepest decline, particularly on TextVQA",
            f"FastV's drop at 90% from {ref_text} is the largest of FastV, G-Prune and MR-Pruner on most (3 or 4) of "
            "Figure 4's four benchmarks.",
            tuple(tuple(_smaller_drop(m, "FastV", 0.9, (b,), "drop", ref_ratio) for m in ("G-Prune", "MR-Pruner"))
                  for b in FIGURE4), "most", reading=reading, note=FIG4_NOTE)
      for name, ref_text, ref_ratio, reading in (
          ("unpruned", "the unpruned model", None, "decline from the unpruned model"),
          ("own50", "its own 50% score", 0.5, "decline from the method's own 50% score"))),
    Claim("fastv-textvqa-below-53", FIG4, "particularly on TextVQA where accuracy drops below 53% at 90% pruning.",
          "FastV's TextVQA score at 90% is below 53.",
          ((Test("FastV TextVQA 90% < 53", (Term(_c("FastV", 0.9, "TextVQA")),), "<", 53.0, exact=True),),),
          note="a number the text states: no sampling; Figure 4's own points are not printed"),
    Claim("gprune-beats-fastv", FIG4, "G-Prune demonstrates more robust performance, consistently outperforming FastV "
                                      "across all benchmarks",
          "G-Prune scores above FastV on each of Figure 4's four benchmarks at 50%, 70% and 90%.",
          tuple((_above(_c("G-Prune", r, b), _c("FastV", r, b)),) for r in RATIOS for b in FIGURE4), note=FIG4_NOTE),
    *(Claim(f"gprune-lead-grows-{name}", FIG4, "especially at higher pruning levels.",
            "G-Prune's mean lead over FastV is larger at 90% than at 50%.", _lead_growth(kind, bs),
            reading=reading, note=FIG4_NOTE)
      for name, kind, bs, reading in (
          ("relative", "relative drop", FIGURE4, "relative to the unpruned score, 4 benchmarks"),
          ("points", "drop", tuple(b for b in FIGURE4 if b != "MME"), "points, 3 benchmarks (MME left out)"))),
    Claim("mrpruner-best-fig4", FIG4, CLOSEST_QUOTE,
          "MR-Pruner scores above FastV and G-Prune on each of Figure 4's four benchmarks at 50%, 70% and 90%.",
          tuple(_best("MR-Pruner", r, b, FIGURE4_METHODS) for r in RATIOS for b in FIGURE4),
          reading="best: the highest score", note=FIG4_NOTE),
    Claim("mrpruner-closest-fig4", FIG4, CLOSEST_QUOTE,
          "MR-Pruner's distance |score - unpruned score| is smaller than FastV's and G-Prune's on each of Figure 4's "
          "four benchmarks at 50%, 70% and 90%.",
          tuple(tuple(Test(f"MR-Pruner closer than {r}, {b} {ratio:.0%}",
                           (Term(_c(r, ratio, b), 1.0, "distance", _base(b)),
                            Term(_c("MR-Pruner", ratio, b), -1.0, "distance", _base(b))))
                      for r in ("FastV", "G-Prune")) for ratio in RATIOS for b in FIGURE4),
          reading="closest: the smallest distance to the unpruned score", note=FIG4_NOTE),
    Claim("extreme-drops", EXTREME, "both FastV and G-Prune suffer from severe performance drops across benchmarks.",
          "FastV and G-Prune score lower at 95% than at 90% on each of Table 2's four benchmarks.",
          tuple((_above(_c(m, 0.9, b), _c(m, 0.95, b), f"{m} {b}: 90% > 95%"),)
                for m in ("FastV", "G-Prune") for b in FIGURE4), note="'severe' has no threshold: only the sign"),
    Claim("extreme-gprune-beats-fastv", EXTREME,
          "FastV records only 49.10 on TextVQA and 55.10 on GQA, while G-Prune achieves a slight improvement with "
          "52.15 and 56.42, respectively.",
          "G-Prune scores above FastV at 95% on TextVQA and on GQA.",
          tuple((_above(_c("G-Prune", 0.95, b), _c("FastV", 0.95, b)),) for b in ("TextVQA", "GQA"))),
    Claim("extreme-quoted-numbers", EXTREME, "49.10 on TextVQA and 55.10 on GQA [...] 52.15 and 56.42",
          "The four scores the sentence quotes are Table 2's.",
          _quoted((_c("FastV", 0.95, "TextVQA"), 49.10), (_c("FastV", 0.95, "GQA"), 55.10),
                  (_c("G-Prune", 0.95, "TextVQA"), 52.15), (_c("G-Prune", 0.95, "GQA"), 56.42)),
          note="numbers the text prints: no sampling"),
    Claim("extreme-mrpruner-best", EXTREME, "In contrast, MR-Pruner consistently exhibits the best performance in all "
                                            "datasets.",
          "MR-Pruner scores above FastV and G-Prune at 95% on each of Table 2's four benchmarks.",
          tuple(_best("MR-Pruner", 0.95, b, FIGURE4_METHODS) for b in FIGURE4)),
    *(Claim(f"extreme-retention-{name}", EXTREME, RETENTION_QUOTE,
            f"MR-Pruner's drop at 95% from {ref_text} is smaller than FastV's and G-Prune's on MMB-EN, MME and "
            "TextVQA.", _retention(reading), reading=text)
      for name, reading, ref_text, text in (
          ("unpruned", "unpruned", "the unpruned model", "from the unpruned model (relative or points: same order)"),
          ("own90-points", "own 90%, points", "its own 90% result", "from the method's own 90% result, in points"),
          ("own90-relative", "own 90%, relative", "its own 90% result",
           "from the method's own 90% result, relative to it"))),
    Claim("ablation-none-worst", ABLATION, "When all proposed components are removed, we obtain the worst performance",
          "The row without IR, CR and IA scores lowest of Table 3's five rows on each of its four benchmarks.",
          tuple(tuple(_above(Cell(3, row, 0.9, b), Cell(3, NO_COMPONENT, 0.9, b), f"{row} > {NO_COMPONENT}, {b}")
                      for row in paper.ABLATIONS if row != NO_COMPONENT) for b in TABLE3)),
    *(Claim(f"ablation-without-{part.lower()}", ABLATION, quote,
            f"The full MR-Pruner scores above the row without {part} on each of Table 3's four benchmarks.",
            _table3_above(TABLE3_FULL, (f"MR-Pruner [-{part}]",)))
      for part, quote in (("IR", "performance degradation is also evident when either IR or CR is removed"),
                          ("CR", "performance degradation is also evident when either IR or CR is removed"),
                          ("IA", "Removing IA similarly results in performance drops"))),
    Claim("ablation-all-best", ABLATION,
          "Finally, the best results are achieved when all proposed components are combined",
          "The full MR-Pruner scores highest of Table 3's five rows on each of its four benchmarks.",
          _table3_above(TABLE3_FULL, [row for row in paper.ABLATIONS if row != TABLE3_FULL])),
)

# Sentences of the same sections that the tables cannot decide, and why.
NOT_CHECKED = (
    (MAIN, "pruning 50% or 70% of visual tokens retains competitive performance", "'competitive' has no threshold"),
    (MAIN, ("This suggests that its pruning strategy based on attention scores is highly effective [...] We attribute "
            "this to its iterative information propagation"), "explanations of a result, not comparisons"),
    (FIG4, "As expected, all methods exhibit performance degradation as the pruning ratio increases.",
     "the same statement as 'performance deteriorates considerably' (claim deteriorates)"),
    (EXTREME, "the results confirm that our method removes tokens more effectively than previous approaches",
     "restates 'the best performance in all datasets' (claim extreme-mrpruner-best)"),
    (ABLATION, ("propagating information from pruned high-resolution tokens is beneficial for selecting informative "
                "low-resolution tokens"),
     "the CR row of Table 3 (claim ablation-without-cr); the mechanism is not in the tables"),
    ("4.3, Visualization and Case study", "Figures 5 and 6", "qualitative examples, no numbers"),
)


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
