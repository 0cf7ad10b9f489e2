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
ranking
    The ranking rule: a trial's :func:`score`, ties within :func:`tie_tolerance` broken by the
    validation loss, :func:`ranked` and :func:`chosen_and_tied`.
narrowing
    How a round's best trials shape the next round's range of a parameter: narrowing to their
    span, or an :class:`EdgeMove` past the edge the best value sits on, within hard limits.
report
    The leaders, the distance between the top two trials and the text table of the best trials.
algorithm
    :class:`CoarseToFineSearch`: stages and their rounds, the pinpoint stage, the held values of
    finished stages and the summary; :func:`consecutive_runs`, the batches a round launches in.

The search knows nothing about Hydra: trials are described by override strings and their
results come back as :class:`TrialRecord` objects, so every step can be unit-tested with a
synthetic objective. The Hydra sweeper in ``hydra_plugins.expt_sweeper`` is a thin adapter.

Every name is importable from ``expt.search`` itself. Imports among the modules run one way:
algorithm -> narrowing, report -> ranking, settings -> records -> space.
"""

from __future__ import annotations

from expt.search.algorithm import PINPOINT_ROUND, CoarseToFineSearch, consecutive_runs
from expt.search.narrowing import EdgeMove
from expt.search.ranking import chosen_and_tied, ranked, score, tie_tolerance
from expt.search.records import (
    RECORDS_FILE,
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
    Condition,
    Limits,
    NumericParam,
    Param,
    SearchConfigError,
    Space,
    default_limits,
    describe_space,
    integer_sweep,
    merge_overrides,
    sample_space,
)
from expt.status import COMPLETED, DIVERGED, FAILED, PRUNED

__all__ = [
    "AT_LEAST_ONE", "COMPLETED", "DIVERGED", "FAILED", "NON_NEGATIVE", "PINPOINT_ROUND", "POSITIVE",
    "PRUNED", "RECORDS_FILE", "ChoiceParam", "CoarseToFineSearch", "Condition",
    "EdgeMove", "Limits", "NumericParam", "Param", "Pinpoint", "Pruning", "Round", "SearchConfigError",
    "Settings", "Space", "Stage", "TrialRecord", "TrialSpec", "append_record", "as_objective",
    "chosen_and_tied", "consecutive_runs", "default_limits", "describe_space", "integer_sweep", "merge_overrides",
    "ranked", "read_records", "returned_metrics", "sample_space", "score", "tie_tolerance",
]
