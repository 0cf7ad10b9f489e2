"""What a run writes for TensorBoard, read back with TensorBoard's own reader and served by its own server."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import numbers, run_cli, start_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata as hparams_metadata

import expt
from expt import board, dashboard
from expt.dashboard import filter_grid, plot_sweep
from expt.build import build

CORE_SCALARS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "loss/train_data")
DIAGNOSTICS_OFF = tuple(f"dashboard.{k}=false" for k in ("update_ratio", "histograms", "filters", "graph", "summary"))
# 500 samples in batches of 100: 5 steps per epoch; with log_every=2 the logging steps are 2, 4 and 5 of each epoch.
SMALL_RUN = ("trainer.epochs=3", "trainer.batch_size=100", "data.subset=500", "trainer.log_every=2",
             "regularization=[l2,dropout,batchnorm]")
EPOCHS, STEPS_PER_EPOCH = 3, 5
SWEEP_LRS = (1e-3, 3e-3)
SWEEP_LABELS = ("r2-j000 lr=1.0e-3", "r2-j001 lr=3.0e-3")  # the names expt gives the two trials


def read_events(path: Path) -> EventAccumulator:
    """Every event of one run directory (size guidance 0: keep them all)."""
    guidance = {kind: 0 for kind in ("scalars", "histograms", "images", "tensors", "compressedHistograms", "audio")}
    acc = EventAccumulator(str(path), size_guidance=guidance)
    acc.Reload()
    return acc


def hparams_content(acc: EventAccumulator) -> dict[str, bytes]:
    return acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)


def experiment_of(acc: EventAccumulator):
    return hparams_metadata.parse_experiment_plugin_data(hparams_content(acc)[hparams_metadata.EXPERIMENT_TAG])


def texts(acc: EventAccumulator) -> dict[str, list[str]]:
    """Text tag -> its texts, one per step."""
    return {tag.removesuffix("/text_summary"): [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"] if tag.endswith("/text_summary")}


def layout_of(acc: EventAccumulator):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata as cs_metadata

    (event,) = acc.Tensors(cs_metadata.CONFIG_SUMMARY_TAG)
    return layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])


def session_hparams(acc: EventAccumulator) -> dict:
    """The run's hparams as plain Python values, from its session_start_info."""
    start = hparams_metadata.parse_session_start_info_plugin_data(
        hparams_content(acc)[hparams_metadata.SESSION_START_INFO_TAG]
    )
    return {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in start.hparams.items()}


def session_status(acc: EventAccumulator) -> int:
    end = hparams_content(acc)[hparams_metadata.SESSION_END_INFO_TAG]
    return hparams_metadata.parse_session_end_info_plugin_data(end).status


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_on(tmp_path_factory) -> tuple[dict, EventAccumulator]:
    """A 3-epoch run with every diagnostic on (the defaults): its metrics and its events."""
    run_dir = tmp_path_factory.mktemp("run_on")
    metrics = expt.train(expt.compose(list(SMALL_RUN)), run_dir=run_dir)
    return metrics, read_events(run_dir)


@pytest.fixture(scope="module")
def run_off(tmp_path_factory) -> tuple[dict, EventAccumulator]:
    """The same run with every diagnostic switched off."""
    run_dir = tmp_path_factory.mktemp("run_off")
    metrics = expt.train(expt.compose([*SMALL_RUN, *DIAGNOSTICS_OFF]), run_dir=run_dir)
    return metrics, read_events(run_dir)


_SWEEPS: dict[str, Path] = {}
RUN_OVERRIDES = ("trainer.epochs=3", "data.subset=300")


