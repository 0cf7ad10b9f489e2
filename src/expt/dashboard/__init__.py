"""What TensorBoard shows of a run and of a sweep: ``tensorboard --logdir <run or sweep dir>``.

writer
    :class:`Dashboard`, the TensorBoard writer of one run (what it writes, and when), and the
    C checksums of its event records.
diagnostics
    The layer diagnostics it writes: weight tensors, activations and gradients on a probe batch,
    histograms, the first layer's filters as an image, the model summary.
hparams
    The run's hyperparameters and final metrics for the HParams tab.
sweep_plot
    :func:`plot_sweep` draws a finished sweep: the objective against each searched parameter.

Every name is importable from ``expt.dashboard`` itself. Imports among the modules run one way:
sweep_plot -> writer -> diagnostics, hparams.
"""

from __future__ import annotations

from expt.dashboard.diagnostics import (
    HISTOGRAM_BINS,
    HISTOGRAM_SAMPLE,
    MAX_FILTER_TILES,
    MIN_TILE_PIXELS,
    REPEATS_INPUT,
    filter_grid,
    first_layer,
    histogram_stats,
    layer_label,
    model_summary,
    probe_layers,
    weight_tensors,
)
from expt.dashboard.hparams import (
    HPARAM_METRICS,
    SWEEP_ROUND_ENV,
    hparams_summaries,
    inferred_choices,
    run_hparams,
)
from expt.dashboard.sweep_plot import best_trial, plot_sweep
from expt.dashboard.writer import (
    EVENT_QUEUE,
    FLUSH_SECONDS,
    SCALARS,
    Dashboard,
    _masked_crc32c,
    dashboard_settings,
    use_c_checksums,
)

__all__ = [
    "Dashboard", "dashboard_settings", "use_c_checksums", "SCALARS", "EVENT_QUEUE", "FLUSH_SECONDS",
    "layer_label", "weight_tensors", "first_layer", "probe_layers", "histogram_stats", "filter_grid",
    "model_summary", "REPEATS_INPUT", "MAX_FILTER_TILES", "MIN_TILE_PIXELS", "HISTOGRAM_BINS", "HISTOGRAM_SAMPLE",
    "run_hparams", "inferred_choices", "hparams_summaries", "HPARAM_METRICS", "SWEEP_ROUND_ENV",
    "plot_sweep", "best_trial",
    "_masked_crc32c",  # private, but the tests check that tensorboard's record writer uses this one
]
