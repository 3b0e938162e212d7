"""What each chapter of the book measures on the miniature (trained here): the cells of its
experiment, measured (and cached) by `mrpruner.mini.measure`, as tidy frames for the plots.

Every frame has one row per cell and question kind with `label` (the paper's row names, e.g.
"MR-Pruner"; "all tokens" for the unpruned model), `method`, `ratio`, `kind`, `accuracy`,
`ci_low`/`ci_high` (95% bootstrap), `kept_tokens`, `recall` and `flops_reduction`; its
`attrs["provenance"]` says where it was measured. Budgets: protocol "exact" (one for all methods).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mrpruner.methods import METHODS
from mrpruner.mini.measure import measure
from mrpruner.paper import ABLATIONS, LABELS

DIVPRUNE = "mrpruner.examples.divprune:divprune"  # the example of a method written with register_method
NAMES = {**LABELS, DIVPRUNE: "DivPrune"}  # the label of each method
TABLE1_RATIOS = (0.5, 0.7, 0.9)  # the paper's Table 1
TABLE2_RATIO = 0.95  # the paper's Table 2
UNPRUNED = "all tokens"
PREMISE = ((UNPRUNED, {"method": None}), ("base only", {"method": "base only"}), ("grid only", {"method": "grid only"}),
           ("blank images", {"method": None, "images": "blank"}))


def _frame(cells: Sequence[tuple[str, Mapping[str, Any]]], **measure_args) -> pd.DataFrame:
    """`measure` of (label, cell) pairs (distinct cells; a label may repeat), labels as a column."""
    frame = measure([cell for _, cell in cells], **measure_args)
    per_cell = frame.groupby(["method", "ratio", "options", "images"], dropna=False, sort=False).ngroup()
    out = frame.assign(label=[cells[i][0] for i in per_cell])
    out.attrs = frame.attrs
    return out


def premise(**measure_args) -> pd.DataFrame:
    """Figure 2b on the miniature: all tokens, the base tokens only, the grid only, blank images."""
    return _frame(PREMISE, **measure_args)


def methods(ratios: Sequence[float] = TABLE1_RATIOS, names: Sequence[str] = METHODS, *,
            unpruned: bool = True, **measure_args) -> pd.DataFrame:
    """Table 1 (and 2) on the miniature: each method at each ratio, plus the unpruned model."""
    cells = [(UNPRUNED, {"method": None})] if unpruned else []
    cells += [(NAMES.get(m, m), {"method": m, "ratio": r}) for m in names for r in ratios]
    return _frame(cells, **measure_args)


def ablations(ratio: float = 0.9, names: Sequence[str] = tuple(ABLATIONS), **measure_args) -> pd.DataFrame:
    """Table 3 on the miniature: MR-Pruner without IR, CR, IA (the paper's rows), at `ratio`."""
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; the rows are {list(ABLATIONS)}")
    cells = [(UNPRUNED, {"method": None})]
    cells += [(name, {"method": "mrpruner", "ratio": ratio, "options": dict(ABLATIONS[name])}) for name in names]
    return _frame(cells, **measure_args)


def variants(ratios: Sequence[float] = (*TABLE1_RATIOS, TABLE2_RATIO), **measure_args) -> pd.DataFrame:
    """The paper's MR-Pruner against the released code's, on accuracy and recall, at each ratio."""
    return _frame([(v, {"method": "mrpruner", "ratio": r, "options": {"variant": v}})
                   for v in ("paper", "released") for r in ratios], **measure_args)


def wide(frame: pd.DataFrame, *, by: Sequence[str] = ("label", "ratio"), digits: int = 2) -> pd.DataFrame:
    """One row per `by`, one column per kind: "accuracy [ci_low, ci_high]" and the recall of the
    answer's tokens, for a book table."""
    def cell(row) -> str:
        return f"{row.accuracy:.{digits}f} [{row.ci_low:.{digits}f}, {row.ci_high:.{digits}f}]"

    shown = frame.assign(accuracy_ci=frame.apply(cell, axis=1))
    table = shown.pivot_table(index=list(by), columns="kind", values="accuracy_ci", aggfunc="first", sort=False)
    recall = shown.pivot_table(index=list(by), columns="kind", values="recall", aggfunc="first", sort=False)
    kinds = [k for k in ("overview", "detail", "all") if k in table.columns]
    out = pd.concat([table[kinds].add_prefix("accuracy: "), recall[["detail"]].round(digits).add_prefix("recall: ")]
                    if "detail" in recall else [table[kinds].add_prefix("accuracy: ")], axis=1)
    return out