def small_run(tmp_path_factory) -> Path:
    """A real ``python -m expt`` run (3 epochs on 300 digits) in ``<tmp>/outputs/run``, once per test session."""
    if "run" not in _SWEEPS:
        root = tmp_path_factory.mktemp("cli_run")
        run_dir = root / "outputs" / "run"
        proc = run_cli(*RUN_OVERRIDES, f"hydra.run.dir={run_dir}", cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _SWEEPS["run"] = run_dir
    return _SWEEPS["run"]


def small_sweep(tmp_path_factory) -> Path:
    """A real two-trial Hydra multirun (optimizer.lr=1e-3,3e-3 on a log scale), run once per test session.

    The round number and the final-round flag travel as the coarse-to-fine sweeper sends them,
    through ``hydra.job.env_set``; trials of the final round write every diagnostic.
    """
    if "sweep" not in _SWEEPS:
        root = tmp_path_factory.mktemp("sweep")
        sweep_dir = root / "multirun"
        proc = run_cli(
            "-m", "trainer.epochs=2", "data.subset=200",
            "optimizer.lr=tag(log, choice(" + ",".join(map(str, SWEEP_LRS)) + "))",
            f"hydra.sweep.dir={sweep_dir}", "hydra.job.env_set.EXPT_SWEEP_ROUND=2",
            "hydra.job.env_set.EXPT_SWEEP_FINAL=1", cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _SWEEPS["sweep"] = sweep_dir
    return _SWEEPS["sweep"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return small_sweep(tmp_path_factory)


# ---------------------------------------------------------------------------------------------- scalars
def test_scalar_tags_and_step_counts(run_on):
    metrics, acc = run_on
    tags = set(acc.Tags()["scalars"])
    assert set(CORE_SCALARS) <= tags
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    for tag in CORE_SCALARS[1:]:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, EPOCHS + 1)), tag
    assert [e.value for e in acc.Scalars("accuracy/val")] == pytest.approx([h["val_acc"] for h in metrics["history"]])
    # the training data loss is measured as the validation loss is: eval mode, no penalty, per epoch
    train_data = [e.value for e in acc.Scalars("loss/train_data")]
    assert train_data == pytest.approx([h["train_data_loss"] for h in metrics["history"]])
    penalty = [e.value for e in acc.Scalars("loss/penalty")]
    assert [e.step for e in acc.Scalars("loss/penalty")] == list(range(1, EPOCHS + 1)) and all(p > 0 for p in penalty)
    assert train_data[-1] < train_data[0]


def test_a_per_step_schedule_shows_its_rate_at_every_logging_step(tmp_path, run_on):
    """onecycle changes the rate every batch: lr/step holds the rate of each logging step's update (steps 2, 4 and 5
    of each epoch), the schedule's own numbers, on a chart of its own after the epochs' lr; lr stays the rate of
    each epoch's first step. A schedule that steps per epoch writes no lr/step and no such chart."""
    from expt.dry_run import learning_rate

    cfg = expt.compose([*SMALL_RUN, *DIAGNOSTICS_OFF, "schedule=onecycle"])
    metrics = expt.train(cfg, run_dir=tmp_path)
    acc = read_events(tmp_path)
    rate = learning_rate(cfg, STEPS_PER_EPOCH)
    logging_steps = [e * STEPS_PER_EPOCH + s for e in range(EPOCHS) for s in (2, 4, 5)]
    per_step = acc.Scalars("lr/step")
    assert [e.step for e in per_step] == logging_steps
    assert [e.value for e in per_step] == pytest.approx([rate.rate(s - 1) for s in logging_steps], rel=1e-6)
    assert len({round(e.value, 9) for e in per_step[:3]}) == 3  # it changes within the first epoch
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([h["lr"] for h in metrics["history"]], rel=1e-6)
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([rate.rate(e * STEPS_PER_EPOCH) for e in range(EPOCHS)])
    charts = {c.title: list(c.multiline.tag) for cat in layout_of(acc).category for c in cat.chart}
    titles = list(charts)
    assert charts[dashboard.writer.STEP_RATE_CHART] == ["^lr/step$"]
    assert titles.index(dashboard.writer.STEP_RATE_CHART) == titles.index("learning rate") + 1
    _, epoch_schedule = run_on  # the default schedule steps per epoch
    assert "lr/step" not in epoch_schedule.Tags()["scalars"]
    assert dashboard.writer.STEP_RATE_CHART not in {c.title for cat in layout_of(epoch_schedule).category
                                                    for c in cat.chart}


def test_the_recipes_pair_comes_first_on_the_custom_scalars_page(run_on):
    """Category 1: accuracy train vs val on one chart, data loss train vs val on another; regexes match the tags."""
    import re

    _, acc = run_on
    layout = layout_of(acc)
    first = layout.category[0]
    assert "train vs val" in first.title
    (accuracy, loss) = first.chart
    tags = acc.Tags()["scalars"]
    matched = [sorted(t for t in tags if any(re.search(rx, t) for rx in chart.multiline.tag)) for chart in (accuracy, loss)]
    assert matched == [["accuracy/train", "accuracy/val"], ["loss/train_data", "loss/val"]]
    charts = [c.title for cat in layout.category for c in cat.chart]
    assert any("update ratio" in c for c in charts) and any("per step" in c for c in charts)


def test_update_ratios_at_the_logging_steps_in_a_healthy_range(run_on):
    """log10 of one ratio per weight tensor (conv and both linears) at each logging step, beside a -3 reference;
    Adam at lr 1e-3 moves ~1e-3."""
    _, acc = run_on
    prefix = "diagnostics/update_ratio_log10/"
    reference = prefix + "reference_1e-3"
    ratio_tags = sorted(t for t in acc.Tags()["scalars"] if t.startswith(prefix) and t != reference)
    assert [t.rsplit("/", 1)[1].split(".", 1)[1] for t in ratio_tags] == ["Conv2d", "Linear", "Linear"]
    logging_steps = [epoch * STEPS_PER_EPOCH + i for epoch in range(EPOCHS) for i in (2, 4, 5)]
    assert [(e.step, e.value) for e in acc.Scalars(reference)] == [(s, -3.0) for s in logging_steps]
    for tag in ratio_tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == logging_steps, tag
        values = [e.value for e in events]
        classifier = max(ratio_tags, key=lambda t: int(t.rsplit("/", 1)[1].split(".")[0]))
        if tag == classifier:  # it starts at a twentieth of the formula's sigma: large ratios that shrink
            assert all(-4 < v < 0 for v in values) and values[-1] < values[0], (tag, values)
        else:
            assert all(-5 < v < -1 for v in values), (tag, values)


def test_a_learning_rate_too_small_shows_apart_from_a_healthy_one(tmp_path):
    """On the log10 axis a rate of 1e-6 sits three decades below Adam's 1e-3 instead of on zero."""
    expt.train(expt.compose(["trainer.epochs=1", "data.subset=200", "optimizer.lr=1e-6", *DIAGNOSTICS_OFF[1:]]),
               run_dir=tmp_path)
    acc = read_events(tmp_path)
    conv = [e.value for e in acc.Scalars("diagnostics/update_ratio_log10/0.Conv2d")]
    assert all(-8 < v < -5 for v in conv), conv


# ---------------------------------------------------------------------------------------------- histograms, images, text
def test_histograms_filters_text_and_graph(run_on):
    _, acc = run_on
    tags = acc.Tags()
    activations = [t for t in tags["histograms"] if t.startswith("activations/")]
    gradients = [t for t in tags["histograms"] if t.startswith("gradients/")]
    kinds = {t.split(".", 1)[1] for t in activations}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Linear", "BatchNorm1d"} <= kinds
    assert not {"Dropout", "Flatten"} & kinds  # pass-through in eval mode: no new information
    assert len(gradients) == 3
    for tag in activations + gradients:
        steps = [e.step for e in acc.Histograms(tag)]
        assert steps == list(range(EPOCHS + 1)), tag  # the initialised model, then every epoch
    assert all(e.histogram_value.num > 0 for e in acc.Histograms("gradients/0.Conv2d"))

    # 3x3 filters carry a note, so they are written in the form TensorBoard converts images to (tensors)
    filters = "filters/0.Conv2d"
    assert not tags["images"] and filters in tags["tensors"]
    assert "look like noise" in acc.SummaryMetadata(filters).summary_description
    images = acc.Tensors(filters)
    assert [e.step for e in images] == list(range(EPOCHS + 1))
    # 64 filters of 3x3, each enlarged to 15x15, in an 8x8 grid with 2-pixel gaps
    width, height = (int(v) for v in images[0].tensor_proto.string_val[:2])
    assert (width, height) == (8 * 17 + 2, 8 * 17 + 2)

    text = texts(acc)
    config, summary = text["config"][-1], text["model/summary"][0]
    assert "_target_: expt.models.ConvNet" in config and "log_every: 2" in config
    from tensorboard.plugin_util import markdown_to_safe_html

    shown = markdown_to_safe_html(config)  # as the Text tab renders it: after the header's list, a code block
    assert "<pre><code>data:" in shown and "_target_: expt.models.ConvNet" in shown and "<em>" not in shown
    assert "<pre><code>" in markdown_to_safe_html(summary)
    model = build(expt.compose(list(SMALL_RUN))).model
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in summary
    assert "0.Conv2d" in summary
    assert tags["graph"]


def test_diagnostics_off_leaves_them_out_and_changes_no_number(run_on, run_off):
    on_metrics, on = run_on
    off_metrics, off = run_off
    tags = off.Tags()
    assert not tags["histograms"] and not tags["images"] and not tags["graph"]
    assert not [t for t in tags["scalars"] if t.startswith("diagnostics/")]
    assert sorted(tags["tensors"]) == ["config/text_summary", "custom_scalars__config__"]
    assert numbers(on_metrics) == numbers(off_metrics)
    assert on_metrics["test_acc"] == off_metrics["test_acc"]
    for tag in CORE_SCALARS:
        assert [e.value for e in on.Scalars(tag)] == [e.value for e in off.Scalars(tag)], tag


def test_mlp_filters_are_its_units_reshaped_to_the_image(tmp_path):
    metrics = expt.train(expt.compose(["model=mlp", "trainer.epochs=1", "data.subset=100"]), run_dir=tmp_path)
    assert metrics["status"] == "completed"
    acc = read_events(tmp_path)
    (tag,) = acc.Tags()["images"]
    assert tag == "filters/1.Linear"
    image = acc.Images(tag)[-1]
    # the first 64 of its 256 units, 8x8 pixels each enlarged 2x to 16x16, in an 8x8 grid with 2-pixel gaps
    assert (image.width, image.height) == (8 * 18 + 2, 8 * 18 + 2)


def test_every_epoch_is_on_disk_when_its_checkpoint_is_written(tmp_path, monkeypatch):
    """The writer queues many events (an epoch of 40 steps here) and writes them on its own thread, but a
    checkpoint is written only once every event before it is in the file."""
    from expt import checkpoint as checkpoints

    seen: list[tuple[int, int, int]] = []
    real_save = checkpoints.save

    def read_then_save(state, path):
        if path.name == checkpoints.LAST:
            acc = read_events(tmp_path)
            seen.append((state["epoch"], len(acc.Scalars("loss/train")), len(acc.Scalars("loss/val"))))
        real_save(state, path)

    monkeypatch.setattr(checkpoints, "save", read_then_save)
    expt.train(expt.compose(["trainer.epochs=2", "data.subset=400", "trainer.batch_size=10", "trainer.log_every=7",
                             "trainer.checkpoint_interval=0", *DIAGNOSTICS_OFF]), run_dir=tmp_path)
    assert seen == [(1, 40, 1), (2, 80, 2)]


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_has_every_diagnostic_before_it(tmp_path):
    """SIGKILL right after epoch 2's last.pt: histograms, filters and the graph of epochs 0-2 are in the file."""
    from expt.faults import ENV

    run_dir = tmp_path / "killed"
    proc = run_cli(*SMALL_RUN, "trainer.epochs=4", "trainer.checkpoint_interval=0", f"hydra.run.dir={run_dir}",
                   cwd=tmp_path, env={ENV: "last.pt:replaced@2"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    acc = read_events(run_dir)
    assert [e.step for e in acc.Histograms("gradients/0.Conv2d")][:3] == [0, 1, 2]
    assert [e.step for e in acc.Tensors("filters/0.Conv2d")][:3] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("accuracy/val")][:2] == [1, 2]
    assert acc.Tags()["graph"]


def test_histogram_table_bins_many_tensors_at_once_as_histc_bins_each():
    from expt.dashboard import histogram_fields, histogram_table

    g = torch.Generator().manual_seed(0)
    big = torch.randn(300_000, generator=g)
    holes = torch.randn(500, generator=g) * 4
    holes[::7] = math.nan
    holes[1::11] = math.inf
    tensors = [torch.randn(3, 40, generator=g), holes, torch.full((9,), 2.5), torch.full((4,), math.nan), big]
    rows = histogram_table(tensors, bins=16, max_values=1 << 16).tolist()
    assert len(rows) == 5
    for values, row in zip(tensors[:2], rows[:2]):
        finite = values.flatten()[torch.isfinite(values.flatten())]
        fields = histogram_fields(row)
        lo, hi = float(finite.min()), float(finite.max())
        assert (fields["min"], fields["max"], fields["num"]) == (lo, hi, finite.numel())
        assert fields["sum"] == pytest.approx(float(finite.double().sum()))
        assert fields["sum_squares"] == pytest.approx(float(finite.double().square().sum()))
        assert fields["bucket_counts"] == [0.0, *torch.histc(finite, bins=16, min=lo, max=hi).tolist()]
        assert fields["bucket_limits"] == pytest.approx(torch.linspace(lo, hi, 17, dtype=torch.float64).tolist())
    constant = histogram_fields(rows[2])  # one bucket
    assert (constant["bucket_limits"], constant["bucket_counts"], constant["sum"]) == ([2.5, 2.5], [0.0, 9.0], 22.5)
    assert histogram_fields(rows[3]) is None  # nothing finite
    assert histogram_fields(rows[4])["num"] == 1 << 16  # a fixed sample of the large tensor


def test_the_dashboard_thread_runs_in_order_takes_values_as_submitted_and_survives_a_failure(caplog):
    from expt.dashboard.background import Background

    seen: list[object] = []
    weights = torch.zeros(3)
    background = Background()
    background.submit("first", lambda w: seen.append(w.tolist()), [weights])
    weights += 1  # training changes the weights in place after the submission
    for _ in range(2):
        background.submit("a broken diagnostic", lambda: 1 / 0)
    background.submit("last", lambda: seen.append("last"))
    background.drain()
    assert seen == [[0.0, 0.0, 0.0], "last"]
    warnings = [r.getMessage() for r in caplog.records if "a broken diagnostic" in r.getMessage()]
    assert len(warnings) == 1 and "ZeroDivisionError" in warnings[0]


def test_event_records_pass_tensorboards_own_checksum(tmp_path):
    """Records framed with the C checksums pass tensorboard's Python CRC-32C, images and scalars alike."""
    import struct

    import google_crc32c
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    if google_crc32c.implementation != "c":
        pytest.skip("google-crc32c has no C build on this platform: tensorboard's own checksums are used")
    expt.train(expt.compose(["trainer.epochs=1", "data.subset=200"]), run_dir=tmp_path)
    assert record_writer.masked_crc32c is dashboard._masked_crc32c
    sizes = []
    for events in tmp_path.glob("events.out.tfevents.*"):  # the run's events and its HParams session
        raw, offset = events.read_bytes(), 0
        while offset < len(raw):
            header = raw[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", raw[offset + 8:offset + 12])
            data = raw[offset + 12:offset + 12 + length]
            (data_crc,) = struct.unpack("<I", raw[offset + 12 + length:offset + 16 + length])
            assert header_crc == masked_crc32c(header) and data_crc == masked_crc32c(data)
            sizes.append(length)
            offset += 16 + length
    assert len(sizes) > 20 and max(sizes) > 1000  # the per-step losses and the filter images


def test_histograms_of_large_tensors_use_a_fixed_sample_of_the_same_shape():
    from expt.dashboard import histogram_stats

    values = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    state = torch.get_rng_state()
    stats = histogram_stats(values, max_values=1 << 16)
    assert torch.equal(torch.get_rng_state(), state)  # training's random stream is left alone
    assert stats["num"] == 1 << 16 == sum(stats["bucket_counts"])
    mean = stats["sum"] / stats["num"]
    std = math.sqrt(stats["sum_squares"] / stats["num"] - mean**2)
    assert mean == pytest.approx(1, abs=0.05) and std == pytest.approx(3, rel=0.02)
    # the sample's cumulative distribution at each bucket edge is the whole tensor's (Kolmogorov-Smirnov < 0.01)
    edges = torch.tensor(stats["bucket_limits"])
    sample_cdf = torch.tensor(stats["bucket_counts"]).cumsum(0) / stats["num"]
    tensor_cdf = (values[None, :] <= edges[:, None].float()).double().mean(dim=1)
    assert float((sample_cdf - tensor_cdf).abs().max()) < 0.01
    assert histogram_stats(values, max_values=1 << 16) == stats  # the same entries every time
    small = histogram_stats(values[:1000], max_values=1 << 16)
    assert small["num"] == 1000 and small["sum"] == pytest.approx(float(values[:1000].double().sum()))


def test_filter_grid_tiles():
    conv = torch.randn(5, 3, 4, 4)
    grid = filter_grid(conv)
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # 3 columns, 2 rows of 16x16 RGB tiles
    assert 0.0 <= float(grid.min()) and float(grid.max()) <= 1.0
    assert filter_grid(torch.randn(4, 2, 3, 3)).shape[0] == 1  # neither grey nor RGB: averaged
    assert filter_grid(torch.randn(10, 7)) is None  # a linear layer on non-image input


# ---------------------------------------------------------------------------------------------- hparams
def test_hparams_of_a_python_api_run(run_on):
    metrics, acc = run_on
    params = session_hparams(acc)
    assert params["model"] == "ConvNet" and params["optimizer"] == "Adam" and params["data"] == "digits"
    assert params["regularization"] == "l2+dropout+batchnorm"
    assert params["_1_status"] == "completed" and params["_2_diagnosis"] in dashboard.DIAGNOSES
    assert session_status(acc) == api_pb2.STATUS_SUCCESS
    for tag, key in (("hparams/best_val_acc", "best_val_acc"), ("hparams/test_acc", "test_acc"),
                     ("hparams/final_val_acc", "final_val_acc"), ("hparams/final_train_loss", "final_train_loss")):
        (event,) = acc.Scalars(tag)
        assert event.value == pytest.approx(metrics[key]) and event.step == EPOCHS
    experiment = experiment_of(acc)
    assert [m.name.tag for m in experiment.metric_infos] == [tag for tag, _ in dashboard.TABLE_METRICS]
    assert {"accuracy/val", "loss/val", "accuracy/train", "loss/train_data"} <= {m.name.tag for m in experiment.metric_infos}
    status = next(i for i in experiment.hparam_infos if i.name == "_1_status")
    assert status.display_name == "status" and status.differs
    assert {v.string_value for v in status.domain_discrete.values} >= {"completed", "diverged", "pruned", "failed"}


def test_each_run_text_starts_with_its_header(run_on, tmp_path):
    metrics, acc = run_on
    first, last = texts(acc)["config"]
    assert first.startswith("**") and "- status: running" in first
    head = last.split("\n\n    ", 1)[0]  # the header, before the config's code block
    assert "- status: completed" in head and f"{100 * metrics['best_val_acc']:.2f}%" in head
    assert "- diagnosis: " in head and "- overrides: none" in head
    assert "- filters: 3x3 kernels" in head


def test_a_diverged_run_is_a_failed_session_with_its_round(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPT_SWEEP_ROUND", "4")
    cfg = expt.compose(["optimizer=sgd", "optimizer.lr=1e3", "trainer.epochs=3", "data.subset=400"])
    metrics = expt.train(cfg, run_dir=tmp_path)
    assert metrics["status"] == "diverged"
    acc = read_events(tmp_path)
    params = session_hparams(acc)
    assert params["_1_status"] == "diverged" and params["_2_diagnosis"] == "diverged" and params["optimizer"] == "SGD"
    assert params["_3_sweep_round"] == "     4"  # an integer, shown as one (TensorBoard prints numbers as 4.0000)
    assert session_status(acc) == api_pb2.STATUS_FAILURE


@pytest.mark.parametrize("final, heavy", [("0", False), ("1", True)])
def test_heavy_diagnostics_in_a_sweep_only_in_its_final_round(tmp_path, monkeypatch, final, heavy):
    """By default (dashboard.sweep_diagnostics=final) a trial writes histograms, filters, graph and the full
    config only when EXPT_SWEEP_FINAL=1; the scalars, update ratios, header and HParams are always there."""
    monkeypatch.setenv("EXPT_SWEEP_ROUND", "1")
    monkeypatch.setenv("EXPT_SWEEP_FINAL", final)
    expt.train(expt.compose(["trainer.epochs=1", "data.subset=100"]), run_dir=tmp_path)
    acc = read_events(tmp_path)
    tags = acc.Tags()
    assert bool(tags["histograms"]) == heavy and bool(tags["graph"]) == heavy
    assert ("filters/0.Conv2d" in tags["tensors"]) == heavy
    config = texts(acc)["config"][-1]
    assert ("_target_: expt.models.ConvNet" in config) == heavy and "- sweep round 1" in config
    assert any(t.startswith("diagnostics/update_ratio_log10/") for t in tags["scalars"])
    assert session_hparams(acc)["_1_status"] == "completed"



def interrupted_at_epoch_2(overrides: list[str], run_dir: Path, monkeypatch) -> None:
    """``expt.train`` stopped by a Ctrl-C where it saves epoch 2: the interrupted run ``run_dir`` keeps."""
    from expt.trainer.record import RunRecord

    save = RunRecord.save

    def interrupting(self, engine):
        if self.epoch == 2:
            raise KeyboardInterrupt
        save(self, engine)

    with monkeypatch.context() as m:
        m.setattr(RunRecord, "save", interrupting)
        with pytest.raises(KeyboardInterrupt):
            expt.train(expt.compose(overrides), run_dir=run_dir)
    assert session_hparams(read_events(run_dir))["_1_status"] == "interrupted"


def test_a_run_started_anew_where_a_run_was_interrupted_is_the_only_session_there(tmp_path, monkeypatch):
    """A rerun from scratch (a sweep's trial run again, or the same hydra.run.dir without trainer.resume)
    replaces the interrupted run: that run's event files, whose HParams session said 'interrupted', go."""
    overrides = ["trainer.epochs=2", "data.subset=100", *DIAGNOSTICS_OFF]
    interrupted_at_epoch_2(overrides, tmp_path, monkeypatch)
    first = set(tmp_path.glob("events.out.tfevents.*"))  # the run's events, and its HParams session apart
    expt.train(expt.compose(overrides), run_dir=tmp_path)
    events = set(tmp_path.glob("events.out.tfevents.*"))
    assert len(first) == len(events) == 2 and not events & first
    acc = read_events(tmp_path)
    assert session_hparams(acc)["_1_status"] == "completed" and session_status(acc) == api_pb2.STATUS_SUCCESS


def test_a_run_resumed_in_its_directory_shows_the_status_it_ended_with(tmp_path, monkeypatch):
    """Interrupted, then resumed in place to its end: TensorBoard takes a tag's HParams content from the first event
    of a run, so the interrupted session must not stay first; the session says completed, and the run's first
    epochs stay (the resumed run keeps their event file)."""
    overrides = ["trainer.epochs=3", "data.subset=100", "trainer.checkpoint_interval=0", *DIAGNOSTICS_OFF]
    interrupted_at_epoch_2(overrides, tmp_path, monkeypatch)
    expt.train(expt.compose([*overrides, f"trainer.resume={tmp_path}"]), run_dir=tmp_path)
    acc = read_events(tmp_path)
    assert session_hparams(acc)["_1_status"] == "completed" and session_status(acc) == api_pb2.STATUS_SUCCESS
    assert sorted({e.step for e in acc.Scalars("loss/val")}) == [1, 2, 3]  # epoch 2 measured twice: before the stop too


def test_sweep_diagnostics_setting():
    from expt.dashboard import SweepContext, heavy_diagnostics
    from expt.errors import ConfigError

    alone, early, last = SweepContext(), SweepContext(round=1, final=False), SweepContext(round=3, final=True)
    assert [heavy_diagnostics(setting, ctx) for setting in ("final", "all", "none") for ctx in (alone, early, last)] == [
        True, False, True,  # final: a run alone and the final round
        True, True, True,  # all
        True, False, False,  # none: only a run alone
    ]
    assert heavy_diagnostics("final", SweepContext(round=1))  # a sweeper that does not say: every round, as before
    with pytest.raises(ConfigError, match=r"dashboard.sweep_diagnostics='some'.*final, all, none"):
        build(expt.compose(["dashboard.sweep_diagnostics=some"]))


def test_every_trial_of_a_multirun_records_its_hparams(sweep_dir):
    trials = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: d.name)
    assert [d.name for d in trials] == ["0", "1"]
    for trial, lr, label in zip(trials, SWEEP_LRS, SWEEP_LABELS):
        assert not [p for p in trial.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))]
        assert (trial / dashboard.LABEL_FILE).read_text().strip() == label
        acc = read_events(trial)
        params = session_hparams(acc)
        assert params["optimizer.lr"] == pytest.approx(lr)
        assert params["_4_00_log10(optimizer.lr)"] == pytest.approx(math.log10(lr), abs=1e-4)  # sampled on a log scale
        assert params["_3_sweep_round"].strip() == "2"
        # the choices the sweep does not vary, and the keys its command line fixes, take no column
        assert not {"model", "activation", "optimizer", "data", "trainer.epochs", "data.subset"} & set(params)
        assert not [k for k in params if k.startswith(("hydra", "dashboard"))]
        assert params["_1_status"] == "completed"
        experiment = experiment_of(acc)
        differs = {info.name: info.display_name for info in experiment.hparam_infos if info.differs}
        assert set(differs) == {"optimizer.lr", "_4_00_log10(optimizer.lr)", "_3_sweep_round", "_1_status", "_2_diagnosis"}
        # TensorBoard ticks the first five by name among those that differ: expt's own columns come first
        assert [differs[name] for name in sorted(differs)[:4]] == ["status", "diagnosis", "sweep round",
                                                                   "log10(optimizer.lr)"]
        metrics = json.loads((trial / "metrics.json").read_text())
        assert acc.Scalars("hparams/best_val_acc")[0].value == pytest.approx(metrics["best_val_acc"])
        assert acc.Tags()["histograms"]  # the final round: every diagnostic


def test_run_labels():
    from expt.dashboard import SweepContext, run_label

    trial = SweepContext(multirun=True, round=2, job=7, overrides=["optimizer.lr=0.0031", "trainer.epochs=3",
                                                                    "model=mlp"], fixed={"trainer.epochs"})
    assert run_label(trial) == "r2-j007 lr=3.1e-3 model=mlp"
    # the sweeper's label, named by the same function (its job number padded so that names sort in job order)
    from expt.sweep_env import trial_name

    label = trial_name(2, 7, ["lr=0.003114"])
    assert label == "r2-j007 lr=0.003114"
    assert run_label(SweepContext(multirun=True, round=2, job=7, label=label)) == label
    alone = SweepContext(overrides=["model=mlp", "trainer.epochs=3"])
    assert run_label(alone, Path("outputs/2026-01-01/10-00-00")) == "10-00-00 model=mlp trainer.epochs=3"
    assert run_label(SweepContext(), Path("outputs/2026-01-01/10-00-00")) == "10-00-00 (defaults)"


# ---------------------------------------------------------------------------------------------- the diagnosis
def rows(train_acc, val_acc, val_loss=None, train_loss=None):
    n = len(train_acc)
    val_loss = val_loss or [1.0 - 0.1 * i for i in range(n)]
    train_loss = train_loss or [1.0 - 0.1 * i for i in range(n)]
    return [{"epoch": i + 1, "train_acc": a, "val_acc": v, "val_loss": vl, "train_data_loss": tl}
            for i, (a, v, vl, tl) in enumerate(zip(train_acc, val_acc, val_loss, train_loss))]


def test_diagnosis_rule():
    from expt.dashboard import diagnose

    assert diagnose(rows([0.97, 0.99, 1.0], [0.95, 0.97, 0.98])).verdict == "healthy"
    assert diagnose(rows([0.98, 0.99, 1.0], [0.95, 0.94, 0.93])).verdict == "overfitting"  # gap 7 points
    # a 3-point gap with the validation loss rising while the training loss falls
    rising = rows([0.98, 0.99, 1.0], [0.97, 0.97, 0.97], val_loss=[0.10, 0.12, 0.15], train_loss=[0.1, 0.05, 0.02])
    assert diagnose(rising).verdict == "overfitting"
    # a strongly regularized run: train and val close together, both low
    assert diagnose(rows([0.80, 0.84, 0.85], [0.80, 0.83, 0.85])).verdict == "underfitting"
    # still learning fast at the end
    assert diagnose(rows([0.90, 0.94, 0.97], [0.90, 0.94, 0.96])).verdict == "underfitting"
    assert diagnose(rows([0.9], [0.9]), "diverged").verdict == "diverged"
    assert diagnose([]).verdict == "not trained"
    line = diagnose(rows([0.97, 0.99, 1.0], [0.95, 0.97, 0.98])).line()
    assert line.startswith("healthy: train 100.0%, val 98.0% (gap 2.0 points); last 2 epochs, per epoch: train acc +1.5")
    line = diagnose(rows([0.97, 1.0], [0.95, 0.98])).line()  # a 2-epoch run: one difference
    assert line.startswith("healthy: train 100.0%, val 98.0% (gap 2.0 points); over the last epoch: train acc +3.0, ")
    assert diagnose(rows([0.97], [0.95])).line().endswith("; one epoch: no trend yet")


# ---------------------------------------------------------------------------------------------- the server
def get_json(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# seconds to wait for a server or a page before calling it hung: a guard, never a measure of speed (a loaded
# machine starts TensorBoard slowly)
PATIENCE = 300


def wait_for(check, timeout: float, what: str):
    """Poll ``check()`` until it returns something truthy (errors count as not yet) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:  # server still starting, data still loading
            last = exc
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class BoardServer:
    """``python -m expt.board <dir>`` in a subprocess, on the free port it picks; always stopped on exit.

    The address is read from what expt.board prints, as a user reads it: a port chosen here and passed with
    ``--port`` could be taken by another process before TensorBoard binds it. Its temporary files (the
    named links) go to ``<log file's stem>-tmp``, a directory of its own beside ``log_file``: no other board (in a
    parallel test, or another board of the screenshot script's) writes there.
    """

    def __init__(self, logdir: Path, log_file: Path, *args: str):
        self.url = ""
        self.log_file = log_file
        self.log = open(log_file, "w")
        self.tmp = log_file.with_name(f"{log_file.stem}-tmp")
        self.tmp.mkdir()
        self.proc = start_cli(str(logdir), *args, program="expt.board", cwd=log_file.parent,
                              env={"TMPDIR": str(self.tmp)}, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "BoardServer":
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"expt.board exited with {self.proc.returncode}: {self.log_file.read_text()[-2000:]}")
            if not self.url:
                found = re.search(r"http://[^\s/]+", self.log_file.read_text())
                if found is None:
                    return None
                self.url = found.group(0)
            return get_json(f"{self.url}/data/runs")

        wait_for(ready, PATIENCE, "TensorBoard to answer /data/runs")
        return self

    def printed_url(self, fragment: str) -> str:
        """The address expt.board printed that ends in ``fragment`` (e.g. the recipe's view)."""
        for word in self.log_file.read_text().split():
            if word.startswith(self.url) and word.endswith(fragment):
                return word
        pytest.fail(f"expt.board printed no address ending in {fragment!r}: {self.log_file.read_text()}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.log.close()


def test_tensorboard_serves_the_sweep(sweep_dir, tmp_path):
    with BoardServer(sweep_dir, tmp_path / "board.log") as server:
        assert server.printed_url(board.RECIPE_VIEW)
        trials = lambda names: sorted(set(names) - {"sweep_summary"})  # noqa: E731 (the browser test adds pictures)
        assert wait_for(lambda: trials(get_json(f"{server.url}/data/runs")) == list(SWEEP_LABELS), PATIENCE,
                        "both runs")

        def scalar_tags():
            tags = get_json(f"{server.url}/data/plugin/scalars/tags")
            tags = {run: t for run, t in tags.items() if run != "sweep_summary"}
            return tags if set(tags) == set(SWEEP_LABELS) and all("accuracy/val" in t for t in tags.values()) else None

        tags = wait_for(scalar_tags, PATIENCE, "the scalar tags of both trials")
        for run_tags in tags.values():
            assert set(CORE_SCALARS) <= set(run_tags)
            assert any(t.startswith("diagnostics/update_ratio_log10/") for t in run_tags)

        experiment = wait_for(
            lambda: get_json(f"{server.url}/data/plugin/hparams/experiment", {"experimentName": ""}).get("hparamInfos"),
            PATIENCE, "the hparams experiment",
        )
        assert "optimizer.lr" in {h["name"] for h in experiment}
        request = {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "optimizer.lr", "order": "ORDER_ASC"}],
        }
        groups = get_json(f"{server.url}/data/plugin/hparams/session_groups", request)["sessionGroups"]
        assert [g["hparams"]["optimizer.lr"] for g in groups] == pytest.approx(list(SWEEP_LRS))
        assert [g["name"] for g in groups] == list(SWEEP_LABELS)
        assert all(g["sessions"][0]["status"] == "STATUS_SUCCESS" for g in groups)
        assert all(any(m["name"]["tag"] == "hparams/best_val_acc" for m in g["metricValues"]) for g in groups)
        assert list(server.tmp.glob("expt-board-*/" + SWEEP_LABELS[0]))  # the named links it serves
    assert server.proc.returncode is not None
    assert list(server.tmp.iterdir()) == []  # its links are gone


def test_board_names_runs_by_their_labels(tmp_path):
    sweep = tmp_path / "sweep"
    for job, label in ((0, "r1-j0 lr=1e-3"), (1, "r1-j1 a/b"), (10, "r1-j0 lr=1e-3")):
        touch_events(sweep / str(job), time.time())
        (sweep / str(job) / dashboard.LABEL_FILE).write_text(label + "\n")
    touch_events(sweep / "sweep_summary", time.time())
    (sweep / "checkpoints_elsewhere").mkdir()  # no events: not a run
    names = board.run_names(sweep)
    assert names == {"r1-j0 lr=1e-3": sweep / "0", "r1-j1 a|b": sweep / "1", "r1-j0 lr=1e-3 (2)": sweep / "10",
                     "sweep_summary": sweep / "sweep_summary"}
    view = board.NamedView(sweep)
    try:
        assert sorted(p.name for p in view.path.iterdir()) == sorted(names)
        touch_events(sweep / "11", time.time())
        view.refresh()
        assert (view.path / "11").resolve() == (sweep / "11").resolve()
    finally:
        view.close()
    assert not view.path.exists() and (sweep / "0").is_dir()


# ---------------------------------------------------------------------------------------------- finding the newest run
def touch_events(run_dir: Path, mtime: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    events = run_dir / "events.out.tfevents.0.host.1.0"
    events.write_bytes(b"")
    os.utime(events, (mtime, mtime))


def test_board_picks_the_newest_run_or_sweep(tmp_path):
    with pytest.raises(FileNotFoundError):
        board.find_logdir(cwd=tmp_path)
    now = time.time()
    touch_events(tmp_path / "outputs/2026-01-01/10-00-00", now - 300)
    assert board.find_logdir(cwd=tmp_path).resolve() == (tmp_path / "outputs/2026-01-01/10-00-00").resolve()
    sweep = tmp_path / "multirun/2026-01-01/11-00-00"
    touch_events(sweep / "0", now - 200)
    touch_events(sweep / "1", now - 100)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert board.find_logdir(cwd=tmp_path).resolve() == sweep.resolve()  # a trial shows its whole sweep
    touch_events(tmp_path / "outputs/2026-01-01/12-00-00", now)
    assert board.find_logdir(cwd=tmp_path).resolve() == (tmp_path / "outputs/2026-01-01/12-00-00").resolve()
    # python -m expt.evaluate's events, newer, in the run's evaluation/: the run, which shows them beside its own
    touch_events(tmp_path / "outputs/2026-01-01/12-00-00/evaluation", now + 100)
    assert board.find_logdir(cwd=tmp_path).resolve() == (tmp_path / "outputs/2026-01-01/12-00-00").resolve()
    touch_events(sweep / "evaluation", now + 200)  # a sweep's: the sweep
    assert board.find_logdir(cwd=tmp_path).resolve() == sweep.resolve()
    # DIR: itself when it is a run or a sweep, else the newest under it
    assert board.find_logdir(sweep) == sweep
    assert board.find_logdir(sweep / "0") == sweep / "0"
    assert board.find_logdir(tmp_path / "multirun").resolve() == sweep.resolve()
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(tmp_path / 'missing'))} does not exist.$"):
        board.find_logdir(tmp_path / "missing")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"a_file is a file, not a directory: give a run's or a sweep's"):
        board.find_logdir(tmp_path / "a_file")


