"""Hydra launcher plugin ``hydra/launcher=population``: trials that differ only in per-member values train together.

The fused training itself is :mod:`expt.population`; this package adapts it to Hydra's Launcher API.
"""
