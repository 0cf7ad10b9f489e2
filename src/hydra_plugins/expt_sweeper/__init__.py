"""Hydra sweeper plugin ``hydra/sweeper=coarse_to_fine``: coarse-to-fine random search.

Hydra discovers sweepers in the ``hydra_plugins`` namespace package; the search logic itself
lives in :mod:`expt.search`, which this package adapts to Hydra's Sweeper and Launcher API.
"""
