"""Structured config of the coarse-to-fine sweeper, registered as ``hydra/sweeper=coarse_to_fine``.

Its defaults are expt's preset, the recipe's sequence: pinpoint the learning rate on a small
subset; then the learning rate, its decay (the step schedule's ``gamma``) and the L2 strength
coarse to fine (2, 5 and 10 epochs); then the model's width (and dropout, when the config has
it) with those held, 5 and 10 epochs. Parameters the config lacks are left out.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from expt.overrides import override_key, split_override
from expt.search import Pinpoint, Pruning, Settings


class Direction(Enum):
    """Whether a larger or a smaller return value of the task is better."""

    maximize = 1
    minimize = 2


@dataclass
class RoundConf:
    """One round: ``trials`` random trials with ``overrides``; its ``top_k`` best set the next ranges (null: 3, or
    every trial of a round of fewer)."""

    trials: int = 10
    top_k: Optional[int] = None
    overrides: List[str] = field(default_factory=list)


@dataclass
class PinpointConf:
    """Optional stage before round 1: overfit a small subset at log-spaced rates of ``param``.

    Round 1 then searches ``param`` around the rates that learned: those whose objective
    (or ``metric``, a dotted key of the trial's metrics.json such as ``history.-1.train_acc``,
    maximised) reaches ``threshold``, or, without a threshold, scores at least halfway from
    the worst to the best rate.
    """

    # the defaults are expt.search's own, so the two cannot drift apart
    enabled: bool = Pinpoint.enabled
    param: str = Pinpoint.param
    low: float = Pinpoint.low
    high: float = Pinpoint.high
    num: int = Pinpoint.num
    overrides: List[str] = field(default_factory=lambda: list(Pinpoint.overrides))
    metric: Optional[str] = Pinpoint.metric
    threshold: Optional[float] = Pinpoint.threshold


@dataclass
class StageConf:
    """A step of the search: ``params`` (names of ``hydra.sweeper.params``; null: all the others), coarse to fine over ``rounds``."""

    name: str = "search"
    params: Optional[List[str]] = None
    rounds: List[RoundConf] = field(default_factory=list)


@dataclass
class PruningConf:
    """Early stopping inside a round: a trial below the median of ``min_trials`` others at the same epoch stops."""

    enabled: bool = Pruning.enabled
    min_trials: int = Pruning.min_trials
    warmup_epochs: int = Pruning.warmup_epochs


def _preset_params() -> Dict[str, Any]:
    return {
        "optimizer.lr": "tag(log, interval(1e-5, 1e-1))",
        "schedule.gamma": "interval(0.1, 1.0)",
        "regularization.l2": "tag(log, interval(1e-6, 1e-2))",
        "model.num_filters": "tag(log, int(interval(16, 128)))",
        "model.hidden_dim": "tag(log, int(interval(32, 512)))",
        "regularization.dropout": "interval(0.0, 0.6)",
    }


def _preset_stages() -> List[StageConf]:
    return [
        StageConf(name="lr_decay_reg", params=["optimizer.lr", "schedule.gamma", "regularization.l2"], rounds=[
            RoundConf(trials=8, top_k=3, overrides=["trainer.epochs=2"]),
            RoundConf(trials=4, top_k=2, overrides=["trainer.epochs=5"]),
            RoundConf(trials=2, top_k=1, overrides=["trainer.epochs=10"]),
        ]),
        StageConf(name="width_dropout", params=None, rounds=[
            RoundConf(trials=4, top_k=2, overrides=["trainer.epochs=5"]),
            RoundConf(trials=2, top_k=1, overrides=["trainer.epochs=10"]),
        ]),
    ]


@dataclass
class CoarseToFineSweeperConf:
    """Every key of ``hydra.sweeper`` when ``hydra/sweeper=coarse_to_fine``."""

    _target_: str = "hydra_plugins.expt_sweeper.coarse_to_fine_sweeper.CoarseToFineSweeper"
    # Search space in Hydra's override grammar, keys dotted or nested; a plain value is a
    # fixed override for every trial, null drops the key from the search.
    params: Optional[Dict[str, Any]] = field(default_factory=_preset_params)
    # The search as a sequence of stages; each holds the best values of the stages before it.
    stages: List[StageConf] = field(default_factory=_preset_stages)
    # A list of rounds here replaces `stages` with a single stage over every parameter.
    rounds: Optional[List[RoundConf]] = None
    seed: int = Settings.seed
    direction: Direction = Direction[Settings.direction]
    # Narrowing: the top trials' span plus margin x the current width on each side.
    margin: float = Settings.margin
    # A best value in the outer `edge` fraction of its range moves the range past that edge.
    edge: float = Settings.edge
    max_edge_moves: int = Settings.max_edge_moves
    # Hard limits per parameter in interval notation, e.g. "[0, 1)"; keys dotted or nested.
    limits: Dict[str, Any] = field(
        default_factory=lambda: {"regularization.dropout": "[0, 1)", "optimizer.momentum": "[0, 1)",
                                 "schedule.gamma": "(0, 1]"}
    )
    # Trials handed to the launcher at once (null: a whole round).
    max_batch_size: Optional[int] = None
    pinpoint: PinpointConf = field(default_factory=PinpointConf)
    # Scores this many validation samples apart (metrics.json val_samples) tie; `tie_break`
    # (a metrics.json key, lower is better) orders tied trials.
    tie_break: Optional[str] = "best_val_loss"
    tie_samples: int = 1
    pruning: PruningConf = field(default_factory=PruningConf)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="coarse_to_fine",
    node=CoarseToFineSweeperConf,
    provider="expt_sweeper",
)


OLD_ROUND_KEY = "hydra.sweeper.rounds."


def old_round_key(arguments: List[str]) -> Optional[str]:
    """The paragraph for a key of a single round (``hydra.sweeper.rounds.0.trials=4``) when ``rounds`` is unset.

    Before the search had stages, ``hydra.sweeper.rounds`` held the preset's rounds and such keys
    changed one of them; now ``rounds`` is null unless a whole list is given, the rounds belong to
    ``hydra.sweeper.stages``, and Hydra fails on the key with an assertion of its own. Returns None
    when no argument is such a key, or when the arguments give ``hydra.sweeper.rounds`` a list.
    """
    if any(override_key(a) == "hydra.sweeper.rounds" for a in arguments):
        return None
    for argument in arguments:
        key, value = split_override(argument)
        if not key.startswith(OLD_ROUND_KEY):
            continue
        index, _, rest = key[len(OLD_ROUND_KEY):].partition(".")
        preset = [(s, r) for s, stage in enumerate(_preset_stages()) for r in range(len(stage.rounds))]
        where = ", ".join(f"hydra.sweeper.stages.{s}.rounds.{r}" for s, r in preset)
        if index.isdigit() and int(index) < len(preset):
            stage, round_ = preset[int(index)]
            new = f"hydra.sweeper.stages.{stage}.rounds.{round_}{'.' + rest if rest else ''}"
            suggestion = (f"round {int(index) + 1} of the preset is {new.rsplit('.', 1)[0] if rest else new}: "
                          f"write {new}={value}")
        else:
            suggestion = f"the preset's rounds are, in order: {where}"
        return (f"{argument} changes a round of hydra.sweeper.rounds, which is unset: the coarse_to_fine "
                f"sweeper's rounds now belong to its stages (hydra.sweeper.stages, each {{name, params, "
                f"rounds}}), and {suggestion}. To search every parameter in a single stage instead, give the "
                f"whole list: hydra.sweeper.rounds=[{{trials:4,top_k:2,overrides:['trainer.epochs=2']}},...].")
    return None


STAGE_KEY = "hydra.sweeper.stages."


def missing_stage(arguments: List[str]) -> Optional[str]:
    """The paragraph for a key of a stage the preset lacks (``hydra.sweeper.stages.2.rounds.0.trials=2``: the pinpoint
    stage the README counts first is not one of them), where OmegaConf would say only that a dict is not a
    StageConf. None when no argument is such a key, or when the arguments give ``hydra.sweeper.stages`` a list."""
    if any(override_key(a) == "hydra.sweeper.stages" for a in arguments):
        return None
    stages = _preset_stages()
    for argument in arguments:
        key, _ = split_override(argument)
        index = key[len(STAGE_KEY):].partition(".")[0] if key.startswith(STAGE_KEY) else ""
        if index.isdigit() and int(index) >= len(stages):
            listed = ", ".join(f"{i}: {stage.name}" for i, stage in enumerate(stages))
            return (f"{argument} changes stage {index} of hydra.sweeper.stages, whose stages are {listed}; the "
                    f"pinpoint stage before them is hydra.sweeper.pinpoint (hydra.sweeper.pinpoint.num=...). To "
                    f"add a stage, give the whole list: hydra.sweeper.stages=[{{name:...,params:[...],rounds:[...]}},"
                    f"...].")
    return None


def unknown_setting(key: str, value: Any, text: bool = False) -> Optional[str]:
    """The paragraph for ``hydra.sweeper.<key>`` when a part of ``key`` is not a setting of the coarse_to_fine sweeper
    (:class:`CoarseToFineSweeperConf`, its ``pinpoint`` and ``pruning`` followed into): the settings there and the
    nearest one; with ``text`` (the command line's override), also a value the setting cannot take; None when it is
    fine."""
    from expt.config import not_a_setting

    return not_a_setting("hydra.sweeper.", key, value, CoarseToFineSweeperConf, "the coarse_to_fine sweeper", text)
