"""What TensorBoard shows of a run and of a sweep: ``tensorboard --logdir <run or sweep dir>``.

writer
    :class:`Dashboard`, the TensorBoard writer of one run (what it writes, and when), and the
    C checksums of its event records.
background
    The dashboard's thread: the host-side work of the diagnostics (records, images, the graph, the
    file's flush), handed over once the device's numbers have reached the host.
diagnostics
    The layer diagnostics it writes: weight tensors, activations and gradients on a probe batch,
    histograms, the first layer's filters as an image, the model summary.
hparams
    The run's hyperparameters and final metrics for the HParams tab; where it stands in a sweep and
    the readable name it is shown under.
diagnosis
    The run's learning curves read as "overfitting", "underfitting" or "healthy".
sweep_plot
    :func:`plot_sweep` draws a finished sweep: the metric against each searched parameter, and the
    best-so-far history.

Every name is importable from ``expt.dashboard`` itself. Imports among the modules run one way:
sweep_plot -> writer -> background, diagnostics, hparams -> diagnosis.
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
    histogram_fields,
    histogram_stats,
    histogram_table,
    layer_label,
    model_summary,
    probe_layers,
    weight_tensors,
)
from expt.dashboard.diagnosis import DIAGNOSES, Diagnosis, diagnose
from expt.dashboard.hparams import (
    HPARAM_METRICS,
    TABLE_METRICS,
    SweepContext,
    hparams_summaries,
    inferred_choices,
    run_hparams,
    run_label,
    sweep_context,
)
from expt.dashboard.sweep_plot import best_trial, best_trials, plot_sweep
from expt.dashboard.writer import (
    EVENT_QUEUE,
    FLUSH_SECONDS,
    LABEL_FILE,
    LAYOUT,
    SCALARS,
    UPDATE_RATIO,
    Dashboard,
    _masked_crc32c,
    dashboard_settings,
    heavy_diagnostics,
    use_c_checksums,
)

__all__ = [
    "Dashboard", "dashboard_settings", "use_c_checksums", "SCALARS", "EVENT_QUEUE", "FLUSH_SECONDS",
    "layer_label", "weight_tensors", "first_layer", "probe_layers", "histogram_stats", "histogram_table",
    "histogram_fields", "filter_grid",
    "model_summary", "REPEATS_INPUT", "MAX_FILTER_TILES", "MIN_TILE_PIXELS", "HISTOGRAM_BINS", "HISTOGRAM_SAMPLE",
    "run_hparams", "inferred_choices", "hparams_summaries", "HPARAM_METRICS", "TABLE_METRICS",
    "SweepContext", "sweep_context", "run_label", "heavy_diagnostics",
    "LABEL_FILE", "LAYOUT", "UPDATE_RATIO", "diagnose", "Diagnosis", "DIAGNOSES",
    "plot_sweep", "best_trial", "best_trials",
    "_masked_crc32c",  # private, but the tests check that tensorboard's record writer uses this one
]
