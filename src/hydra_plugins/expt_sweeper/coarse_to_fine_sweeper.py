"""The ``Sweeper`` Hydra instantiates for ``hydra/sweeper=coarse_to_fine``.

It only forwards to :class:`._impl.CoarseToFineSweeperImpl`, imported when a sweep is
configured, so that Hydra's plugin discovery stays cheap for every other command.
"""

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CoarseToFineSweeper(Sweeper):
    """Coarse-to-fine random search over ``hydra.sweeper.params`` (see expt.search)."""

    def __init__(
        self,
        params: Optional[DictConfig],
        rounds: Any,
        seed: int,
        direction: Any,
        margin: float,
        edge: float,
        max_edge_moves: int,
        limits: Optional[DictConfig],
        max_batch_size: Optional[int],
        pinpoint: Any,
    ) -> None:
        from ._impl import CoarseToFineSweeperImpl

        self.sweeper = CoarseToFineSweeperImpl(
            params=params,
            rounds=rounds,
            seed=seed,
            direction=direction,
            margin=margin,
            edge=edge,
            max_edge_moves=max_edge_moves,
            limits=limits,
            max_batch_size=max_batch_size,
            pinpoint=pinpoint,
        )

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.sweeper.setup(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweeper.sweep(arguments)