@pytest.mark.parametrize("host,message", [
    ("999.1.1.1", r"--host '999.1.1.1' does not resolve \([^)]+\): use an address such as 127\.0\.0\.1"),
    # 192.0.2.1 (TEST-NET-1, for documentation) is no machine's own address
    ("192.0.2.1", r"--host '192\.0\.2\.1' cannot be bound \([^)]+\): it is not an address of this machine; use "
                  r"127\.0\.0\.1"),
])
@pytest.mark.parametrize("port", [[], ["--port", "6006"]], ids=["no-port", "port"])
def test_board_refuses_a_bad_host_with_or_without_a_port(tmp_path, host, message, port):
    """``python -m expt.board DIR --host H``: one paragraph naming --host, H and why, exit 1, with or without --port
    (without it the host was not checked, and TensorBoard's bare ``Name or service not known`` was all it said).
    The system's reason, in brackets, is worded by its resolver (no DNS: 'Temporary failure in name resolution')."""
    touch_events(tmp_path / "run", time.time())  # a run to serve, so only the host can stop it
    done = run_cli(str(tmp_path / "run"), "--host", host, *port, program="expt.board", cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr  # one line, nothing else
    assert re.search(message, done.stderr), done.stderr


# ---------------------------------------------------------------------------------------------- sweep pictures
def synthetic_sweep() -> tuple[list[dict], list[dict]]:
    """Three coarse-to-fine rounds over a log-scale lr and a linear dropout; the best lr is near 2e-3."""
    import random

    rng = random.Random(0)
    ranges = {0: (1e-5, 1e-1), 1: (1e-4, 1e-2), 2: (5e-4, 5e-3)}
    records = []
    for round_, (lo, hi) in ranges.items():
        for _ in range(6):
            lr = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            dropout = rng.uniform(0.0, 0.6)
            objective = 0.95 - 0.05 * (math.log10(lr) + 2.7) ** 2 - 0.1 * dropout
            failed = lr > 3e-2
            records.append({
                "round": round_, "values": {"optimizer.lr": lr, "regularization.dropout": dropout},
                "objective": None if failed else objective, "status": "diverged" if failed else "completed",
            })
    records.append({"round": 0, "values": {"optimizer.lr": 5e-2, "regularization.dropout": 0.1},
                    "objective": None, "status": "diverged"})
    moves = [
        {"round": 1, "param": "optimizer.lr", "old": [1e-5, 1e-1], "new": [1e-4, 1e-2]},
        {"round": 2, "param": "optimizer.lr", "old": [1e-4, 1e-2], "new": [5e-4, 5e-3]},
    ]
    return records, moves


def test_plot_sweep_writes_pngs_and_tensorboard_images(tmp_path):
    from matplotlib.image import imread

    records, moves = synthetic_sweep()
    params = {"optimizer.lr": True, "regularization.dropout": False}
    paths = plot_sweep(records, params, tmp_path, moves)
    assert paths == [tmp_path / "sweep_optimizer.lr.png", tmp_path / "sweep_regularization.dropout.png",
                     tmp_path / "sweep_history.png"]
    for path in paths:
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 600 and pixels.shape[1] == 700
        assert pixels[..., :3].std() > 0.05  # a drawing, not a blank canvas
    acc = read_events(tmp_path / "sweep_summary")
    assert sorted(acc.Tags()["images"]) == ["sweep/history", "sweep/optimizer.lr", "sweep/regularization.dropout"]
    (image,) = acc.Images("sweep/optimizer.lr")
    height, width = imread(paths[0]).shape[:2]
    # drawn for TensorBoard's 350-pixel image cards, so that its 9-point text reads there unscaled
    assert (image.width, image.height) == (350, height // 2)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_plot_sweep_stars_the_best_trial_of_the_search_direction(tmp_path, monkeypatch, direction):
    """The star sits on the largest objective when maximizing and on the smallest when minimizing."""
    from expt.dashboard import best_trial

    records, moves = synthetic_sweep()
    objectives = [r["objective"] for r in records if r["objective"] is not None]
    expected = (max if direction == "maximize" else min)(objectives)
    assert len(set(objectives)) == len(objectives) and min(objectives) < max(objectives)
    (best,) = [r for r in records if r["objective"] == expected]
    assert best_trial(records, direction) is best

    params = {"optimizer.lr": True, "regularization.dropout": False}
    drawn = drawn_figures(monkeypatch, lambda: plot_sweep(records, params, tmp_path, moves, direction=direction))
    assert len(drawn) == len(params) + 1  # and the history
    for fig, param in zip(drawn, params):
        (ax,) = fig.axes
        (star,) = [c for c in ax.collections if c.get_label().startswith("best: ")]
        assert star.get_offsets().tolist() == [[best["values"][param], expected]]
    with pytest.raises(ValueError, match="direction"):
        plot_sweep(records, params, tmp_path, moves, direction="down")


def drawn_figures(monkeypatch, draw) -> list:
    """The figures ``draw()`` saves, read back as each is saved."""
    from matplotlib.figure import Figure

    drawn: list = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    draw()
    return drawn


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_plot_sweep_marks_statuses_apart_names_the_metric_and_flags_ties(tmp_path, monkeypatch):
    """A diverged trial (objective 0.0, as the sweep records it) and a failed one sit in the strip along the bottom,
    not among the scores; a pruned one is hollow at its last score; two trials tied for best are both flagged, the
    one with the lower val_loss starred; the legend says how many epochs each round trained."""
    records = [
        {"round": 1, "job": 0, "values": {"lr": 1e-3}, "objective": 0.90, "status": "completed", "val_loss": 0.3},
        {"round": 1, "job": 1, "values": {"lr": 1e-1}, "objective": 0.0, "status": "diverged"},
        {"round": 1, "job": 2, "values": {"lr": 3e-2}, "objective": None, "status": "failed"},
        {"round": 2, "job": 3, "values": {"lr": 2e-3}, "objective": 0.80, "status": "pruned"},
        {"round": 2, "job": 4, "values": {"lr": 3e-3}, "objective": 0.95, "status": "completed", "val_loss": 0.20},
        {"round": 3, "job": 5, "values": {"lr": 4e-3}, "objective": 0.95, "status": "completed", "val_loss": 0.15},
    ]
    from expt.dashboard import best_trials

    assert [r["job"] for r in best_trials(records)] == [5, 4]
    drawn = drawn_figures(monkeypatch, lambda: plot_sweep(
        records, {"lr": True}, tmp_path, direction="maximize", metric="val_acc", round_epochs={1: 1, 2: 3, 3: 10}))
    scatter, history = drawn
    (ax,) = scatter.axes
    assert ax.get_ylabel() == "best validation accuracy (val_acc)" and "val_acc" not in ax.get_title()
    texts = legend_texts(scatter)
    assert {"round 1: 3 trials of 1 epoch", "round 2: 2 trials of 3 epochs", "round 3: 1 trial of 10 epochs"} <= set(texts)
    assert {"diverged (no score)", "failed (error, no score)", "pruned (stopped early; its last score)"} <= set(texts)
    (best,) = [t for t in texts if t.startswith("best: ")]
    assert "tied with 1 other" in best and "lower val_loss" in best
    on_axes = [tuple(xy) for c in ax.collections if c.get_offset_transform() is ax.transData for xy in c.get_offsets().tolist()]
    assert (1e-1, 0.0) not in on_axes and (2e-3, 0.8) in on_axes  # no diverged dot at 0.0; the pruned score is drawn
    (star,) = [c for c in ax.collections if c.get_label().startswith("best: ")]
    assert star.get_offsets().tolist() == [[4e-3, 0.95]]
    (hax,) = history.axes
    (line,) = [l for l in hax.get_lines() if l.get_label() == "best so far"]
    assert list(line.get_xdata()) == [0, 1, 2, 3, 4, 5] and list(line.get_ydata()) == [0.9, 0.9, 0.9, 0.9, 0.95, 0.95]
    assert "best so far" in hax.get_title()



def test_every_legend_entry_fits_inside_its_picture(tmp_path, monkeypatch):
    """The star's entry for a tie within one validation sample ran past the right edge ('... lower val_')."""
    for tie_samples, said in ((1, "tied with 2 others (ringed; within 1 val sample); lower val_loss"),
                              (0, "tied with 2 others (ringed); lower val_loss")):
        # the first as TensorBoard's 350-pixel picture of a real sweep cut it ('...; lower' at its edge)
        records = [{"round": 1, "job": j, "values": {"lr": 10 ** -j}, "objective": 0.9931 - tie_samples * j / 1000,
                    "status": "completed", "val_loss": 0.1 + j / 100, "val_samples": 288} for j in range(3)]
        drawn = drawn_figures(monkeypatch, lambda: plot_sweep(records, {"lr": True}, tmp_path, metric="val_acc",
                                                              tie_samples=tie_samples))
        for fig in drawn:
            assert fig.dpi == 80  # TensorBoard's picture
            fig.canvas.draw()  # as TensorBoard's image is drawn (the PNG's draw at twice the resolution came after it)
            renderer = fig.canvas.get_renderer()
            texts = [t for legend in fig.legends for t in legend.get_texts()]
            assert any(said in t.get_text().replace("\n  ", " ") for t in texts), [t.get_text() for t in texts]
            for text in texts:
                assert text.get_window_extent(renderer).x1 <= fig.bbox.x1, text.get_text()


def test_plot_sweep_draws_a_failed_trials_option_that_no_scored_trial_had(tmp_path, monkeypatch):
    """A choice's option that only a failed trial had is a category of its own: the x axis spans it."""
    records = [
        {"round": 1, "job": 0, "values": {"activation": "relu"}, "objective": 0.9, "status": "completed"},
        {"round": 1, "job": 1, "values": {"activation": "gelu"}, "objective": 0.8, "status": "completed"},
        {"round": 1, "job": 2, "values": {"activation": "tanh"}, "objective": None, "status": "failed"},
    ]
    scatter, _ = drawn_figures(monkeypatch, lambda: plot_sweep(records, {"activation": False}, tmp_path))
    (ax,) = scatter.axes
    low, high = ax.get_xlim()
    tanh = float(ax.xaxis.convert_units("tanh"))
    assert low < tanh < high, (low, tanh, high)


def test_plot_sweep_says_nothing_of_a_choice_whose_options_read_as_numbers(tmp_path, caplog):
    """choice(32,64): its options are categories on purpose; matplotlib's note on each stays out of the log."""
    import logging

    records = [{"round": 1, "job": j, "values": {"model.hidden_dim": width}, "objective": 0.5 + j / 10,
                "status": "completed"} for j, width in enumerate(["32", "64", "32"])]
    with caplog.at_level(logging.INFO):
        plot_sweep(records, {"model.hidden_dim": False}, tmp_path)
    assert "categorical units" not in caplog.text
    assert logging.getLogger("matplotlib.category").level == logging.NOTSET  # left as it was

def test_every_trial_declares_the_sweeps_columns():
    """TensorBoard takes the table's columns from one trial: a pinpoint trial that sets only the learning rate
    still declares every searched parameter (and its log10 column), typed as the trials that set them."""
    from tensorboard.plugins.hparams import api_pb2 as api
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from expt.dashboard import SweepContext, hparams_summaries
    from expt.dashboard.hparams import declared_columns

    ctx = SweepContext(multirun=True, round=0, log_scaled={"optimizer.lr", "regularization.l2"},
                       searched={"optimizer.lr": 0.0, "regularization.l2": 0.0, "model.hidden_dim": ""})
    experiment, start, _ = hparams_summaries({"optimizer.lr": 1e-3, "_4_00_log10(optimizer.lr)": -3.0},
                                             varied={"optimizer.lr"}, declared=declared_columns(ctx))
    infos = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content).experiment.hparam_infos
    types = {i.name: i.type for i in infos}
    assert types == {"optimizer.lr": api.DATA_TYPE_FLOAT64, "_4_00_log10(optimizer.lr)": api.DATA_TYPE_FLOAT64,
                     "regularization.l2": api.DATA_TYPE_FLOAT64, "_4_01_log10(regularization.l2)": api.DATA_TYPE_FLOAT64,
                     "model.hidden_dim": api.DATA_TYPE_STRING}
    assert {i.display_name for i in infos if i.name.startswith("_4_")} == {"log10(optimizer.lr)", "log10(regularization.l2)"}
    values = HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content).session_start_info.hparams
    assert set(values) == {"optimizer.lr", "_4_00_log10(optimizer.lr)"}  # only what this trial set


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_histograms_and_their_copy_to_the_host_never_wait_for_the_device():
    from expt.dashboard import histogram_table
    from expt.dashboard.background import Background

    g = torch.Generator(device="cuda").manual_seed(0)
    tensors = [torch.randn(1000, device="cuda", generator=g), torch.randn(200_000, device="cuda", generator=g)]
    histogram_table(tensors)  # the sample positions and segment ids, made once a shape
    seen: list[torch.Tensor] = []
    background = Background()
    torch.cuda.set_sync_debug_mode("error")  # any read-back would raise here
    try:
        table = histogram_table(tensors)
        background.submit("the table", seen.append, [table])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    background.drain()
    assert torch.equal(seen[0], table.cpu())
    assert seen[0][:, 2].tolist() == [1000, 1 << 16]


