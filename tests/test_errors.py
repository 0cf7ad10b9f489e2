"""Bad input stops ``python -m expt`` before training with a short message naming the key, the value and what is allowed.

Every case runs the real CLI in a subprocess without HYDRA_FULL_ERROR. The calls are made once,
two at a time, by a module fixture; each case is then checked on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

QUICK = ("trainer.epochs=1", "++data.subset=100")
MAX_LINES = 6  # one paragraph, not counting blank lines and the HYDRA_FULL_ERROR hint

if torch.cuda.is_available():
    MISSING_DEVICE, DEVICE_HINT = f"trainer.device=cuda:{torch.cuda.device_count()}", "CUDA device"
else:
    MISSING_DEVICE, DEVICE_HINT = "trainer.device=cuda", "cpu"

GROUP_OPTIONS = {
    "activation": ["elu", "gelu", "leaky_relu", "relu", "sigmoid", "silu", "tanh"],
    "preprocessing": ["mean_image", "none", "pca_whiten", "per_channel_mean", "per_channel_standardize"],
    "init": ["gaussian", "kaiming", "pytorch", "xavier"],
    "regularization": ["batchnorm", "dropout", "elastic_net", "l1", "l2", "max_norm", "none"],
    "optimizer": ["adagrad", "adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"],
    "schedule": ["constant", "cosine", "exponential", "inverse_time", "plateau", "step", "warmup_cosine"],
    "model": ["convnet", "deep_convnet", "mlp"],
}

# (overrides, strings the message must contain: the key, the value, a word of what is allowed)
CASES = {
    "lr_zero": (["optimizer.lr=0"], ["optimizer.lr", "0", "> 0"]),
    "lr_negative": (["optimizer.lr=-1"], ["optimizer.lr", "-1", "> 0"]),
    "dropout_one": (["regularization.dropout=1.0"], ["regularization.dropout", "1.0", "[0, 1)", "drop probability"]),
    "dropout_negative": (["regularization.dropout=-0.1"], ["regularization.dropout", "-0.1", "[0, 1)"]),
    "l2_negative": (["regularization.l2=-1"], ["regularization.l2", "-1", ">= 0"]),
    "batch_size_zero": (["trainer.batch_size=0"], ["trainer.batch_size", "0", ">= 1"]),
    "filter_too_big": (["model.filter_size=20"], ["model.filter_size", "20", "1 to 8", "8x8"]),
    "target_missing": (["activation._target_=nope.Missing"], ["activation._target_", "nope.Missing", "importable"]),
    "dtype_half": (["trainer.dtype=float16"], ["trainer.dtype", "float16", "float32", "float64"]),
    "device_missing": ([MISSING_DEVICE], ["trainer.device", MISSING_DEVICE.split("=")[1], DEVICE_HINT]),
    "val_size_zero": (["data.val_size=0"], ["data.val_size", "0", "fraction"]),
    "misspelt_trainer_key": (["trainer.epoch=3"], ["trainer.epoch", "3", "TrainerConfig"]),
    "init_mode": (["init=xavier", "init.mode=bogus"], ["init.mode", "bogus", "fan_in", "fan_avg"]),
    "model_key_not_in_option": (["model.hidden=3"], ["model.hidden", "3"]),
    "model_param_not_taken": (["+model.hidden=3"], ["model.hidden", "num_filters", "filter_size", "hidden_dim"]),
    "sanity_guard": (["sanity.before_train=maybe"], ["sanity.before_train", "maybe", "warn", "strict"]),
    "resume_missing": (["trainer.resume=/nonexistent"], ["trainer.resume", "/nonexistent", "last.pt"]),
    "checkpoint_interval_negative": (["trainer.checkpoint_interval=-1"],
                                     ["trainer.checkpoint_interval", "-1", ">= 0", "every epoch"]),
    "momentum_negative": (["optimizer=momentum", "optimizer.momentum=-1"], ["optimizer", "momentum=-1"]),
    "step_size_zero": (["schedule.step_size=0"], ["schedule", "step_size=0"]),
    "slope_not_a_number": (["activation=leaky_relu", "activation.negative_slope=abc"],
                           ["activation", "negative_slope=abc", "Number"]),
}
for group, options in GROUP_OPTIONS.items():
    CASES[f"unknown_option_{group}"] = ([f"{group}=nope"], [f"{group}/nope", "Available options", *options])


def run_cli(args: list[str], cwd: Path, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "expt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each case's finished process and its run directory; run two at a time."""
    root = tmp_path_factory.mktemp("errors")

    def one(name: str):
        run_dir = root / name
        args = [*QUICK, *CASES[name][0], f"hydra.run.dir={run_dir}"]
        return run_cli(args, cwd=root), run_dir

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(CASES, pool.map(one, CASES)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_a_short_clear_error_before_training(case, outcomes):
    proc, run_dir = outcomes[case]
    expected = CASES[case][1]
    stderr = proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}\n{stderr[-2000:]}"
    assert "Traceback" not in stderr + proc.stdout
    for text in expected:
        assert text in stderr, f"{text!r} missing from:\n{stderr}"
    lines = message_lines(stderr)
    if case.startswith("unknown_option_"):
        group = case.removeprefix("unknown_option_")
        assert len(lines) <= len(GROUP_OPTIONS[group]) + 6, stderr  # Hydra lists the options and its search path
    else:
        assert 1 <= len(lines) <= MAX_LINES, stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
    assert "Initial training loss" not in proc.stdout + stderr


def test_case_list_covers_every_group():
    assert len(CASES) >= 15
    assert all(f"unknown_option_{g}" in CASES for g in GROUP_OPTIONS)


def test_full_error_shows_the_traceback(tmp_path):
    """With HYDRA_FULL_ERROR=1 the same bad input fails with the traceback and the same message."""
    proc = run_cli([*QUICK, "optimizer.lr=0", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, full_error=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "ConfigError" in proc.stderr and "optimizer.lr=0 is not allowed" in proc.stderr
