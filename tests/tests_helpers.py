"""Small user-side classes that tests name with ``_target_``, as a user's own module would be."""

import torch


class Negate:
    """An augmentation of one's own: (batch, generator) -> batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -x