def test_an_event_file_cut_back_to_a_checkpoint_keeps_each_axis_up_to_it_and_drops_a_torn_record(tmp_path):
    """cut_after keeps step losses up to the checkpoint's training step and epoch scalars up to its epoch, keeps
    events without a summary, and stops at a record the kill cut short; TensorBoard reads the result."""
    from torch.utils.tensorboard import SummaryWriter

    from expt.dashboard.events import cut_after
    from expt.dashboard.writer import per_step

    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(1, 13):
            writer.add_scalar("loss/train", 1.0 / step, step)
            writer.add_scalar(f"{dashboard.UPDATE_RATIO}/0.Linear", -3.0, step)
        for epoch in range(1, 4):
            writer.add_scalar("accuracy/val", epoch / 10, epoch)
    (path,) = tmp_path.glob("events.out.tfevents.*")
    with path.open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00")  # the first bytes of one more record's length: the kill came here
    assert cut_after(path, epoch=2, step=8, per_step=per_step) == 4 + 4 + 1
    acc = read_events(tmp_path)
    assert [e.step for e in acc.Scalars("loss/train")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars(f"{dashboard.UPDATE_RATIO}/0.Linear")] == list(range(1, 9))
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("accuracy/val")] == [(1, 0.1), (2, 0.2)]
    before = path.read_bytes()
    assert cut_after(path, epoch=2, step=8, per_step=per_step) == 0 and path.read_bytes() == before
    from tensorboard.summary.writer.record_writer import RecordWriter

    with path.open("ab") as f:  # a record whose checksums hold but whose bytes are no event (a crash's zeros)
        RecordWriter(f).write(b"\0" * 16)
    assert cut_after(path, epoch=1, step=8, per_step=per_step) == 1  # the damaged record ends the file; no error
    assert [e.step for e in read_events(tmp_path).Scalars("accuracy/val")] == [1]


