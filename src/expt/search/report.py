"""What a search says about its best trials: the leaders, how far apart the top two are, and a text table.

Each function takes the trials already ranked (:func:`expt.search.ranking.ranked`), best first;
:class:`expt.search.algorithm.CoarseToFineSearch` hands them its rounds' trials.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from expt.search.ranking import score
from expt.search.records import TrialRecord
from expt.search.settings import Settings
from expt.search.space import NumericParam, Param, compact_number


def leader_rows(best_first: Sequence[TrialRecord], direction: str) -> list[dict[str, Any]]:
    """The scored ones of ``best_first`` and how many validation samples each is behind the first: negative for one
    that scored higher but ranks after it (a tie the tie-breaker decided)."""
    top = [(r, score(r, direction)) for r in best_first]
    top = [(r, s) for r, s in top if s is not None]
    out = []
    for r, s in top:
        row: dict[str, Any] = {"job": r.job, "round": r.round, "objective": r.objective,
                               "tie_value": r.tie_value, "test_acc": r.test_acc}
        if top[0][0].val_samples:
            row["samples_behind"] = round((top[0][1] - s) * top[0][0].val_samples)
        out.append(row)
    return out


def separation_sentence(top: Sequence[Mapping[str, Any]], best: Optional[TrialRecord],
                        settings: Settings) -> Optional[str]:
    """A sentence on how many validation samples separate the top two of :func:`leader_rows` (``top``);
    ``best``: the chosen trial, whose validation split they are counted in."""
    if len(top) < 2 or "samples_behind" not in top[1]:
        return None
    samples, total = abs(top[1]["samples_behind"]), best.val_samples  # type: ignore[union-attr]
    name = settings.tie_break or "the tie-breaker"
    if samples <= settings.tie_samples:
        a, b = _apart(top[0]["tie_value"], top[1]["tie_value"])
        return (f"the top two trials are {samples} of {total} validation samples apart, a tie: "
                f"{name} decided ({a} against {b})")
    return f"the top two trials are {samples} of {total} validation samples apart"


def _apart(a: Optional[float], b: Optional[float]) -> tuple[str, str]:
    """Two numbers, each written with the fewest significant digits (3 to 8) that tell them apart."""
    x, y = (math.nan if v is None else v for v in (a, b))
    for digits in range(3, 9):
        if f"{x:.{digits}g}" != f"{y:.{digits}g}":
            break
    return f"{x:.{digits}g}", f"{y:.{digits}g}"


def trial_table(rows: Sequence[TrialRecord], space: Mapping[str, Param], tie_break: Optional[str]) -> str:
    """``rows`` (best first) as a text table: rank, round, job, scores, status and each parameter of ``space``. The
    objective and the tie-breaker are whatever the task returns, printed as numbers; the test accuracy (expt's runs
    report one) as a percentage, as a run prints it."""
    names = list(space)
    tie = tie_break or "tie"
    header = ["rank", "round", "job", "objective", tie, "test_acc", "status"] + names
    lines = [[str(i), str(r.round), str(r.job),
              "-" if r.objective is None else f"{r.objective:.4g}",
              "-" if r.tie_value is None else f"{r.tie_value:.4g}",
              "-" if r.test_acc is None else f"{100 * r.test_acc:.2f}%", r.status]
             + [_cell(r.values.get(name), space[name]) for name in names]
             for i, r in enumerate(rows, start=1)]
    widths = [max(len(row[c]) for row in [header] + lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                     for row in [header] + lines)


def _cell(value: Any, param: Param) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return compact_number(value, isinstance(param, NumericParam) and param.log)
    return str(value)
