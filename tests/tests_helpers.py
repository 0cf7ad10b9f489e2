"""Small user-side classes that tests name with ``_target_``, as a user's own module would be."""

import os
import time

import torch


class Negate:
    """An augmentation of one's own: (batch, generator) -> batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -x


PAUSE_ENV = "EXPT_TEST_PAUSE_AT"


class PauseAt:
    """An augmentation that changes nothing, and holds the run still at one step for a test to signal it there.

    With ``EXPT_TEST_PAUSE_AT=<n>:<path>`` in the environment, the n-th batch this process augments (counted
    from 1) creates ``<path>`` and waits until a signal ends the wait (at most 10 minutes). Where ``<path>``
    exists already it does not wait, so a resumed or requeued run goes straight on; without the variable it
    is the identity, and a run with it gives the numbers of the same run without it.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        at, _, path = os.environ.get(PAUSE_ENV, "").partition(":")
        if at and self.calls == int(at) and not os.path.exists(path):
            open(path, "w").close()
            for _ in range(6000):  # a signal (SIGINT, SIGKILL, a requeue's SIGUSR2) ends this
                time.sleep(0.1)
        return x