def test_a_rewrite_a_kill_cut_short_is_removed_when_the_run_resumes(tmp_path):
    """cut_after writes beside the file and renames it: a kill in between leaves a .tmp whose name TensorBoard reads
    as an event file; the next dashboard in the directory removes it."""
    stale = tmp_path / ".events.out.tfevents.123.host.1.0.abcdef.tmp"
    stale.write_bytes(b"half a rewrite")
    dashboard.Dashboard(tmp_path).close()
    assert not stale.exists()


def test_a_new_event_file_sorts_after_the_earlier_ones_of_its_run(tmp_path):
    """TensorBoard reads a run's files in name order: the second, then the host, then the pid. A run killed and
    resumed within one second had its resumed file read first, so each curve ran back on itself."""
    earlier = tmp_path / f"events.out.tfevents.{int(time.time())}.~host.99999999.0"  # sorts last within its second
    earlier.write_bytes(b"")
    board = dashboard.Dashboard(tmp_path)
    board.writer.add_text("config", "the run's first event", 0)  # which makes its file
    board.close()
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2 and files[0] == earlier


def test_the_sweepers_parameters_are_typed_as_the_sweeper_samples_them():
    """int(interval(1, 8)), which the sweeper samples as integers, was declared a real-number column, and the
    integer values its trials wrote as text then conflicted with it."""
    from omegaconf import OmegaConf

    from expt.dashboard import SweepContext
    from expt.dashboard.hparams import _read_sweeper

    ctx = SweepContext()
    _read_sweeper(OmegaConf.create({"params": {
        "model.depth": "int(interval(1, 8))", "model.width": "tag(log, int, interval(8, 64))",
        "optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "regularization.dropout": "range(0.1, 0.5, 0.1)",
        "model.num_filters": "range(8, 64, 8)", "activation": "choice(relu, tanh)",
        "schedule.gamma": "interval(0.1,", "model.width_2": "interval(0.5, 2)"}}), ctx)  # one unreadable
    assert ctx.searched == {"model.depth": "", "model.width": "", "optimizer.lr": 0.0, "regularization.dropout": 0.0,
                            "model.num_filters": "", "activation": "", "schedule.gamma": "", "model.width_2": 0.0}
    assert ctx.log_scaled == {"model.width", "optimizer.lr"}


