"""The ``Sweeper`` Hydra instantiates for ``hydra/sweeper=coarse_to_fine``.

It only forwards to :class:`._impl.CoarseToFineSweeperImpl`, imported when a sweep is
configured, so that Hydra's plugin discovery stays cheap for every other command. Its keys are
those of :class:`.config.CoarseToFineSweeperConf`. The settings are checked in ``setup`` rather
than in ``__init__``, because Hydra wraps an error raised while it instantiates the sweeper in
its own message; an error of the settings or of the search space reaches the user as its
paragraph alone (:mod:`.errors`).
"""

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CoarseToFineSweeper(Sweeper):
    """Staged coarse-to-fine random search over ``hydra.sweeper.params`` (see expt.search)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.sweeper: Any = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from expt.search import SearchConfigError

        from ._impl import CoarseToFineSweeperImpl
        from .config import unknown_setting
        from .errors import compact

        try:
            for key, value in self.settings.items():  # a key added with "+", which the schema did not check
                problem = unknown_setting(key, value)
                if problem is not None:
                    raise SearchConfigError(problem)
            self.sweeper = CoarseToFineSweeperImpl(**self.settings)
        except SearchConfigError as error:
            raise compact(error) from error
        self.sweeper.setup(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweeper.sweep(arguments)
