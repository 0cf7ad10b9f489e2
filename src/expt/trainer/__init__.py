"""Training: one epoch loop (:mod:`.loop`), the step engines behind it (:mod:`.engine` for one model,
:mod:`.vmap` for a population) and the record each run keeps (:mod:`.record`).

Imports run one way: loop, vmap -> engine, record -> build (the population launcher brings vmap's engine).
"""

from expt.trainer.engine import SingleEngine
from expt.trainer.loop import Trainer
from expt.trainer.record import RunRecord
from expt.trainer.vmap import VmapEngine

__all__ = ["Trainer", "RunRecord", "SingleEngine", "VmapEngine"]