def test_a_parameters_picture_says_which_tied_trials_it_draws(tmp_path, monkeypatch):
    """Trials tied with the chosen one that did not sample a parameter are not in its picture: the legend said 'tied
    with 2 others (ringed)' with none ringed, and where the chosen trial had not sampled it, rings stood unexplained."""
    records = [
        {"round": 1, "job": 0, "values": {"lr": 1e-3}, "objective": 0.99, "status": "completed", "val_loss": 0.1},
        {"round": 1, "job": 1, "values": {"lr": 3e-3, "width": 32}, "objective": 0.99, "status": "completed",
         "val_loss": 0.2},
        {"round": 1, "job": 2, "values": {"width": 64}, "objective": 0.99, "status": "completed", "val_loss": 0.3},
    ]
    drawn = drawn_figures(monkeypatch, lambda: plot_sweep(records, {"lr": True, "width": True}, tmp_path,
                                                          metric="val_acc"))
    by_param = {fig.axes[0].get_xlabel(): legend_texts(fig) for fig in drawn}
    (lr,) = [texts for label, texts in by_param.items() if label.startswith("lr")]
    (width,) = [texts for label, texts in by_param.items() if label.startswith("width")]
    assert any("tied with 2 others (1 ringed; the others did not sample this parameter)" in t.replace("\n  ", " ") for t in lr)
    assert not any(t.startswith("best: ") for t in width)
    assert any("tied with the chosen trial (job 0, 0.99), which did not sample this parameter" in t.replace("\n  ", " ")
               for t in width), width


