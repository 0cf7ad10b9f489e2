"""Structured config of the coarse-to-fine sweeper, registered as ``hydra/sweeper=coarse_to_fine``.

Its defaults are expt's preset: three rounds over ``optimizer.lr`` and ``regularization.l2``
(broad with 1 epoch, narrower with 3, fine with 10), about 11 s on two CPU cores.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from expt.search import Pinpoint, Settings


class Direction(Enum):
    """Whether a larger or a smaller return value of the task is better."""

    maximize = 1
    minimize = 2


@dataclass
class RoundConf:
    """One round: ``trials`` random trials with ``overrides``; its ``top_k`` best set the next ranges."""

    trials: int = 10
    top_k: int = 3
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


def _preset_params() -> Dict[str, Any]:
    return {
        "optimizer.lr": "tag(log, interval(1e-6, 1e-1))",
        "regularization.l2": "tag(log, interval(1e-6, 1e-1))",
    }


def _preset_rounds() -> List[RoundConf]:
    return [
        RoundConf(trials=10, top_k=3, overrides=["trainer.epochs=1"]),
        RoundConf(trials=5, top_k=2, overrides=["trainer.epochs=3"]),
        RoundConf(trials=2, top_k=1, overrides=["trainer.epochs=10"]),
    ]


@dataclass
class CoarseToFineSweeperConf:
    """Every key of ``hydra.sweeper`` when ``hydra/sweeper=coarse_to_fine``."""

    _target_: str = "hydra_plugins.expt_sweeper.coarse_to_fine_sweeper.CoarseToFineSweeper"
    # Search space in Hydra's override grammar, keys dotted or nested; a plain value is a
    # fixed override for every trial, null drops the key from the search.
    params: Optional[Dict[str, Any]] = field(default_factory=_preset_params)
    rounds: List[RoundConf] = field(default_factory=_preset_rounds)
    seed: int = Settings.seed
    direction: Direction = Direction[Settings.direction]
    # Narrowing: the top trials' span plus margin x the current width on each side.
    margin: float = Settings.margin
    # A best value in the outer `edge` fraction of its range moves the range past that edge.
    edge: float = Settings.edge
    max_edge_moves: int = Settings.max_edge_moves
    # Hard limits per parameter in interval notation, e.g. "[0, 1)"; keys dotted or nested.
    limits: Dict[str, Any] = field(
        default_factory=lambda: {"regularization.dropout": "[0, 1)", "optimizer.momentum": "[0, 1)"}
    )
    # Trials handed to the launcher at once (null: a whole round).
    max_batch_size: Optional[int] = None
    pinpoint: PinpointConf = field(default_factory=PinpointConf)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="coarse_to_fine",
    node=CoarseToFineSweeperConf,
    provider="expt_sweeper",
)
