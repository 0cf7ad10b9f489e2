"""Coarse-to-fine random search, free of Hydra.

space
    The parameter space: :class:`Limits`, :class:`NumericParam` and :class:`ChoiceParam`,
    sampling, and the override strings trials are described by.
settings
    :class:`Settings`, :class:`Stage`, :class:`Round`, :class:`Pinpoint` and :class:`Pruning`,
    parsed and validated from the sweeper's config (:class:`SearchConfigError` names the bad key).
records
    :class:`TrialSpec`, :class:`TrialRecord` and ``search.jsonl``, which records are appended
    to as trials finish and read back from to resume.
algorithm
    :class:`CoarseToFineSearch`: stages and their rounds, narrowing, edge moves, the pinpoint
    stage, the ranking of trials (ties broken by the validation loss) and the summary.

The search knows nothing about Hydra: trials are described by override strings and their
results come back as :class:`TrialRecord` objects, so every step can be unit-tested with a
synthetic objective. The Hydra sweeper in ``hydra_plugins.expt_sweeper`` is a thin adapter.

Every name is importable from ``expt.search`` itself. Imports among the modules run one way:
algorithm -> records, settings -> space.
"""

from __future__ import annotations

from expt.search.algorithm import (
    PINPOINT_ROUND,
    CoarseToFineSearch,
    EdgeMove,
    chosen_and_tied,
    consecutive_runs,
    ranked,
    score,
    tie_tolerance,
)
from expt.search.records import (
    TrialRecord,
    TrialSpec,
    append_record,
    as_objective,
    read_records,
    returned_metrics,
)
from expt.search.settings import Pinpoint, Pruning, Round, Settings, Stage
from expt.search.space import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    ChoiceParam,
    Limits,
    NumericParam,
    Param,
    SearchConfigError,
    Space,
    default_limits,
    describe_space,
    merge_overrides,
    override_key,
    sample_space,
)
from expt.status import COMPLETED, DIVERGED, FAILED, PRUNED

__all__ = [
    "AT_LEAST_ONE", "COMPLETED", "DIVERGED", "FAILED", "NON_NEGATIVE", "PINPOINT_ROUND", "POSITIVE",
    "PRUNED", "ChoiceParam", "CoarseToFineSearch",
    "EdgeMove", "Limits", "NumericParam", "Param", "Pinpoint", "Pruning", "Round", "SearchConfigError",
    "Settings", "Space", "Stage", "TrialRecord", "TrialSpec", "append_record", "as_objective",
    "chosen_and_tied", "consecutive_runs", "default_limits", "describe_space", "merge_overrides", "override_key",
    "ranked", "read_records", "returned_metrics", "sample_space", "score", "tie_tolerance",
]