def test_the_legend_names_the_metric_that_broke_the_tie(tmp_path, monkeypatch):
    """A sweep breaking ties by another metric (hydra.sweeper.tie_break=final_train_loss) was said to rank by val_loss."""
    records = [{"round": 1, "job": j, "values": {"lr": 10 ** -j}, "objective": 0.99, "status": "completed",
                "val_loss": 0.1 + j} for j in range(2)]
    (scatter, _) = drawn_figures(monkeypatch, lambda: plot_sweep(records, {"lr": True}, tmp_path,
                                                                  tie_break="final_train_loss"))
    said = " ".join(t.replace("\n  ", " ") for t in legend_texts(scatter))
    assert "lower final_train_loss ranks first" in said and "val_loss" not in said


def test_a_log_axis_near_one_decade_labels_plain_numbers_that_do_not_overlap(tmp_path, monkeypatch):
    """A width searched from 30 to 420 was labelled '3x10^1 4x10^1 6x10^1 10^2 2x10^2 3x10^2 4x10^2', run together."""
    records = [{"round": 1, "job": j, "values": {"width": w}, "objective": 0.9 + j / 100, "status": "completed"}
               for j, w in enumerate((30, 60, 100, 200, 420))]
    (scatter, _) = drawn_figures(monkeypatch, lambda: plot_sweep(records, {"width": True}, tmp_path, metric="val_acc"))
    ax = scatter.axes[0]
    renderer = scatter.canvas.get_renderer()
    shown = [t for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert [t.get_text() for t in shown] == ["50", "100", "200"]
    boxes = [t.get_window_extent(renderer) for t in shown]
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))


