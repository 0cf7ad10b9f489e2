"""What a run writes for TensorBoard, read back with TensorBoard's own reader and served by its own server."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import numbers, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata as hparams_metadata

import expt
from expt import board, dashboard
from expt.dashboard import filter_grid, plot_sweep
from expt.build import build

CORE_SCALARS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr")
DIAGNOSTICS_OFF = tuple(f"dashboard.{k}=false" for k in ("update_ratio", "histograms", "filters", "graph", "summary"))
# 500 samples in batches of 100: 5 steps per epoch; with log_every=2 the logging steps are 2, 4 and 5 of each epoch.
SMALL_RUN = ("trainer.epochs=3", "trainer.batch_size=100", "data.subset=500", "trainer.log_every=2",
             "regularization=[l2,dropout,batchnorm]")
EPOCHS, STEPS_PER_EPOCH = 3, 5
SWEEP_LRS = (1e-3, 3e-3)


def read_events(path: Path) -> EventAccumulator:
    """Every event of one run directory (size guidance 0: keep them all)."""
    guidance = {kind: 0 for kind in ("scalars", "histograms", "images", "tensors", "compressedHistograms", "audio")}
    acc = EventAccumulator(str(path), size_guidance=guidance)
    acc.Reload()
    return acc


def hparams_content(acc: EventAccumulator) -> dict[str, bytes]:
    return acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)


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


def small_sweep(tmp_path_factory) -> Path:
    """A real two-trial Hydra multirun (optimizer.lr=1e-3,3e-3), run once per test session.

    The round number travels as the sweeper sends it, through ``hydra.job.env_set``.
    """
    if "sweep" not in _SWEEPS:
        root = tmp_path_factory.mktemp("sweep")
        sweep_dir = root / "multirun"
        proc = run_cli(
            "-m", "trainer.epochs=1", "data.subset=200", "optimizer.lr=" + ",".join(map(str, SWEEP_LRS)),
            f"hydra.sweep.dir={sweep_dir}", "+hydra.job.env_set.EXPT_SWEEP_ROUND=2", cwd=root,
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


def test_update_ratios_at_the_logging_steps_in_a_healthy_range(run_on):
    """One ratio per weight tensor (conv and both linears) at each logging step; Adam at lr 1e-3 moves ~1e-3."""
    _, acc = run_on
    ratio_tags = sorted(t for t in acc.Tags()["scalars"] if t.startswith("diagnostics/update_ratio/"))
    assert [t.rsplit("/", 1)[1].split(".", 1)[1] for t in ratio_tags] == ["Conv2d", "Linear", "Linear"]
    logging_steps = [epoch * STEPS_PER_EPOCH + i for epoch in range(EPOCHS) for i in (2, 4, 5)]
    for tag in ratio_tags:
        events = acc.Scalars(tag)
        assert [e.step for e in events] == logging_steps, tag
        values = [e.value for e in events]
        classifier = max(ratio_tags, key=lambda t: int(t.rsplit("/", 1)[1].split(".")[0]))
        if tag == classifier:  # it starts at a twentieth of the formula's sigma: large ratios that shrink
            assert all(1e-4 < v < 1 for v in values) and values[-1] < values[0], (tag, values)
        else:
            assert all(1e-5 < v < 1e-1 for v in values), (tag, values)


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

    (filters,) = tags["images"]
    assert filters == "filters/0.Conv2d"
    images = acc.Images(filters)
    assert [e.step for e in images] == list(range(EPOCHS + 1))
    # 64 filters of 3x3, each enlarged to 15x15, in an 8x8 grid with 2-pixel gaps
    assert (images[0].width, images[0].height) == (8 * 17 + 2, 8 * 17 + 2)

    texts = {tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in tags["tensors"]}
    config, summary = texts["config/text_summary"], texts["model/summary/text_summary"]
    assert "_target_: expt.models.ConvNet" in config and "log_every: 2" in config
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
    assert [t for t in tags["tensors"]] == ["config/text_summary"]
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


def test_each_epoch_is_on_disk_before_the_next_one_trains(tmp_path, monkeypatch):
    """The writer queues many events (an epoch of 40 steps here) but every epoch ends with them all in the file."""
    from expt.dashboard import Dashboard

    seen: list[tuple[int, int, int]] = []
    real_epoch = Dashboard.epoch

    def epoch_then_read(self, epoch, row):
        real_epoch(self, epoch, row)
        acc = read_events(tmp_path)
        seen.append((epoch, len(acc.Scalars("loss/train")), len(acc.Scalars("loss/val"))))

    monkeypatch.setattr(Dashboard, "epoch", epoch_then_read)
    expt.train(expt.compose(["trainer.epochs=2", "data.subset=400", "trainer.batch_size=10", "trainer.log_every=7",
                             *DIAGNOSTICS_OFF]), run_dir=tmp_path)
    assert seen == [(1, 40, 1), (2, 80, 2)]


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
    (events,) = tmp_path.glob("events.out.tfevents.*")
    raw, offset, sizes = events.read_bytes(), 0, []
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
    assert params["status"] == "completed"
    assert session_status(acc) == api_pb2.STATUS_SUCCESS
    for tag, key in (("hparams/best_val_acc", "best_val_acc"), ("hparams/test_acc", "test_acc"),
                     ("hparams/final_val_acc", "final_val_acc"), ("hparams/final_train_loss", "final_train_loss")):
        (event,) = acc.Scalars(tag)
        assert event.value == pytest.approx(metrics[key]) and event.step == EPOCHS


def test_a_diverged_run_is_a_failed_session_with_its_round(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPT_SWEEP_ROUND", "4")
    cfg = expt.compose(["optimizer=sgd", "optimizer.lr=1e3", "trainer.epochs=3", "data.subset=400"])
    metrics = expt.train(cfg, run_dir=tmp_path)
    assert metrics["status"] == "diverged"
    acc = read_events(tmp_path)
    params = session_hparams(acc)
    assert params["status"] == "diverged" and params["sweep_round"] == 4 and params["optimizer"] == "SGD"
    assert session_status(acc) == api_pb2.STATUS_FAILURE


def test_every_trial_of_a_multirun_records_its_hparams(sweep_dir):
    trials = sorted((d for d in sweep_dir.iterdir() if d.is_dir()), key=lambda d: d.name)
    assert [d.name for d in trials] == ["0", "1"]
    for trial, lr in zip(trials, SWEEP_LRS):
        assert not [p for p in trial.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))]
        acc = read_events(trial)
        params = session_hparams(acc)
        assert params["optimizer.lr"] == pytest.approx(lr)
        assert params["trainer.epochs"] == 1 and params["data.subset"] == 200
        assert params["sweep_round"] == 2
        assert {params[g] for g in ("model", "activation", "optimizer", "data")} == {"convnet", "relu", "adam", "digits"}
        assert not [k for k in params if k.startswith(("hydra", "dashboard"))]
        assert params["status"] == "completed"
        experiment = hparams_metadata.parse_experiment_plugin_data(
            hparams_content(acc)[hparams_metadata.EXPERIMENT_TAG]
        )
        differs = {info.name for info in experiment.hparam_infos if info.differs}
        assert differs == {"optimizer.lr", "sweep_round"}  # the swept key, not those fixed for the sweep
        assert [m.name.tag for m in experiment.metric_infos][0] == "hparams/best_val_acc"
        metrics = json.loads((trial / "metrics.json").read_text())
        assert acc.Scalars("hparams/best_val_acc")[0].value == pytest.approx(metrics["best_val_acc"])


# ---------------------------------------------------------------------------------------------- the server
def get_json(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


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
    """``python -m expt.board <dir> --port <free port>`` in a subprocess; always stopped on exit."""

    def __init__(self, logdir: Path, log_file: Path):
        self.port = board.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.log = open(log_file, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "expt.board", str(logdir), "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )

    def __enter__(self) -> "BoardServer":
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"expt.board exited with {self.proc.returncode}: {self.log_file.read_text()[-2000:]}")
            return get_json(f"{self.url}/data/runs")

        wait_for(ready, 60, "TensorBoard to answer /data/runs")
        return self

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
        assert server.url in (tmp_path / "board.log").read_text()
        assert wait_for(lambda: sorted(get_json(f"{server.url}/data/runs")) == ["0", "1"], 60, "both runs")

        def scalar_tags():
            tags = get_json(f"{server.url}/data/plugin/scalars/tags")
            return tags if set(tags) == {"0", "1"} and all("accuracy/val" in t for t in tags.values()) else None

        tags = wait_for(scalar_tags, 60, "the scalar tags of both trials")
        for run_tags in tags.values():
            assert set(CORE_SCALARS) <= set(run_tags)
            assert any(t.startswith("diagnostics/update_ratio/") for t in run_tags)

        experiment = wait_for(
            lambda: get_json(f"{server.url}/data/plugin/hparams/experiment", {"experimentName": ""}).get("hparamInfos"),
            60, "the hparams experiment",
        )
        assert "optimizer.lr" in {h["name"] for h in experiment}
        request = {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "optimizer.lr", "order": "ORDER_ASC"}],
        }
        groups = get_json(f"{server.url}/data/plugin/hparams/session_groups", request)["sessionGroups"]
        assert [g["hparams"]["optimizer.lr"] for g in groups] == pytest.approx(list(SWEEP_LRS))
        assert all(g["sessions"][0]["status"] == "STATUS_SUCCESS" for g in groups)
        assert all(any(m["name"]["tag"] == "hparams/best_val_acc" for m in g["metricValues"]) for g in groups)
    assert server.proc.returncode is not None


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
    # DIR: itself when it is a run or a sweep, else the newest under it
    assert board.find_logdir(sweep) == sweep
    assert board.find_logdir(sweep / "0") == sweep / "0"
    assert board.find_logdir(tmp_path / "multirun").resolve() == sweep.resolve()
    with pytest.raises(FileNotFoundError):
        board.find_logdir(tmp_path / "missing")


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
    assert paths == [tmp_path / "sweep_optimizer.lr.png", tmp_path / "sweep_regularization.dropout.png"]
    for path in paths:
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 600
        assert pixels[..., :3].std() > 0.05  # a drawing, not a blank canvas
    acc = read_events(tmp_path / "sweep_summary")
    assert sorted(acc.Tags()["images"]) == ["sweep/optimizer.lr", "sweep/regularization.dropout"]
    (image,) = acc.Images("sweep/optimizer.lr")
    height, width = imread(paths[0]).shape[:2]
    assert (image.width, image.height) == (width, height)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_plot_sweep_stars_the_best_trial_of_the_search_direction(tmp_path, monkeypatch, direction):
    """The star sits on the largest objective when maximizing and on the smallest when minimizing."""
    from matplotlib.figure import Figure

    from expt.dashboard import best_trial

    records, moves = synthetic_sweep()
    objectives = [r["objective"] for r in records if r["objective"] is not None]
    expected = (max if direction == "maximize" else min)(objectives)
    assert len(set(objectives)) == len(objectives) and min(objectives) < max(objectives)
    (best,) = [r for r in records if r["objective"] == expected]
    assert best_trial(records, direction) is best

    drawn: list = []  # each picture's figure, read back as it is saved
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    params = {"optimizer.lr": True, "regularization.dropout": False}
    plot_sweep(records, params, tmp_path, moves, direction=direction)
    assert len(drawn) == len(params)
    for fig, param in zip(drawn, params):
        (ax,) = fig.axes
        (star,) = [c for c in ax.collections if c.get_label() == "best"]
        assert star.get_offsets().tolist() == [[best["values"][param], expected]]
    with pytest.raises(ValueError, match="direction"):
        plot_sweep(records, params, tmp_path, moves, direction="down")
