"""Hydra sweeper plugin: coarse-to-fine random search."""