def test_a_layer_has_one_label_whether_or_not_batch_norm_and_dropout_surround_it():
    """A sweep over regularization named the default ConvNet's hidden layer 4.Linear, 5.Linear or 6.Linear by its
    index, so one update-ratio chart mixed one trial's output layer with another's hidden layer."""
    from expt.dashboard import weight_tensors

    labels = {str(options): list(weight_tensors(build(expt.compose(["data.subset=100", f"regularization={options}"])).model))
              for options in ("[l2]", "[l2,batchnorm]", "[l2,dropout,batchnorm]")}
    assert set(map(tuple, labels.values())) == {("0.Conv2d", "4.Linear", "6.Linear")}, labels
    # the ResNet keeps an Identity in batch norm's place without it
    resnet = {options: list(weight_tensors(build(expt.compose(
        ["data.subset=100", "model=resnet", "model.depth=8", f"regularization={options}"])).model))
        for options in ("[l2]", "[l2,batchnorm]")}
    assert resnet["[l2]"] == resnet["[l2,batchnorm]"] and "2.conv1.Conv2d" in resnet["[l2]"], resnet
    from torch import nn

    from expt.dashboard.diagnostics import layer_label

    shared = nn.Dropout(0.5)  # one module at two places: counted by position all the same
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, nn.Linear(4, 2))
    assert [layer_label(model, name) for name in ("0", "2", "4")] == ["0.Linear", "1.Linear", "2.Linear"]


def test_every_trial_declares_the_columns_its_stages_overrides_set(tmp_path):
    """TensorBoard took the table's columns from a later trial, so the pinpoint trials' data.subset=100 and
    regularization=none were not shown: they read as ordinary trials at 5-78% accuracy."""
    from omegaconf import OmegaConf

    from expt.dashboard import SweepContext
    from expt.dashboard.hparams import _read_sweeper, declared_columns

    ctx = SweepContext()
    _read_sweeper(OmegaConf.create({
        "params": {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))"},
        "pinpoint": {"overrides": ["data.subset=100", "regularization=none", "trainer.epochs=10"]},
        "stages": [{"rounds": [{"overrides": ["trainer.epochs=2"]}, {"overrides": ["+optimizer.eps=1e-7"]}]}]}), ctx)
    assert declared_columns(ctx) == {"optimizer.lr": 0.0, "_4_00_log10(optimizer.lr)": 0.0, "data.subset": "",
                                     "regularization": "", "trainer.epochs": "", "optimizer.eps": 0.0}


def test_the_log10_columns_tensorboard_ticks_are_the_first_searched_parameters():
    """TensorBoard ticks the first five columns by name: log10(model.hidden_dim) and log10(model.num_filters),
    which only the last stage searches, took two of them, so the parallel-coordinates view drew 6 of 27 trials."""
    from expt.dashboard import SweepContext
    from expt.dashboard.hparams import DISPLAY_NAMES, declared_columns

    ctx = SweepContext(log_scaled={"optimizer.lr", "regularization.l2", "model.hidden_dim"},
                       searched={"optimizer.lr": 0.0, "regularization.l2": 0.0, "model.hidden_dim": ""})
    ticked = sorted([*DISPLAY_NAMES, *declared_columns(ctx)])[:5]
    assert ticked == ["_1_status", "_2_diagnosis", "_3_sweep_round", "_4_00_log10(optimizer.lr)",
                      "_4_01_log10(regularization.l2)"]


def test_an_event_file_from_a_clock_ahead_does_not_hold_a_run_back(tmp_path):
    """An earlier file named an hour ahead (copied from a host whose clock runs fast) made a resumed run wait for
    that hour before it started, without a word."""
    import subprocess
    import sys

    ahead = tmp_path / f"events.out.tfevents.{int(time.time()) + 3600}.host.1.0"
    code = ("import sys; from pathlib import Path; from expt.dashboard.events import wait_to_sort_after; "
            "wait_to_sort_after([Path(sys.argv[1])])")
    assert subprocess.run([sys.executable, "-c", code, str(ahead)], timeout=120).returncode == 0



def test_a_model_graph_tracing_cannot_follow_is_named_as_missing_by_its_member(tmp_path, caplog):
    """The run trains without its graph and says why; in a population the line names the member's job, as its
    other lines do."""
    import logging

    cfg = expt.compose(["data.subset=100", *(f"dashboard.{k}=false" for k in ("summary", "histograms", "filters",
                                                                               "update_ratio"))])
    exp = build(cfg)
    exp.model.forward = lambda x: {"logits": 1}  # tracing takes tensors out only
    board = dashboard.Dashboard(tmp_path, cfg)
    board.log_prefix = "job 3: "
    with caplog.at_level(logging.WARNING):
        board.start(exp, torch.arange(2))
        board.close()  # after the dashboard's thread has traced
    said = [r.getMessage() for r in caplog.records if "No model graph" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("job 3: No model graph in TensorBoard: tracing ConvNet failed ("), said
