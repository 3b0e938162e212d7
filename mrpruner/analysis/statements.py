"""The chapters' computed sentences and verdicts: comparisons of a sweep's rows under the book's rule
(`mrpruner.rule`), rankings and first places, Fig. 2b's complementarity, Table 3's ablation, the
exercise's goals and the two budget protocols side by side."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mrpruner import rule
from mrpruner.analysis.sweeps import UNPRUNED, chance_levels, complementarity, model_count, pooled, shown


def compare(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str) -> rule.Comparison | None:
    """`label` against `other` at `ratio` on `kind` of a `task_frame` of one or more models, paired
    on each model's questions, under the book's rule (`mrpruner.rule.compare`); None when either was
    not measured on every model of the frame, or without per-question scores."""
    rows = frame[np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind) & frame["label"].isin([label, other])]
    names = list(dict.fromkeys(frame["model"])) if "model" in frame else [""]
    a, b = {}, {}
    for name in names:
        mine = rows if name == "" else rows[rows["model"] == name]
        by_label = mine.drop_duplicates("label").set_index("label")
        if label not in by_label.index or other not in by_label.index or "doc_scores" not in by_label:
            return None
        scores = by_label.loc[label, "doc_scores"], by_label.loc[other, "doc_scores"]
        if not all(isinstance(s, Mapping) and s for s in scores):
            return None
        a[str(name)], b[str(name)] = scores
    return rule.compare(a, b)


def verdict(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str) -> str | None:
    """`label` against `other` under the book's rule: "above", "below" or "tie" (None: not measured)."""
    found = compare(frame, label, other, ratio, kind)
    return None if found is None else found.direction


def agreement(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str, *, digits: int = 2) -> str | None:
    """`label` against `other` in words, with the difference and its interval and, with several
    models, each model's two scores and on how many models each direction holds (None when not
    measured)."""
    found = compare(frame, label, other, ratio, kind)
    if found is None:
        return None
    words = rule.text(found.difference, found.low, found.high, found.direction, label, other, digits)
    if len(found.per_model) == 1:
        return words
    counts = ", ".join(f"{which} on {found.count(which)}" for which in rule.DIRECTIONS if found.count(which))
    each = ", ".join(f"{name} {a:.{digits}f} against {b:.{digits}f}" for name, a, b, _ in found.per_model)
    return f"{words}; model by model: {counts} of {len(found.per_model)} ({each})"


