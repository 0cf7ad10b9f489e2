"""Structured config of the coarse-to-fine sweeper, registered as ``hydra/sweeper=coarse_to_fine``.

Its defaults are expt's preset: three rounds over ``optimizer.lr`` and ``regularization.l2``
(broad with 1 epoch, narrower with 3, fine with 10), about 11 s on two CPU cores.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


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

    enabled: bool = False
    param: str = "optimizer.lr"
    low: float = 1.0e-6
    high: float = 1.0
    num: int = 7
    overrides: List[str] = field(
        default_factory=lambda: ["data.subset=100", "regularization=none", "trainer.epochs=10"]
    )
    metric: Optional[str] = None
    threshold: Optional[float] = None


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
    seed: int = 0
    direction: Direction = Direction.maximize
    # Narrowing: the top trials' span plus margin x the current width on each side.
    margin: float = 0.1
    # A best value in the outer `edge` fraction of its range moves the range past that edge.
    edge: float = 0.1
    max_edge_moves: int = 3
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