def leaders(frame: pd.DataFrame, ratio: float, kind: str, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels that share the first place at `ratio` on `kind` under the book's rule
    (`mrpruner.rule.first`): one label only when it is above every other (empty: not measured)."""
    mean = pooled(frame)
    rows = mean[np.isclose(mean["ratio"], ratio) & (mean["kind"] == kind)]
    if labels is not None:
        rows = rows[rows["label"].isin(labels)]
    if rows.empty:
        return ()
    scores = dict(zip(rows["label"], rows["accuracy"]))
    best = max(scores, key=lambda label: scores[label])
    beats = {(best, other): verdict(frame, best, other, ratio, kind) for other in scores if other != best}
    return rule.first(scores, beats)


def ranking(frame: pd.DataFrame, ratio: float, kind: str, labels: Sequence[str] | None = None) -> str:
    """The labels at `ratio` on `kind`, best mean score first, each with its score and interval,
    and which of them share the first place under the book's rule."""
    mean = pooled(frame)
    rows = mean[np.isclose(mean["ratio"], ratio) & (mean["kind"] == kind)]
    if labels is not None:
        rows = rows[rows["label"].isin(labels)]
    if rows.empty:
        return "not measured"
    rows = rows.sort_values("accuracy", ascending=False, kind="stable")
    order = ", ".join(f"{row.label} {rule.shown(row.accuracy, row.ci_low, row.ci_high)}" for row in rows.itertuples())
    top = leaders(frame, ratio, kind, list(rows["label"]))
    if len(top) == 1 and len(rows) > 1:
        return f"{order}; {top[0]} is first, above every other"
    if len(top) > 1:
        return f"{order}; " + (f"all {len(top)} tie" if len(top) == len(rows) else
                               f"{_and(top)} tie for first") + " under the rule"
    return order


def _and(names: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


VARIANTS = ("MR-Pruner", "MR-Pruner (released)")  # the chapters' labels: the paper's equations, the released code


def findings(frame: pd.DataFrame, ratio: float, labels: Sequence[str] | None = None) -> list[str]:
    """Computed sentences (markdown bullets) on a `task_frame` (of one or more models) at `ratio`:
    per kind, `labels` (default: all at that ratio) ranked by their (mean) score with intervals and
    the chance level, and which share the first place under the book's rule; then MR-Pruner as the
    paper writes it against the released code's scoring, where both were measured."""
    chance = chance_levels(frame["kind"])
    kinds = list(dict.fromkeys(frame["kind"]))
    lines = [f"- {kind.capitalize()} questions at {ratio:.0%} pruning"
             + (f" (chance {chance[kind]:.2f})" if kind in chance else "") + f": {ranking(frame, ratio, kind, labels)}."
             for kind in kinds]
    at = frame[np.isclose(frame["ratio"], ratio)]
    if set(VARIANTS) <= set(at["label"]):
        said = [agreement(frame, VARIANTS[1], VARIANTS[0], ratio, k) for k in kinds]
        lines.append("- The released code's scoring against the paper's Eq. 3: "
                     + "; ".join(f"on {k}, {words}" for k, words in zip(kinds, said) if words) + ".")
    return lines


def ablation_findings(frame: pd.DataFrame, ratio: float) -> list[str]:
    """Computed sentences (markdown bullets) on Table 3's grid (a `task_frame` of one or more
    models): per MR-Pruner variant and kind, its rows ranked with the first place under the book's
    rule, and the full method against the row without IR, CR and IA, in whichever direction."""
    kinds = list(dict.fromkeys(frame["kind"]))
    lines = []
    for variant in VARIANTS:
        rows = [label for label in dict.fromkeys(frame["label"]) if label.startswith(variant)
                and (label == variant or label[len(variant):].startswith(" ["))]
        if not rows:
            continue
        lines += [f"- {variant}, {kind} questions: {ranking(frame, ratio, kind, rows)}." for kind in kinds]
        said = [(kind, agreement(frame, variant, f"{variant} [-IR -CR -IA]", ratio, kind)) for kind in kinds]
        if any(words for _, words in said):
            lines.append(f"- Without all three components ({variant}): "
                         + "; ".join(f"on {kind}, {words}" for kind, words in said if words) + ".")
    return lines


def complementary(alone: pd.DataFrame) -> bool:
    """Whether over all the questions of `complementarity`'s table (its last row) each resolution
    alone answers at least one that the other cannot."""
    if alone.empty:
        return False
    overall = alone.iloc[-1]
    return min(overall["low resolution only"], overall["high resolution only"]) * int(overall["documents"]) >= 1


def complementarity_findings(controls: pd.DataFrame, alone: pd.DataFrame,
                             frame: pd.DataFrame | None = None) -> list[str]:
    """Computed sentences (markdown bullets) on Fig. 2b: each control's score per kind (a
    `task_frame` of the controls; with several models their mean) with the chance level, the
    shares of `complementarity`'s table, and whether over all its questions (of all the models)
    each resolution alone answers some the other cannot; with the sweep's `frame` of several
    models, on how many of them that holds (said of the models only where it holds on every one)."""
    kinds = list(dict.fromkeys(controls["kind"]))
    chance = chance_levels(kinds)
    n_models = model_count(controls)
    controls = pooled(controls)
    of_models = f" (the {n_models} models' pooled)" if n_models > 1 else ""

    def scores(label: str) -> str:
        return ", ".join(f"{shown(controls, label, 0.0, k)} on {k}" for k in kinds)

    lines = [f"- With the base image's tokens only: {scores('base only')}; with the grid's only: {scores('grid only')}; "
             f"with all tokens: {scores(UNPRUNED)}"
             + (" (chance: " + ", ".join(f"{chance[k]:.2f} on {k}" for k in kinds if k in chance) + ")." if chance
                else ".")]
    for kind, row in alone.iterrows():
        lines.append(f"- On {kind}: {row['low resolution only']:.0%} of the {int(row['documents'])} questions are "
                     f"answered with the base tokens only and not with the grid's, {row['high resolution only']:.0%} "
                     "the other way round.")
    holds = ({name: complementary(complementarity(group)) for name, group in frame.groupby("model", sort=False)}
             if frame is not None and frame["model"].nunique() > 1 else {})
    which = [name for name, h in holds.items() if h]
    if len(alone):
        n = int(alone.iloc[-1]["documents"])  # the last row: "all" where there are several tasks
        if complementary(alone) and len(which) < len(holds):  # said of the models only where every one agrees
            lines.append(f"- Over these {n} questions{of_models} each resolution alone answers some that the other "
                         f"cannot, but model by model only on {len(which)} of the {len(holds)}: the models disagree, "
                         "so mutual complementarity (Figure 2b) holds for some training runs and not for others.")
        elif complementary(alone):
            lines.append(f"- Over these {n} questions{of_models} each resolution alone answers some that the other "
                         "cannot, as Figure 2b says: mutual complementarity holds here.")
        else:
            lines.append(f"- Over these {n} questions{of_models} one resolution answers every question the other "
                         "does: no complementarity, so cross-resolution preservation (Eq. 6-10) has nothing to recover "
                         "that one resolution lacks, and Table 3's ablation of it cannot show a benefit here.")
    if holds:
        lines.append(f"- Model by model, each resolution alone answers some questions the other cannot on "
                     f"{len(which)} of the {len(holds)} models"
                     + (f" ({', '.join(which)})." if 0 < len(which) < len(holds) else "."))
    return lines


GOALS = {"detail": (rule.ABOVE,), "overview": (rule.ABOVE, rule.TIE)}  # the exercise's goal 1 under the rule


def exercise_goals(frame: pd.DataFrame, label: str, ratio: float, reference: str = "Random") -> pd.DataFrame:
    """The exercise's first goal, judged on a `task_frame` (of one or more models) at `ratio` by
    the book's rule: `label` above `reference` on detail questions, and not below it on overview
    questions (above or a tie). One row per goal ("detail: above", "overview: not below"): the two
    scores, the difference with its verdict, and whether the goal is met."""
    rows = []
    for kind, allowed in GOALS.items():
        found = compare(frame, label, reference, ratio, kind)
        if found is None:
            at = frame[np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind)]
            raise ValueError(f"label and reference must both be measured, with per-question scores, at ratio {ratio} "
                             f"on {kind} questions; measured there: {sorted(set(at['label']))}")
        mean = pooled(frame)
        rows.append({"goal": f"{kind}: " + ("above" if allowed == (rule.ABOVE,) else "not below"),
                     label: shown(mean, label, ratio, kind), reference: shown(mean, reference, ratio, kind),
                     "difference": _difference(found),
                     "met": found.direction in allowed})
    return pd.DataFrame(rows).set_index("goal")


def holds_on(frame: pd.DataFrame, ratio: float, kind: str, comparisons: Sequence[tuple[str, str, str]]) -> tuple[int, int]:
    """On how many models of a `task_frame` every comparison (label, other, direction: one of
    `mrpruner.rule.DIRECTIONS`) holds by that model's own verdict, and of how many models."""
    holding = None
    for label, other, which in comparisons:
        found = compare(frame, label, other, ratio, kind)
        if found is None:
            raise ValueError(f"comparisons: {label!r} against {other!r} is not measured at ratio {ratio} on {kind}")
        own = {name for name, *_, d in found.per_model if d == which}
        holding = own if holding is None else holding & own
        models = len(found.per_model)
    if holding is None:
        raise ValueError("comparisons must name at least one (label, other, direction)")
    return len(holding), models


def protocols_side_by_side(exact: pd.DataFrame, authors: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Per label of `authors` (a `task_frame` of the grid run with `protocol: paper`) and kind, at
    `ratio`: the score with the visual tokens per image in brackets under one budget for all
    (`exact`, a `task_frame` of the same models) and under the authors' budget, and the authors'
    budget against the exact one by the book's rule (paired on each model's questions); labels
    measured one way only are left out."""
    at = authors[np.isclose(authors["ratio"], ratio)]
    at = at[at["label"].isin(set(exact.loc[np.isclose(exact["ratio"], ratio), "label"]))]  # measured both ways
    renamed = at.assign(label=at["label"] + " (authors' budget)")
    both = pd.concat([exact[np.isclose(exact["ratio"], ratio) & exact["label"].isin(set(at["label"]))], renamed],
                     ignore_index=True)
    mean = pooled(both)
    rows = []
    for label in dict.fromkeys(at["label"]):
        for kind in dict.fromkeys(at["kind"]):
            theirs = f"{label} (authors' budget)"
            kept = mean.set_index(["label", "kind"])["kept_tokens"]
            rows.append({"method": label, "kind": kind,
                         "one budget (tokens)": f"{shown(mean, label, ratio, kind)} ({kept[label, kind]:.1f})",
                         "authors' budget (tokens)": f"{shown(mean, theirs, ratio, kind)} ({kept[theirs, kind]:.1f})",
                         "authors' minus one": _difference(compare(both, theirs, label, ratio, kind))})
    return pd.DataFrame(rows).set_index(["method", "kind"])


def _difference(found: rule.Comparison | None) -> str:
    """A comparison's verdict and difference in a table cell: "above: 0.11 [0.08, 0.14]"."""
    return "not measured" if found is None else f"{found.direction}: {rule.shown(found.difference, found.low, found.high)}"


def span(values: Iterable[float], form: str = "{:.2f}") -> str:
    """The range of `values` in words for the prose: "0.75" when all print alike, else "0.75-0.76"."""
    values = list(values)
    low, high = (form.format(v) for v in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"
