"""Bad input stops ``python -m expt`` before training with a short message naming the key, the value and what is allowed.

The CLI prints a ConfigError's message as one paragraph and exits 1 (``expt.__main__``); what is
checked for each bad input is that message and that nothing trained. So every case in CASES goes
through the same steps in-process (``expt.compose``, then ``expt.train``, which validates, builds
and starts the trainer before its first step), and only SUBPROCESS_CASES, one for each way an
error reaches the terminal (the check of the overrides, Hydra's composition, the run-directory callback,
validation, the data loader, the trainer's resume), run the real CLI, two at a time, for the exit code and the printed text.
The many variants of a bad data file or schedule go through the Python API the same way.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import HydraException
from omegaconf import OmegaConf

import expt
from conftest import QUIET
from expt.config import (ConfigError, DashboardConfig, RegularizationConfig, SanityConfig, TrainerConfig, unknown_override,
                         validate)

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
    "optimizer": ["adam", "adamw", "adagrad", "momentum", "nesterov", "rmsprop", "sgd"],
    "schedule": ["constant", "cosine", "exponential", "inverse_time", "onecycle", "plateau", "step", "warmup_cosine"],
    "model": ["convnet", "deep_convnet", "mlp", "resnet"],
    "experiment": ["cifar10_resnet", "digits", "fashion_mnist_convnet", "fashion_mnist_resnet", "mnist_convnet"],
}

# (overrides, strings the message must contain: the key, the value, a word of what is allowed);
# {root} is a directory where FILES are written first
CASES = {
    "lr_zero": (["optimizer.lr=0"], ["optimizer.lr", "0", "> 0"]),
    "lr_negative": (["optimizer.lr=-1"], ["optimizer.lr", "-1", "> 0"]),
    "dropout_one": (["regularization.dropout=1.0"], ["regularization.dropout", "1.0", "[0, 1)", "drop probability"]),
    "dropout_negative": (["regularization.dropout=-0.1"], ["regularization.dropout", "-0.1", "[0, 1)"]),
    "l2_negative": (["regularization.l2=-1"], ["regularization.l2", "-1", ">= 0"]),
    "batch_size_zero": (["trainer.batch_size=0"], ["trainer.batch_size", "0", ">= 1"]),
    "filter_too_big": (["model.filter_size=20"], ["model.filter_size", "20", "1 to 8", "8x8"]),
    "target_missing": (["activation._target_=nope.Missing"],
                       ["activation._target_='nope.Missing' does not import (ModuleNotFoundError: No module named "
                        "'nope'. Are you sure that module 'nope' is installed?)", "importable"]),
    "target_not_callable": (["activation._target_=torch.nn"],  # a TypeError traceback from functools.partial
                            ["activation._target_='torch.nn' is a module, not a class or function", "importable"]),
    "dtype_half": (["trainer.dtype=float16"], ["trainer.dtype", "float16", "float32", "float64"]),
    "device_missing": ([MISSING_DEVICE], ["trainer.device", MISSING_DEVICE.split("=")[1], DEVICE_HINT]),
    "val_size_zero": (["data.val_size=0"], ["data.val_size", "0", "fraction"]),
    "val_size_not_a_count": (["data.val_size=1.5"], ["data.val_size=1.5", "fraction in (0, 1)", "integer >= 1"]),
    "val_size_one_point_zero": (["data.val_size=1.0"], ["data.val_size=1.0", "fraction in (0, 1)"]),
    "test_size_not_a_count": (["data.test_size=2.5"], ["data.test_size=2.5", "integer >= 1"]),
    "num_classes_one": (["data.num_classes=1"], ["data.num_classes=1", "from 2 to 100,000", "null"]),
    "num_classes_below_labels": (["data.num_classes=5"], ["data=digits", "y_train (before the validation and test "
                                                          "splits are carved out of it) holds 5, 6, 7, ...",
                                                          "data.num_classes=5", "from 0 to 4"]),
    "amp_with_float64": (["trainer.amp=bf16", "trainer.dtype=float64"],
                         ["trainer.amp=bf16", "trainer.dtype=float64", "change nothing", "trainer.amp=off"]),
    "cutout_larger_than_image": (["augmentation=[cutout]", "augmentation.cutout.size=9"],
                                 ["augmentation.cutout.size=9", "8x8 images", "at most 7"]),
    "translate_as_large_as_image": (["augmentation=[translate]", "augmentation.translate.pad=8",
                                     "augmentation.translate.mode=zeros"],
                                    ["augmentation.translate.pad=8", "8x8 images", "at most 7"]),
    "misspelt_trainer_key": (["trainer.epoch=3"], ["trainer.epoch", "3", "TrainerConfig"]),
    "init_mode": (["init=xavier", "init.mode=bogus"], ["init.mode", "bogus", "fan_in", "fan_avg"]),
    "model_key_not_in_option": (["model.hidden=3"], ["model.hidden", "3"]),
    "model_param_not_taken": (["+model.hidden=3"], ["model.hidden", "num_filters", "filter_size", "hidden_dim"]),
    "sanity_guard": (["sanity.before_train=maybe"], ["sanity.before_train", "maybe", "warn", "strict"]),
    "resume_missing": (["trainer.resume=/nonexistent"], ["trainer.resume", "/nonexistent", "last.pt"]),
    "resume_empty": (["trainer.resume="], ["trainer.resume=''", "a run directory", "null, the default"]),
    "synthetic_samples_negative": (["data=synthetic", "data.num_samples=-5"], ["data.num_samples=-5", "integer >= 1"]),
    "synthetic_noise_negative": (["data=synthetic", "data.noise=-1"],  # trained as if 1
                                 ["data.noise=-1", "standard deviation, a number >= 0"]),
    "pooled_twice_after_one_layer": (["model=deep_convnet", "model.pool_after=[0,0]"],  # pooled once
                                     ["model.pool_after=[0, 0]", "positions from 0 to 3, each once"]),
    "checkpoint_interval_negative": (["trainer.checkpoint_interval=-1"],
                                     ["trainer.checkpoint_interval", "-1", ">= 0", "every epoch"]),
    "momentum_negative": (["optimizer=momentum", "optimizer.momentum=-1"], ["optimizer", "momentum=-1"]),
    "step_size_zero": (["schedule.step_size=0"], ["schedule", "step_size=0"]),
    # a value of the wrong shape for the class: the library's reason, and the shape its default has
    "betas_one_value": (["optimizer.betas=0.9"], ["optimizer.betas=0.9", "TypeError",
                                                 "optimizer.betas takes a list like its default: "
                                                 "optimizer.betas=[0.9,0.999]"]),
    # a tuple of a fixed length in the class's annotation (Adam's betas: tuple[float, float]) is counted first
    "betas_one_of_two": (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9] is not allowed",
                                                     "takes 2 values for betas, 1 given",
                                                     "its default is (0.9, 0.999)"]),
    "momentum_a_list": (["optimizer=sgd", "+optimizer.momentum=[0.9]"],
                        ["optimizer.momentum=[0.9]", "optimizer.momentum takes one value like its default"]),
    "slope_not_a_number": (["activation=leaky_relu", "activation.negative_slope=abc"],
                           ["activation.negative_slope='abc' is not allowed", "takes a number for negative_slope",
                            "default is 0.01"]),
    # with a "+" the schema's own check is skipped: the key is still not a setting
    "added_trainer_key": (["+trainer.epoch=3"], ["trainer.epoch=3", "did you mean trainer.epochs?", "batch_size"]),
    "added_top_level_key": (["+foo=bar"], ["foo='bar'", "top-level", "trainer", "dashboard"]),
    # a cosine over trainer.epochs stepped every batch reaches 0 after as many steps (checked with 10 an epoch)
    "cosine_per_step_over_epochs": (["schedule=cosine", "schedule.per_step=true", "trainer.epochs=3"],
                                    ["schedule.T_max=3", "learning rate of 0 at step 4 of epoch 1",
                                     "counted in steps: the schedule steps every batch"]),
    # StepLR's gamma first applies after 5 epochs: a negative rate from epoch 6
    "schedule_gamma_negative": (["trainer.epochs=10", "schedule.gamma=-1"],
                                ["schedule.gamma=-1", "epoch 6", "-0.001", "> 0"]),
    "deep_convnet_no_filters": (["model=deep_convnet", "model.filters=[]"],
                                ["model.filters=[]", "non-empty list", ">= 1"]),
    "npz_negative_label": (["data=npz", "data.path={root}/negative.npz"],
                           ["data.path=", "negative.npz", "y_train holds -1", "0 to C-1"]),
    "npz_not_an_archive": (["data=npz", "data.path={root}/text.npz"], ["data.path=", "text.npz", "not an .npz", "np.savez"]),
    "npz_label_of_a_trillion": (["data=npz", "data.path={root}/huge_label.npz"],
                                ["huge_label.npz", "largest label is 1000000000000", "1,000,000,000,001",
                                 "60 labelled samples", "4 distinct labels", "data.num_classes", "return_inverse"]),
    "npz_flat_vectors_with_the_convnet": (["data=npz", "data.path={root}/flat.npz"],
                                          ["model=convnet needs images", "flat vectors of 64 values",
                                           "(N, 64)", "x.reshape(-1, 8, 8)", "model=mlp"]),
    # found by trying hostile inputs: each gave a traceback or trained on a wrong reading before
    "split_seed_negative": (["data.split_seed=-1"], ["data.split_seed=-1", "0 to 2**63 - 1"]),
    "trainer_seed_too_large": (["trainer.seed=100000000000000000000000"], ["trainer.seed=", "0 to 2**63 - 1"]),
    # the value as the command line wrote it (Python's None and True before)
    "val_size_null": (["data.val_size=null"], ["data.val_size=null is not allowed", "fraction in (0, 1)"]),
    "translate_pad_true": (["augmentation=[translate]", "augmentation.translate.pad=true"],
                           ["augmentation.translate.pad=true is not allowed", "integer >= 1"]),
    "hflip_p_true": (["augmentation=[hflip]", "augmentation.hflip.p=true"],
                     ["augmentation.hflip.p=true is not allowed", "[0, 1]"]),
    "num_filters_fractional": (["model.num_filters=2.5"], ["model.num_filters=2.5", "integers >= 1"]),
    "filter_size_fractional": (["model.filter_size=2.5"], ["model.filter_size=2.5", "from 1 to 8"]),
    "one_training_sample_with_batchnorm": (["data.subset=1"], ["data.subset=1 leaves 1 training sample", "batch norm"]),
    # the digits: 1,438 samples once the test split is carved out; a count of 1,437 for validation leaves one
    "one_training_sample_left_by_the_split": (["data.val_size=1437"], [
        "the split (data.val_size=1437, data.test_size=0.2) leaves 1 training sample", "batch norm"]),
    "hidden_sizes_not_a_list": (["model=mlp", "model.hidden_sizes=abc"],
                                ["model.hidden_sizes='abc'", "a list of layer sizes", "[256, 128]"]),
    "hidden_sizes_of_letters": (["model=mlp", "model.hidden_sizes=[a]"], ["model.hidden_sizes=['a']", "integers >= 1"]),
    "npz_without_a_path": (["data=npz"], ["data.path is not set", "data=npz", "data.path=..."]),
    "download_not_a_bool": (["data=mnist", "data.download=maybe", "data.root={root}/no_mnist"],
                            ["data.download='maybe'", "true", "false"]),
    "sanity_tolerance_negative": (["sanity.loss_tolerance=-1"], ["sanity.loss_tolerance=-1.0", "> 0"]),
    "data_key_not_a_setting": (["+data.foo=1"], ["data.foo is not a setting of data=digits", "val_size", "split_seed",
                                                 "num_classes"]),
    # 10**14 weights of 4 bytes exceed any 64-bit address space (128 TiB): refused at once, even where memory overcommits
    "model_too_large_for_memory": (["model=mlp", "model.hidden_sizes=[1,100000000000000]"],
                                   ["model=expt.models.MLP", "model.hidden_sizes=[1, 100000000000000]",
                                    "does not fit in memory", "smaller"]),
}
# StepLR's gamma is used at its first cut only (epoch 5): a text was accepted where the run ends before it
CASES["text_for_a_number_of_an_option"] = (["schedule.gamma=abc"], ["schedule.gamma='abc' is not allowed",
                                                                    "takes a number for gamma", "default is 0.1"])
# CosineAnnealingLR's T_max has no default: its annotation says int
CASES["text_for_a_number_without_a_default"] = (["schedule=cosine", "schedule.T_max=abc"],
                                                ["schedule.T_max='abc' is not allowed", "takes a number for T_max."])
# ~schedule: Hydra composes a config without it (a traceback from OmegaConf before); schedule=null: Hydra's own
# ValueError with a traceback
CASES["group_removed"] = (["~schedule"], ["schedule is not chosen", "constant, cosine", "schedule=<option>"])
CASES["group_null"] = (["schedule=null"], ["schedule=null is not allowed", "constant, cosine", "schedule=<option>"])
CASES["list_group_null"] = (["regularization=null"], ["regularization=null is not allowed", "regularization=none",
                                                      "regularization=[]"])
for group, options in GROUP_OPTIONS.items():
    CASES[f"unknown_option_{group}"] = ([f"{group}=nope"], [f"{group}=nope is not an option of {group}",
                                                            "its options are: ", *options])
CASES["experiment_misspelt"] = (["experiment=digit"], ["experiment=digit is not an option of experiment (did you mean "
                                                       "digits?)", *GROUP_OPTIONS["experiment"]])
# Hydra's own composition error, which the check of the overrides leaves to it
CASES["key_added_twice"] = (["+optimizer.lr=1"], ["Could not append to config. An item is already at 'optimizer.lr'",
                                                 "'++optimizer.lr=1'"])

# One case for each way an error reaches the terminal; these also run the real CLI.
SUBPROCESS_CASES = {
    "lr_zero": "validation of the composed config",
    "experiment_misspelt": "the check of the overrides before Hydra composes them (an option that does not exist)",
    "key_added_twice": "Hydra's composition (its own message)",
    "npz_negative_label": "the data loader's checks",
    "resume_missing": "the trainer, before its first step",
    "run_dir_is_a_file": "the callback that checks hydra.run.dir",
    "run_dir_under_a_file": "the same, for a path below a file",
    "misspelt_plain_key": "the CLI, before Hydra composes (which would suggest adding the key with '+')",
    "misspelt_key_in_a_sweep": "the same, for a multirun",
    "misspelt_key_of_a_model": "the same, for an open group's key (Hydra would not list the keys)",
    "target_missing": "the import of a _target_ (Hydra logged its own error lines first, the cause cut off)",
    "interpolation_to_nothing": "OmegaConf's interpolation, resolved only when the task reads the value",
}
CLI_ONLY = {  # (overrides, expected): errors that only the CLI can raise
    "misspelt_plain_key": (["trainer.epoch=3"], ["Error in the config: trainer.epoch=3 is not a key of trainer",
                                                  "(did you mean trainer.epochs?)", "batch_size"]),
    "misspelt_key_in_a_sweep": (["hydra.mode=MULTIRUN", "dashboard.histogram=false,true"],
                                ["dashboard.histogram=false,true", "(did you mean dashboard.histograms?)", "filters"]),
    "misspelt_key_of_a_model": (["model.num_filter=8"], ["Error in the config: model.num_filter=8 is not a key of "
                                                          "model=convnet (did you mean model.num_filters?)"]),
    "run_dir_is_a_file": (["hydra.run.dir={root}/a_file"], ["hydra.run.dir=", "a_file", "existing file", "directory"]),
    "run_dir_under_a_file": (["hydra.run.dir={root}/a_file/sub"], ["hydra.run.dir=", "a_file/sub", "is a file"]),
    # a traceback before: the task read Hydra's list of overrides, which OmegaConf resolves ({{ }}: str.format's)
    "interpolation_to_nothing": (["model.hidden_dim=${{trainer.nope}}"], [
        "Error in the config: an interpolation in the overrides or the config cannot be resolved: Interpolation key "
        "'trainer.nope' not found."]),
}


def _labelled_images(n: int = 60, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8), np.arange(n) % classes


def write_negative_npz(path: Path) -> None:
    x, y = _labelled_images()
    np.savez(path, x_train=x, y_train=np.where(y == 0, -1, y))


def write_huge_label_npz(path: Path) -> None:
    x, y = _labelled_images()
    y = y.astype(np.int64)
    y[7] = 10**12
    np.savez(path, x_train=x, y_train=y)


def write_flat_npz(path: Path) -> None:
    x, y = _labelled_images()
    np.savez(path, x_train=x.reshape(len(x), 64), y_train=y)


FILES = {
    "negative.npz": write_negative_npz,
    "huge_label.npz": write_huge_label_npz,
    "flat.npz": write_flat_npz,
    "text.npz": lambda path: path.write_text("x,y\n0.5,1\n"),  # a CSV under an .npz name
    "a_file": lambda path: path.write_text("not a directory\n"),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A directory holding FILES."""
    path = tmp_path_factory.mktemp("errors")
    for name, write in FILES.items():
        write(path / name)
    return path


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


def check_message(message: str, expected: list[str]) -> None:
    """The message holds every expected string, and is one paragraph."""
    for text in expected:
        assert text in message, f"{text!r} missing from:\n{message}"
    assert 1 <= len(message_lines(message)) <= MAX_LINES, message


@pytest.fixture(scope="module")
def cli_outcomes(root):
    """Each of SUBPROCESS_CASES' finished process and its run directory; run two at a time."""

    def one(name: str):
        overrides = [o.format(root=root) for o in (CLI_ONLY.get(name) or CASES[name])[0]]
        run_dir = root / "cli" / name
        for o in overrides:
            if o.startswith("hydra.run.dir="):
                run_dir = Path(o.split("=", 1)[1])
        if not any(o.startswith("hydra.run.dir=") for o in overrides):
            overrides.append(f"hydra.run.dir={run_dir}")
        return run_cli([*QUICK, *overrides], cwd=root), run_dir

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(SUBPROCESS_CASES, pool.map(one, SUBPROCESS_CASES)))


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_cli_prints_one_paragraph_and_exits_1_before_training(case, cli_outcomes):
    proc, run_dir = cli_outcomes[case]
    expected = (CLI_ONLY.get(case) or CASES[case])[1]
    stderr = proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}\n{stderr[-2000:]}"
    assert "Traceback" not in stderr + proc.stdout and "[ERROR]" not in proc.stdout  # said once, as one paragraph
    check_message(stderr, expected)
    assert "+trainer" not in stderr and "+dashboard" not in stderr  # never advice to add a misspelt key
    if case not in CLI_ONLY:
        assert "Error in the config: " in stderr or "Could not append" in stderr
    if "Error in the config: " in stderr and (run_dir / "expt.log").is_file():  # kept with the run, said once here
        assert stderr.strip().splitlines()[0].split("Error in the config: ", 1)[1] in (run_dir / "expt.log").read_text()
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
    assert "Initial training loss" not in proc.stdout + stderr
    assert "epoch 1/" not in proc.stdout + stderr


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_a_short_clear_error_before_training(case, root, tmp_path):
    """The steps the CLI takes, in-process: compose, then train, which must stop before its first step."""
    overrides, expected = CASES[case]
    run_dir = tmp_path / "run"
    with pytest.raises((ConfigError, HydraException)) as exc:
        cfg = expt.compose([*QUICK, *(o.format(root=root) for o in overrides)])
        expt.train(cfg, run_dir)
    message = str(exc.value)
    if isinstance(exc.value, HydraException) and exc.value.__cause__ is not None:
        message += f"\n{exc.value.__cause__}"  # the CLI prints the cause below Hydra's own line
    check_message(message, expected)
    if isinstance(exc.value, ConfigError):
        one_paragraph(exc)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_case_list_covers_every_group():
    assert len(CASES) >= 15
    assert all(f"unknown_option_{g}" in CASES for g in GROUP_OPTIONS)
    assert set(SUBPROCESS_CASES) <= set(CASES) | set(CLI_ONLY)


def test_full_error_shows_the_traceback(tmp_path):
    """With HYDRA_FULL_ERROR=1 the same bad input fails with the traceback and the same message."""
    proc = run_cli([*QUICK, "optimizer.lr=0", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, full_error=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "ConfigError" in proc.stderr and "optimizer.lr=0 is not allowed" in proc.stderr


HELP_CASES = {  # (arguments, exit code, what the output holds)
    "help": (["--help"], 0, ["expt: train an image classifier", "Usage: python -m expt", "== Configuration groups ==",
                             "model: convnet, deep_convnet, mlp, resnet", "python -m expt --cfg job", "--hydra-help"]),
    "help_with_a_misspelt_key": (["trainer.epoch=3", "--help"], 1,
                                 ["Error in the config: trainer.epoch=3 is not a key of trainer",
                                  "(did you mean trainer.epochs?)"]),
    "help_with_an_unknown_option": (["model=nope", "--help"], 1,
                                    ["model=nope is not an option of model", "its options are: convnet"]),
    "help_with_a_bad_value": (["trainer.epochs=abc", "--help"], 1,
                              ["trainer.epochs=abc", "'abc'", "could not be converted to Integer"]),
}


@pytest.mark.parametrize("case", HELP_CASES)
def test_help_shows_the_groups_and_reports_a_bad_override_as_a_run_does(case, tmp_path):
    """``--help`` composes the config as a run does; an override it cannot compose gets the message a run
    gets (Hydra's help alone would print a traceback)."""
    arguments, code, expected = HELP_CASES[case]
    proc = run_cli(arguments, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output[-2000:]
    assert "Traceback" not in output
    for text in expected:
        assert text in output, f"{text!r} missing from:\n{output[-3000:]}"
    if code:
        assert "+trainer" not in output  # no advice to add a misspelt key
        assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("arguments, code", [(["modle=mlp"], 1), (["trainer.epoch=3"], 1), (["model=nope"], 1),
                                             (["regularization=[l2,dropuot]"], 1), (["--help"], 0)])
def test_a_typo_and_help_are_answered_before_pytorch_is_imported(arguments, code, tmp_path):
    """Only a run's checks need PyTorch, whose import takes seconds: a misspelt key or option is told, and the
    help shown, without it (``-X importtime`` lists every module the command imported)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "expt", *arguments], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"expt.config", "hydra"} <= imported and "torch" not in imported
    assert "Traceback" not in proc.stderr


def test_the_nearest_name_is_a_swap_of_two_neighbouring_letters_before_difflibs_closest():
    from expt.errors import nearest

    assert nearest("modle", ["mode", "model", "data"]) == "model"  # difflib alone ranks mode first
    assert nearest("optimzer", ["optimizer", "trainer"]) == "optimizer"  # a letter left out: difflib's
    assert nearest("x_valid", ["x_val", "y_val"], 0.75) == "x_val"
    assert nearest("x", ["model", "data"]) is None and nearest("nope", []) is None


def test_an_option_of_a_hydra_plugin_that_is_not_installed_names_the_package():
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        pytest.skip("hydra-optuna-sweeper is installed here")
    said = unknown_override(["hydra/sweeper=optuna", "optimizer.lr=interval(1e-4,1e-1)"])
    assert said.startswith("hydra/sweeper=optuna is not an option of hydra/sweeper; its options are: basic, "
                           "coarse_to_fine")
    assert said.endswith(" optuna is the option of Hydra's plugin hydra-optuna-sweeper, which is not installed here: "
                         "pip install hydra-optuna-sweeper.")
    assert unknown_override(["hydra/launcher=population", "hydra/job_logging=disabled"]) is None


def test_the_expt_command_checks_and_reports_as_python_m_expt_does(tmp_path):
    """The ``expt`` console script (the installed entry point, called as the script calls it) takes the same path
    as ``python -m expt``: the misspelt-key paragraph and exit 1, not Hydra's message."""
    launch = ("import sys; from importlib.metadata import entry_points; sys.argv[0] = 'expt'; "
              "(script,) = entry_points(group='console_scripts', name='expt'); sys.exit(script.load()())")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-c", launch, "trainer.epoch=3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Error in the config: trainer.epoch=3 is not a key of trainer" in proc.stderr
    assert "(did you mean trainer.epochs?)" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- through the Python API
def one_paragraph(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.endswith(".") and len(message) < 600, message
    return message


def npz_file(path: Path, write) -> Path:
    write(path)
    return path


def savez(**arrays):
    return lambda path: np.savez(path, **arrays)


X, Y = _labelled_images()
X_FLOAT = X / 255.0
NAN_X = X_FLOAT.copy()
NAN_X[[3, 7, 11], 0, 0] = np.nan
INF_X = X_FLOAT[:10].copy()
INF_X[4, 2, 2] = np.inf

# (how the file is written, strings the message must contain)
BAD_FILES = {
    "negative_label": (savez(x_train=X, y_train=np.where(Y == 0, -1, Y)), ["y_train holds -1", "20 of 60", "0 to C-1"]),
    "lengths_differ": (savez(x_train=X, y_train=Y[:-1]), ["x_train holds 60 samples", "y_train 59 labels"]),
    "string_labels": (savez(x_train=X, y_train=np.array(["cat", "dog", "owl"] * 20)),
                      ["y_train holds strings", "'cat'", "integers from 0 to C-1"]),
    "float_labels": (savez(x_train=X, y_train=Y + 0.5), ["y_train holds non-integer labels", "0.5", "60 of 60", "3.0"]),
    "one_class": (savez(x_train=X, y_train=np.zeros(60, dtype=np.int64)), ["every y_train label is 0", "at least 2 classes"]),
    "nan_pixels": (savez(x_train=NAN_X, y_train=Y), ["x_train holds NaN or Inf pixels in 3 of 60 samples", "finite"]),
    "inf_test_pixels": (savez(x_train=X, y_train=Y, x_test=INF_X, y_test=Y[:10]),
                        ["x_test holds NaN or Inf pixels in 1 of 10 samples"]),
    "negative_val_label": (savez(x_train=X, y_train=Y, x_val=X[:6], y_val=-np.ones(6, dtype=np.int64)),
                           ["y_val holds -1", "6 of 6"]),
    "test_lengths_differ": (savez(x_train=X, y_train=Y, x_test=X[:10], y_test=Y[:9]),
                            ["x_test holds 10 samples", "y_test 9 labels"]),
    "float_val_labels": (savez(x_train=X, y_train=Y, x_val=X[:6], y_val=np.full(6, 1.25)), ["y_val", "1.25"]),
    "x_val_without_y_val": (savez(x_train=X, y_train=Y, x_val=X[:6]), ["x_val but no y_val"]),
    "test_shape_differs": (savez(x_train=X, y_train=Y, x_test=X[:10, :6], y_test=Y[:10]),
                           ["x_test has images of shape (1, 6, 8)", "x_train (1, 8, 8)"]),
    "no_x_train": (savez(images=X, labels=Y), ["lacks x_train and y_train", "it holds images, labels"]),
    "no_y_train": (savez(x_train=X, labels=Y), ["lacks y_train", "it holds x_train, labels"]),
    "one_hot_labels": (savez(x_train=X, y_train=np.eye(3)[Y]), ["y_train has shape (60, 3)", "argmax"]),
    "text_file": (lambda path: path.write_text("x,y\n0.5,1\n"), ["is not an .npz archive", "np.savez"]),
    "npy_file": (lambda path: np.save(path, X), ["is a single .npy array, not an .npz archive", "np.savez"]),
    "object_arrays": (savez(x_train=np.array([X[0], X[1][:4]], dtype=object), y_train=Y[:2]),
                      ["x_train is stored as pickled Python objects"]),
    "damaged_zip": (lambda path: path.write_bytes(b"PK\x03\x04 cut short"), ["cannot be read as an .npz archive"]),
    "pixels_on_two_scales": (savez(x_train=X.astype(np.float32), y_train=Y, x_test=X[:10], y_test=Y[:10]),
                             ["x_test's pixels reach 1 but x_train's 255", "x_test is uint8, x_train float32",
                              "on one scale"]),
    "misspelt_val_arrays": (savez(x_train=X, y_train=Y, x_valid=X[:6], y_valid=Y[:6]),
                            ["an array named 'x_valid', which is not read (did you mean x_val?)", "expt reads x_train"]),
    "capitalised_test_arrays": (savez(x_train=X, y_train=Y, X_test=X[:6], Y_test=Y[:6]),
                                ["'X_test', which is not read (did you mean x_test?)"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_npz_file_names_the_file_the_array_and_what_is_allowed(case, tmp_path):
    from expt.data import load

    write, expected = BAD_FILES[case]
    path = npz_file(tmp_path / (f"{case}.npy" if case == "npy_file" else f"{case}.npz"), write)  # np.save adds .npy
    cfg = expt.compose(["data=npz", f"data.path={path}"])
    validate(cfg)  # the config itself is fine: the file is checked when it is read, still before training
    with pytest.raises(ConfigError) as exc:
        load(cfg.data)
    message = one_paragraph(exc)
    assert message.startswith(f"data.path={str(path)!r}"), message
    for text in expected:
        assert text in message, f"{text!r} missing from: {message}"


def test_an_npz_file_that_cannot_be_read_is_named_with_the_reason():
    from expt.data import load

    unreadable = Path("/proc/self/mem")  # Linux: a regular file whose first bytes no process can read, root included
    if not unreadable.is_file():
        pytest.skip("needs Linux's /proc/self/mem")
    with pytest.raises(ConfigError) as exc:
        load(expt.compose(["data=npz", f"data.path={unreadable}"]).data)
    assert one_paragraph(exc) == "data.path='/proc/self/mem' cannot be read ([Errno 5] Input/output error)."


def test_integral_float_labels_and_uint8_or_float_pixels_are_accepted(tmp_path):
    from expt.data import load

    path = npz_file(tmp_path / "ok.npz", savez(x_train=X_FLOAT, y_train=Y.astype(np.float64),
                                               x_test=X[:10], y_test=Y[:10].astype(np.int32)))
    splits = load(expt.compose(["data=npz", f"data.path={path}"]).data)
    assert splits.num_classes == 3 and splits.y_train.dtype == torch.int64 and splits.input_shape == (1, 8, 8)
    assert float(splits.x_test.max()) <= 1.0 and len(splits.x_test) == 10


def test_a_split_size_for_a_split_the_file_brings_is_said_to_be_unused(tmp_path, caplog):
    """data.test_size=0.5 beside a file with its own x_test: the file's 10 test samples are kept, and the log says
    the size is not used (it was ignored without a word)."""
    from expt.data import load

    path = npz_file(tmp_path / "own.npz", savez(x_train=X, y_train=Y, x_test=X[:10], y_test=Y[:10]))
    with caplog.at_level("INFO", logger="expt"):
        splits = load(expt.compose(["data=npz", f"data.path={path}", "data.test_size=0.5"]).data)
    assert len(splits.x_test) == 10
    assert (f"data.path={str(path)!r} gives its own test: data.test_size=0.5 is not used (a size applies only to a "
            "split carved from x_train).") in caplog.text


def test_splits_prepared_differently_on_one_scale_are_warned_of(tmp_path, caplog):
    """x_train standardized (or scaled to [-1, 1]) beside uint8 test images: one scale, so not refused, but a model
    trained on one scores near chance on the other; warned of with both splits' numbers. Splits of one dataset are
    not."""
    from sklearn.datasets import load_digits

    from expt.data import load

    digits = load_digits()
    x, y = (digits.images * 16).clip(0, 255).astype(np.uint8), digits.target
    xf = x[:1400].astype(np.float32) / 255
    for name, x_train, warned in (("same", x[:1400], False), ("standardized", (xf - xf.mean()) / xf.std(), True),
                                  ("minus_one_to_one", xf * 2 - 1, True)):
        path = npz_file(tmp_path / f"{name}.npz", savez(x_train=x_train, y_train=y[:1400], x_test=x[1400:],
                                                         y_test=y[1400:]))
        caplog.clear()
        with caplog.at_level("WARNING", logger="expt"):
            load(expt.compose(["data=npz", f"data.path={path}"]).data)
        assert ("x_test's pixel values are distributed unlike x_train's" in caplog.text) == warned, (name, caplog.text)
        if warned:
            assert "x_train: mean " in caplog.text and "from 0 to 1)" in caplog.text, caplog.text


def test_big_endian_pixels_and_arrays_expt_does_not_read_are_accepted(tmp_path, caplog):
    from expt.data import load

    path = npz_file(tmp_path / "be.npz", savez(x_train=X_FLOAT.astype(">f4"), y_train=Y, notes=np.arange(3),
                                               classes=np.array(["a", "b", "c"]), idx_train=np.arange(60)))
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load(expt.compose(["data=npz", f"data.path={path}"]).data)
    pixels = torch.cat([splits.x_train, splits.x_val, splits.x_test]).flatten()  # the three splits: every image
    assert torch.equal(pixels.sort().values, torch.from_numpy(X_FLOAT.astype(np.float32)).flatten().sort().values)
    said = warnings_of(caplog)
    for name in ("notes", "classes", "idx_train"):  # names of the user's own: warned of, not refused
        assert any(f"data.path={str(path)!r} holds an array named {name!r}, which is not read" in w for w in said)
    assert any("'idx_train', which is not read (if it is x_train, save it under that name)" in w for w in said)


def test_images_whose_channel_axis_cannot_be_told_are_read_channels_first_after_a_warning(tmp_path, caplog):
    from expt.data import load

    five_bands = np.random.default_rng(0).random((60, 8, 8, 5)).astype(np.float32)  # channels last, 5 of them
    path = npz_file(tmp_path / "bands.npz", savez(x_train=five_bands, y_train=Y))
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load(expt.compose(["data=npz", f"data.path={path}"]).data)
    assert splits.input_shape == (8, 8, 5)
    assert any("x_train has shape (60, 8, 8, 5), read as (N, C, H, W) with 8 channels of 8x5" in w
               for w in warnings_of(caplog))
    caplog.clear()
    rgb_last = npz_file(tmp_path / "rgb.npz", savez(x_train=X_FLOAT[:, :, :, None].repeat(3, 3), y_train=Y))
    with caplog.at_level(logging.WARNING, logger="expt"):
        assert load(expt.compose(["data=npz", f"data.path={rgb_last}"]).data).input_shape == (3, 8, 8)
    assert not any("read as (N, C, H, W)" in w for w in warnings_of(caplog))


def test_a_subset_of_a_training_split_given_in_class_order_holds_every_class(tmp_path):
    """With its own val and test splits nothing is carved, so the training split is in the file's order; a
    subset is drawn at random from it (data.split_seed), not the first N (here all of one class)."""
    from expt.data import load

    order = np.argsort(Y, kind="stable")
    path = npz_file(tmp_path / "sorted.npz", savez(x_train=X[order], y_train=Y[order], x_val=X[:6], y_val=Y[:6],
                                                   x_test=X[:6], y_test=Y[:6]))
    first, again, other = (load(expt.compose(["data=npz", f"data.path={path}", "data.subset=12", f"data.split_seed={s}"])
                                .data) for s in (0, 0, 1))
    assert sorted(set(first.y_train.tolist())) == [0, 1, 2] and len(first.y_train) == 12
    assert torch.equal(first.x_train, again.x_train) and not torch.equal(first.x_train, other.x_train)


def test_a_users_loader_gets_the_same_checks(tmp_path, monkeypatch):
    """The checks run on every loader's arrays, not only on npz files: here a ``data._target_`` of the user's."""
    from expt.data import load

    (tmp_path / "my_loaders.py").write_text(
        "import numpy as np\n"
        "def nan_pixels():\n"
        "    x = np.zeros((20, 1, 4, 4), dtype=np.float32)\n"
        "    x[5] = np.nan\n"
        "    return {'x_train': x, 'y_train': np.arange(20) % 2}\n"
        "def too_few_classes():\n"
        "    return {'x_train': np.zeros((20, 1, 4, 4)), 'y_train': np.arange(20) % 4, 'num_classes': 3}\n"
        "def a_tuple():\n"
        "    return np.zeros((20, 1, 4, 4)), np.arange(20) % 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    expected = {
        "nan_pixels": "x_train holds NaN or Inf pixels in 1 of 20 samples",
        "too_few_classes": "y_train (before the validation and test splits are carved out of it) holds 3 (5 of 20 "
                           "labels) but num_classes=3; labels must be integers from 0 to 2",
        "a_tuple": "returned a tuple: a data loader returns a dict with x_train and y_train",
    }
    for name, text in expected.items():
        with pytest.raises(ConfigError) as exc:
            load(expt.compose([f"+data._target_=my_loaders.{name}"]).data)
        message = one_paragraph(exc)
        assert message.startswith(f"data._target_=my_loaders.{name}") and text in message, message


def test_the_shipped_loaders_pass_the_checks():
    from expt.data import check_raw, digits, synthetic

    for where, raw in (("data=digits", digits()), ("data=synthetic", synthetic(num_samples=50))):
        checked = check_raw(raw, where)
        assert checked["num_classes"] == 10 and checked["x_train"].ndim == 4
        assert checked["y_train"].dtype == np.int64


# (overrides, strings the message must contain); the dry run steps the schedule through trainer.epochs
BAD_SCHEDULES = {
    "step_gamma_negative": (["trainer.epochs=10", "schedule.gamma=-1"],
                            ["schedule.gamma=-1", "schedule.step_size=5", "-0.001 at epoch 6", "finite rate > 0"]),
    "step_gamma_zero": (["trainer.epochs=10", "schedule.gamma=0"], ["schedule.gamma=0", "of 0 at epoch 6 of"]),
    "exponential_gamma_zero": (["schedule=exponential", "schedule.gamma=0"], ["ExponentialLR", "of 0 at epoch 2"]),
    "exponential_gamma_inf": (["schedule=exponential", "schedule.gamma=inf"], ["schedule.gamma=inf", "of inf at epoch 2"]),
    "cosine_period_too_short": (["schedule=cosine", "trainer.epochs=10", "schedule.T_max=5"],
                                ["schedule.T_max=5", "of 0 at epoch 6"]),
    "cosine_eta_min_negative": (["schedule=cosine", "schedule.eta_min=-0.1"], ["schedule.eta_min=-0.1", "at epoch 2"]),
    "warmup_cosine_eta_min_negative": (["schedule=warmup_cosine", "schedule.eta_min=-1"], ["schedule.eta_min=-1"]),
    "plateau_factor_zero": (["schedule=plateau", "schedule.factor=0"], ["schedule.factor=0", "of 0 at epoch 5"]),
    "plateau_factor_above_one": (["schedule=plateau", "schedule.factor=1.5"],
                                 ["ReduceLROnPlateau", "schedule.factor=1.5", "Factor should be < 1.0"]),
    "late_in_a_long_run": (["trainer.epochs=200", "schedule.step_size=50", "schedule.gamma=0"],
                           ["of 0 at epoch 51 of trainer.epochs=200"]),
}


@pytest.mark.parametrize("case", BAD_SCHEDULES)
def test_a_schedule_that_reaches_a_rate_of_zero_or_less_is_refused(case):
    overrides, expected = BAD_SCHEDULES[case]
    with pytest.raises(ConfigError) as exc:
        validate(expt.compose(overrides))
    message = one_paragraph(exc)
    for text in expected:
        assert text in message, f"{text!r} missing from: {message}"


# settings torch's classes take without a word, each of which trained otherwise than meant (the rates it gave)
QUIET_SETTINGS = {
    "step_size_negative": (["schedule.step_size=-1"], "schedule.step_size=-1 is not allowed: a whole number of epochs"),
    "step_size_fraction": (["schedule.step_size=2.5"], "schedule.step_size=2.5 is not allowed"),  # cut at epoch 5 only
    "patience_negative": (["schedule=plateau", "schedule.patience=-1"], "schedule.patience=-1 is not allowed"),
    "plateau_per_step": (["schedule=plateau", "schedule.per_step=true"],
                         "schedule.per_step=true is not allowed with schedule=plateau"),
    "cosine_floor_above_lr": (["schedule=cosine", "schedule.eta_min=0.01"],  # climbed from 1e-3 to 9.6e-3
                              "schedule.eta_min=0.01 is not allowed with optimizer.lr=0.001: the rate anneals down"),
    "warmup_of_half_an_epoch": (["schedule=warmup_cosine", "schedule.warmup_epochs=0.5"],  # no warm-up at all
                                "schedule.warmup_epochs=0.5 is not allowed with schedule.per_step=false"),
    "momentum_above_one": (["optimizer=momentum", "optimizer.momentum=1.5"],
                           "optimizer.momentum=1.5 is not allowed: a decay in [0, 1)"),
    "rmsprop_alpha_above_one": (["optimizer=rmsprop", "optimizer.alpha=1.5"], "optimizer.alpha=1.5 is not allowed"),
    "warmup_without_end": (["schedule=warmup_cosine", "schedule.warmup_epochs=inf"],  # was int()'s traceback
                           "schedule.warmup_epochs=inf is not allowed with schedule.per_step=false"),
}


@pytest.mark.parametrize("case", QUIET_SETTINGS)
def test_settings_that_would_train_otherwise_than_meant_are_refused(case):
    overrides, expected = QUIET_SETTINGS[case]
    with pytest.raises(ConfigError) as exc:
        validate(expt.compose(overrides))
    assert expected in one_paragraph(exc)


def test_the_same_settings_within_their_ranges_are_accepted():
    for overrides in (["schedule=warmup_cosine", "schedule.warmup_epochs=0.5", "schedule.per_step=true"],
                      ["schedule=warmup_cosine", "schedule.warmup_epochs=3.0"], ["schedule=plateau", "schedule.patience=0"],
                      ["schedule=cosine", "schedule.eta_min=1e-4"], ["optimizer=momentum", "optimizer.momentum=0"]):
        validate(expt.compose(overrides))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential", "inverse_time", "onecycle", "plateau",
                                      "step", "warmup_cosine"])
def test_every_shipped_schedule_passes_at_any_length(schedule):
    """Cosine anneals to eta_min=0 exactly after the last epoch: that rate is never used, so it is allowed."""
    for epochs in (0, 1, 2, 3, 10, 40):
        validate(expt.compose([f"schedule={schedule}", f"trainer.epochs={epochs}"]))


ADDED_KEYS = {
    "+foo=bar": ["foo='bar'", "top-level", "data, model"],
    "+trainer.epoch=3": ["trainer.epoch=3", "(did you mean trainer.epochs?)", "TrainerConfig"],
    "+trainer.bach_size=8": ["trainer.bach_size=8", "did you mean trainer.batch_size?"],
    "+regularization.droput=0.5": ["regularization.droput=0.5", "did you mean regularization.dropout?"],
    "+sanity.strict=true": ["sanity.strict=True", "SanityConfig", "before_train"],
    "+dashboard.histogram=false": ["dashboard.histogram=False", "did you mean dashboard.histograms?"],
}


@pytest.mark.parametrize("override", ADDED_KEYS)
def test_a_key_nothing_reads_is_refused_whatever_its_prefix(override):
    with pytest.raises(ConfigError) as exc:
        validate(expt.compose([override]))
    message = one_paragraph(exc)
    for text in ADDED_KEYS[override]:
        assert text in message, f"{text!r} missing from: {message}"


def test_no_override_of_a_real_key_or_a_group_is_taken_for_a_misspelt_key():
    """What the CLI checks before Hydra composes: every field of every typed section, deeper keys, additions
    (left to the composed config's own check), groups, packages and Hydra's keys pass."""
    sections = {"trainer": TrainerConfig, "regularization": RegularizationConfig, "sanity": SanityConfig,
                "dashboard": DashboardConfig}
    real = [f"{name}.{f.name}=1" for name, schema in sections.items() for f in dataclasses.fields(schema)]
    others = ["+trainer.epoch=3", "++trainer.epoch=3", "~trainer.ema", "trainer.snapshots.every=2",
              "experiment=fashion_mnist_convnet", "regularization=[l2,dropout]", "hydra/launcher=population",
              "hydra.sweeper.params.trainer.epochs=1,2", "trainer@foo=1", "trainer.epochs=range(1,3)"]
    assert unknown_override(real + others) is None
    assert unknown_override(["trainer.epochs=2", "model=mlp", "sanity.overfit_epoch=3"]).startswith(
        "sanity.overfit_epoch=3 is not a key of sanity (SanityConfig) (did you mean sanity.overfit_epochs?)")
    # the open groups' keys, as the chosen option (a preset's included) composes them
    group_keys = ["model.num_filters=8", "data.subset=100", "optimizer.lr=0.1", "augmentation=[translate,hflip]",
                  "augmentation.translate.pad=3", "data=npz", "data.path=x.npz", "activation=relu,tanh", "mode=sanity"]
    assert unknown_override(group_keys) is None
    assert unknown_override(["experiment=fashion_mnist_convnet", "model.filters=[8,8]", "model.pool_after=[1]"]) is None
    # a sweep over presets: each job composes its own groups (here ResNet's width), which Hydra checks
    assert unknown_override(["experiment=fashion_mnist_resnet,cifar10_resnet", "model.width=32"]) is None


def test_options_and_keys_of_a_config_of_ones_own_are_left_to_hydra(tmp_path):
    """``--config-dir`` adds options expt's conf/ lacks: a command that uses them composes (printed by --cfg)."""
    (tmp_path / "myconf" / "augmentation").mkdir(parents=True)
    (tmp_path / "myconf" / "augmentation" / "jitter.yaml").write_text(
        "# @package augmentation.jitter\n_target_: expt.augment.Translate\npad: 2\n")
    proc = run_cli(["--config-dir", str(tmp_path / "myconf"), "augmentation=[translate,jitter]", "--cfg", "job"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "jitter:" in proc.stdout and "pad: 2" in proc.stdout
    assert unknown_override(["augmentation=[translate,jitter]"]).startswith(
        "augmentation=[translate,jitter] is not allowed: jitter is not an option of augmentation")


GROUP_CASES = {  # the command line -> the start of the one paragraph unknown_override gives
    "a_key_of_the_default_option": (["data.subsett=10"],
                                    "data.subsett=10 is not a key of data=digits (did you mean data.subset?); its keys "
                                    "are: name, val_size, test_size, subset, split_seed, num_classes."),
    "a_key_of_the_chosen_option": (["data=mnist", "data.test_size=0.5"],
                                   "data.test_size=0.5 is not a key of data=mnist; its keys are: name, root, download"),
    "a_key_of_the_presets_option": (["experiment=fashion_mnist_convnet", "model.filterz=[8,8]"],
                                    "model.filterz=[8,8] is not a key of model=deep_convnet (did you mean "
                                    "model.filters?)"),
    "a_key_in_a_sweep": (["optimizer.lr=1e-3,1e-2", "optimizer.lrr=0.1"],
                         "optimizer.lrr=0.1 is not a key of optimizer=adam (did you mean optimizer.lr?)"),
    "a_key_of_a_list_groups_option": (["augmentation=[translate]", "augmentation.translate.padd=3"],
                                      "augmentation.translate.padd=3 is not a key of augmentation.translate (did you "
                                      "mean augmentation.translate.pad?); its keys are: _target_, pad, mode."),
    "a_group_with_two_letters_swapped": (["modle=x"], "modle=x is not a key of the config (a top-level key) (did "
                                                      "you mean model?)"),
    "a_launcher_misspelt": (["hydra/launcher=populaton"], "hydra/launcher=populaton is not an option of "
                                                          "hydra/launcher (did you mean population?); its options are: "
                                                          "basic,"),
    "a_logging_option_misspelt": (["hydra/job_logging=disabld"], "hydra/job_logging=disabld is not an option of "
                                                                 "hydra/job_logging (did you mean disabled?); its "
                                                                 "options are: default, disabled, none, stdout."),
    "an_option_alone": (["activation=rleu"], "activation=rleu is not an option of activation (did you mean relu?); "
                                             "its options are: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh."),
    "an_option_of_a_sweep": (["activation=relu,rleu"], "activation=relu,rleu is not allowed: rleu is not an option of "
                                                       "activation (did you mean relu?); its options are: elu,"),
    "a_preset_misspelt": (["experiment=fashion_mnist_resent"], "experiment=fashion_mnist_resent is not an option of "
                                                               "experiment (did you mean fashion_mnist_resnet?)"),
    "an_option_of_a_list_group": (["regularization=[l2,dropuot]"],
                                  "regularization=[l2,dropuot] is not allowed: dropuot is not an option of "
                                  "regularization (did you mean dropout?); its options are: batchnorm, dropout, "
                                  "elastic_net, l1, l2, max_norm, none."),
    "a_value_of_the_wrong_type_in_a_typed_section": (["trainer.epochs=abc"],  # OmegaConf's five-line block before
                                                     "trainer.epochs=abc is not allowed: Value 'abc' of type 'str' "
                                                     "could not be converted to Integer."),
    "a_bool_that_is_not": (["dashboard.histograms=maybe"],
                           "dashboard.histograms=maybe is not allowed: Value 'maybe' is not a valid bool (type str)."),
    "a_setting_of_an_option_not_chosen": (["augmentation=[hflip]", "augmentation.translate.pad=2"],  # Hydra: "not in
                                          # struct", use +; then "has no _target_"
                                          "augmentation.translate.pad=2: translate is not among the options chosen "
                                          "(augmentation=[hflip]); choose it too, e.g. augmentation=[hflip,translate] "
                                          "augmentation.translate.pad=2."),
    "a_list_of_presets": (["experiment=[digits,mnist_convnet]"],  # merged, the last winning
                          "experiment=[digits,mnist_convnet] is not allowed: experiment takes one option (one of "
                          "cifar10_resnet, digits, fashion_mnist_convnet, fashion_mnist_resnet, mnist_convnet), and "
                          "a list would merge its options into one, the last winning; only regularization and "
                          "augmentation take a list. To try several, sweep them: python -m expt -m "
                          "experiment=digits,mnist_convnet."),
    "a_list_for_a_group_of_one_option": (["activation=[relu,tanh]"],  # Hydra merged them: the run used Tanh
                                         "activation=[relu,tanh] is not allowed: activation takes one option (one of "
                                         "elu, gelu, leaky_relu, relu, sigmoid, silu, tanh), and a list would merge "
                                         "its options into one, the last winning; only regularization and "
                                         "augmentation take a list. To try several, sweep them: python -m expt -m "
                                         "activation=relu,tanh."),
    "an_option_named_twice": (["augmentation=[translate,hflip,translate]"],  # the same as one translate
                              "augmentation=[translate,hflip,translate] is not allowed: it names translate more than "
                              "once, and an option is applied once however often it is named (its settings are "
                              "augmentation.translate.*); name each option once."),
    "a_setting_its_class_takes": (["optimizer.weight_decay=0.01"],
                                  "optimizer.weight_decay=0.01: optimizer=adam does not set weight_decay, but "
                                  "torch.optim.Adam takes it: add it with +optimizer.weight_decay=0.01."),
    "a_parameter_expt_supplies": (["optimizer.params=[1]"], "optimizer.params=[1] is not a key of optimizer=adam; "
                                                             "its keys are: _target_, _partial_, lr, betas, eps."),
    "a_section_key_at_the_top": (["epochs=3"], "epochs=3 is not a key of the config (a top-level key) (did you mean "
                                               "trainer.epochs?); its keys are: data, model,"),
    # Hydra: "Could not override 'optimiser.lr'. To append to your config use +optimiser.lr=1e-3"
    "a_misspelt_section_of_a_key": (["optimiser.lr=1e-3"], "optimiser.lr=1e-3 is not a key of the config (optimiser "
                                    "is not a top-level key) (did you mean optimizer.lr?); its keys are: data, model,"),
    # a search range of the coarse-to-fine sweeper, which would have searched the preset's range instead
    "a_misspelt_section_of_a_searched_key": (
        ["hydra/sweeper=coarse_to_fine", "regularisation.l2=tag(log, interval(1e-6, 1e-3))"],
        "regularisation.l2=tag(log, interval(1e-6, 1e-3)) is not a key of the config (regularisation is not a "
        "top-level key) (did you mean regularization.l2?)"),
    "a_misspelt_group_before_its_option": (["modle=mlp"], "modle=mlp is not a key of the config (a top-level key) "
                                                          "(did you mean model=mlp?); its keys are: data, model,"),
    # a multirun gives the key to every job: Hydra would fail the mlp job with "Key 'num_filters' is not in struct"
    "a_key_some_swept_options_lack": (
        ["hydra.mode=MULTIRUN", "model=mlp,convnet", "model.num_filters=8"],
        "model.num_filters=8 is not a key of model=mlp; its keys are: _target_, hidden_sizes. model=mlp,convnet gives "
        "model.num_filters to every job, so the jobs of model=mlp would fail: sweep model=mlp in a multirun of its "
        "own, without model.num_filters."),
    # Hydra: "Key 'cutout' is not in struct", and "+augmentation.cutout.size=3" then lacks cutout's _target_
    "a_setting_of_an_option_the_preset_leaves_out": (
        ["experiment=fashion_mnist_convnet", "augmentation.cutout.size=3"],
        "augmentation.cutout.size=3: cutout is not among the options chosen (augmentation=[translate,hflip], by "
        "experiment=fashion_mnist_convnet); choose it too, e.g. augmentation=[translate,hflip,cutout] "
        "augmentation.cutout.size=3."),
    "a_setting_of_an_option_left_out_after_a_preset": (
        ["experiment=fashion_mnist_convnet", "augmentation=[translate]", "augmentation.hflip.p=0.3"],
        "augmentation.hflip.p=0.3: hflip is not among the options chosen (augmentation=[translate]); choose it too"),
    "a_key_no_swept_option_has": (["model=convnet,mlp", "model.num_filter=8"],
                                  "model.num_filter=8 is not a key of model=convnet (did you mean model.num_filters?); "
                                  "its keys are: _target_, num_filters, filter_size, hidden_dim."),
}


@pytest.mark.parametrize("case", GROUP_CASES)
def test_a_misspelt_key_or_option_of_an_open_group_gets_the_keys_or_options_there_are(case):
    """Hydra would say only that it cannot override the key (with advice to add it with +), or that it cannot
    load a list-valued group's option, without the keys or options there are."""
    arguments, expected = GROUP_CASES[case]
    assert (unknown_override(arguments) or "").startswith(expected), unknown_override(arguments)


def test_keys_every_swept_option_has_and_keys_the_coarse_to_fine_search_draws_per_option_are_taken():
    """A key each option of the group's sweep has; and a searched key of one option beside a searched choice of the
    group, which the coarse-to-fine sweeper sets only in the trials that draw that option."""
    assert unknown_override(["optimizer=adam,adamw", "optimizer.betas=[0.8,0.99]"]) is None
    assert unknown_override(["hydra/sweeper=coarse_to_fine", "model=choice(mlp,convnet)",
                             "model.num_filters=tag(log, int(interval(8, 32)))"]) is None


@pytest.mark.parametrize("case", ["a_key_of_the_default_option", "an_option_of_a_list_group",
                                  "a_setting_its_class_takes", "a_section_key_at_the_top"])
def test_expt_compose_gives_the_command_lines_paragraph(case):
    """From Python too: Hydra's 'use +trainer.epoch=3' or 'Could not load' would come first otherwise."""
    arguments, expected = GROUP_CASES[case]
    with pytest.raises(ConfigError) as raised:
        expt.compose(arguments)
    assert str(raised.value).startswith(expected)
    with pytest.raises(ConfigError, match=r"trainer\.epoch=3 is not a key of trainer .*did you mean trainer\.epochs"):
        expt.compose(["trainer.epoch=3"])


def test_the_hydra_key_of_a_full_composed_config_is_allowed():
    from hydra import compose

    from expt.config import in_hydra

    cfg = in_hydra(lambda: compose(config_name="config", overrides=["trainer.epochs=1"], return_hydra_config=True))
    assert "hydra" in cfg
    validate(cfg)


@pytest.mark.parametrize("filters", ["[]", "[32,0]", "[16,-8]"])
def test_deep_convnet_filters_get_their_own_message(filters):
    from expt.build import build

    with pytest.raises(ConfigError) as exc:
        build(expt.compose(["model=deep_convnet", f"model.filters={filters}", "++data.subset=50"]))
    message = one_paragraph(exc)
    assert message.startswith("model.filters=") and "non-empty list" in message and ">= 1" in message
    assert "pool_after" not in message


def test_the_run_directory_is_checked_before_hydra_creates_it(tmp_path):
    from expt.output_dir import output_dir_problem

    (tmp_path / "a_file").write_text("x")
    assert output_dir_problem(str(tmp_path / "a_file")) == "is an existing file, not a directory"
    assert "is a file, not a directory" in output_dir_problem(str(tmp_path / "a_file" / "sub" / "deeper"))
    assert output_dir_problem(str(tmp_path / "new" / "run"), create=True) is None
    assert (tmp_path / "new" / "run").is_dir()
    assert output_dir_problem(" ", create=True).startswith("is empty (an unset shell variable?)")


@pytest.mark.parametrize("overrides", ["model=mlp", ["model=mlp", 3], 5])
def test_expt_compose_takes_a_list_of_strings_and_says_so(overrides):
    """A string was read as a list of one-letter overrides: Hydra's 'Error parsing override 'm''."""
    with pytest.raises(ConfigError) as exc:
        expt.compose(overrides)
    assert one_paragraph(exc) == ("expt.compose takes a list of overrides, each a string as the command line writes it "
                                  f"(['model=mlp', 'trainer.epochs=3']), not {overrides!r}.")
    assert expt.compose(o for o in ["model=mlp"]).model._target_ == "expt.models.MLP"  # any iterable of strings


def test_expt_train_checks_its_run_directory_as_the_command_line_does(tmp_path):
    """expt.train(cfg, run_dir=<a file>) raised a bare FileExistsError from mkdir."""
    (tmp_path / "a_file").write_text("x")
    cfg = expt.compose(["trainer.epochs=1", "++data.subset=60"])
    for run_dir, problem in ((tmp_path / "a_file", "is an existing file, not a directory"),
                             (tmp_path / "a_file" / "run", f"cannot be created: {tmp_path / 'a_file'} is a file, "
                                                           "not a directory")):
        with pytest.raises(ConfigError) as exc:
            expt.train(cfg, run_dir=run_dir)
        assert one_paragraph(exc) == (f"run_dir={str(run_dir)!r} {problem}: give expt.train a directory it can create "
                                      "and write to.")
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_an_empty_run_directory_is_refused_and_the_files_where_the_command_runs_stay(tmp_path, key):
    """hydra.run.dir=$OUT with $OUT unset: Hydra would run in the current directory, and a run started anew there
    removes what it takes for an earlier run's files (metrics.json, checkpoints)."""
    kept = {tmp_path / "metrics.json": b"{}", tmp_path / "checkpoints" / "last.pt": b"mine"}
    for path, data in kept.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    sweep = ["-m", "optimizer.lr=1e-3,1e-2"] if key == "hydra.sweep.dir" else []
    done = run_cli([*sweep, f"{key}=", "trainer.epochs=1", "data.subset=100"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert message_lines(done.stderr) == [
        f"Error in the config: {key}='' is empty (an unset shell variable?): the run would write into the directory "
        "the command runs from, replacing the run files there; point " + key + " at a directory that can be created "
        f"and written to, or leave it out (the default is {'multirun' if sweep else 'outputs'}/<date>/<time>)."]
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "metrics.json"]


def test_a_run_into_a_directory_of_the_users_own_files_at_a_runs_names_is_refused_and_they_stay(tmp_path):
    """hydra.run.dir=. in a project that holds a metrics.json, an evaluation.json, a PyTorch file under checkpoints/
    and TensorBoard events of the user's own: a run started there would remove them as an earlier run's. It stops before training,
    naming each; an earlier expt run's files are replaced as before (the last part)."""
    from torch.utils.tensorboard import SummaryWriter

    (tmp_path / "metrics.json").write_text('{"accuracy": 0.9}')
    (tmp_path / "evaluation.json").write_text("[0.9, 0.8]")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "checkpoints" / "best.pt")  # weights, but no config
    torch.save({"w": torch.ones(2)}, tmp_path / "checkpoints" / "mine.pt")  # a name no run writes: never in question
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    [events] = [p.name for p in tmp_path.glob("events.out.tfevents.*")]
    kept = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    done = run_cli(["hydra.run.dir=.", "trainer.epochs=1", "data.subset=100"], cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert message_lines(done.stderr) == [
        f"Error in the config: the run directory {tmp_path} holds files that no expt run wrote, where this run writes "
        "its own: metrics.json (not written by an expt run); evaluation.json (not written by python -m "
        "expt.evaluate); checkpoints/best.pt (not an expt checkpoint); "
        f"{events} (TensorBoard events without the run_label.txt an expt run writes). A run started there would "
        "replace them: move them, or give the run another directory (hydra.run.dir=...)."]
    assert {p: p.read_bytes() for p in kept} == kept
    assert not (tmp_path / "run_label.txt").exists()
    # an expt run's own files there are an earlier run's, replaced by a run started anew, as before
    for path in kept:
        path.unlink()
    cfg = expt.compose(["trainer.epochs=1", "data.subset=100", *QUIET])
    first = expt.train(cfg, run_dir=tmp_path)
    assert expt.train(cfg, run_dir=tmp_path)["status"] == first["status"] == "completed"


def test_board_on_a_port_in_use_says_so(tmp_path):
    """``python -m expt.board --port P`` with P taken: one paragraph naming --port and P, exit 1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "expt.board", str(tmp_path), "--port", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = message_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"--port {port} is already in use on 127.0.0.1" in lines[0]
    assert "pick another port, or leave out --port" in lines[0]


def test_board_help_says_what_it_serves_and_where_tensorboard_options_go(capsys):
    """``python -m expt.board --help`` in plain words: what it serves, and that TensorBoard's own options follow
    ``--`` (which only the module's docstring used to say)."""
    from expt.board import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0 and "``" not in said
    assert "TensorBoard on the newest run or sweep under ./outputs and ./multirun, or on DIR" in said
    assert "Arguments after -- go to TensorBoard itself, e.g. python -m expt.board -- --samples_per_plugin" in said


# ----------------------------------------------------------------------------- presets: every group choice can be overridden
CONF = Path(str(importlib.resources.files("expt.conf")))  # conf/, wherever expt is installed
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def preset_choices(preset: str) -> dict[str, list[str]]:
    """``{group: [options]}`` the preset's own defaults list chooses (``override /group: option``)."""
    import yaml

    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    chosen = {}
    for entry in yaml.safe_load(text).get("defaults", []):
        (key, value), = entry.items()
        chosen[key.removeprefix("override /")] = value if isinstance(value, list) else [value]
    return chosen


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def plain(node) -> object:
    return OmegaConf.to_container(node, resolve=False)


def test_the_presets_are_all_covered():
    assert PRESETS == sorted(GROUP_OPTIONS["experiment"])
    for preset in PRESETS:
        assert {"data", "model", "augmentation"} <= set(preset_choices(preset)), preset


@pytest.mark.parametrize("preset", PRESETS)
def test_a_group_a_preset_chooses_can_be_given_another_option(preset):
    """Choosing another option of each group the preset sets leaves none of the preset's settings of the option
    it replaced: the group is what the same overrides compose without the preset. Other keys keep the preset's."""
    chosen = preset_choices(preset)
    overrides = []
    for group, picked in chosen.items():
        others = [o for o in options(group) if o not in picked and o not in ("npz", "none")]  # npz needs a path
        overrides.append(f"{group}=[{others[0]}]" if group in ("augmentation", "regularization") else f"{group}={others[0]}")
    cfg = expt.compose([f"experiment={preset}", *overrides])
    without = expt.compose(overrides)
    for group in chosen:
        assert plain(cfg[group]) == plain(without[group]), (preset, group)
    assert cfg.trainer.epochs == expt.compose([f"experiment={preset}"]).trainer.epochs  # the preset's own key stays
    validate(cfg)


@pytest.mark.parametrize("preset", [p for p in PRESETS if preset_choices(p)["augmentation"] != ["none"]])
@pytest.mark.parametrize("off", ["augmentation=none", "augmentation=[none]", "augmentation=[]"])
def test_a_presets_augmentation_can_be_turned_off(preset, off):
    from expt import augment

    cfg = expt.compose([f"experiment={preset}", off])
    assert plain(cfg.augmentation) == {}
    assert augment.build(cfg.augmentation) == []
    validate(cfg)


def test_an_augmentation_the_override_keeps_keeps_the_presets_settings():
    cfg = expt.compose(["experiment=fashion_mnist_convnet", "augmentation=[translate]"])
    assert plain(cfg.augmentation) == {"translate": {"_target_": "expt.augment.Translate", "pad": 2, "mode": "zeros"}}
    cfg = expt.compose(["experiment=fashion_mnist_convnet", "augmentation=[hflip,cutout]", "augmentation.cutout.size=3"])
    assert list(cfg.augmentation) == ["hflip", "cutout"] and cfg.augmentation.cutout.size == 3
    # what the paragraph for a setting of an option the preset leaves out suggests
    cfg = expt.compose(["experiment=fashion_mnist_convnet", "augmentation=[translate,hflip,cutout]",
                        "augmentation.cutout.size=3"])
    assert list(cfg.augmentation) == ["translate", "hflip", "cutout"] and cfg.augmentation.translate.pad == 2
    assert cfg.augmentation.cutout.size == 3


def test_a_preset_choosing_what_the_override_chooses_keeps_its_settings():
    cfg = expt.compose(["experiment=digits", "model=convnet"])
    assert cfg.model.hidden_dim == 256
    cfg = expt.compose(["experiment=digits", "model=mlp", "model.hidden_sizes=[32]"])
    assert plain(cfg.model) == {"_target_": "expt.models.MLP", "hidden_sizes": [32]}


@pytest.mark.slow
def test_cfg_job_under_a_preset_prints_the_config_the_run_trains(tmp_path):
    """experiment=fashion_mnist_convnet optimizer=sgd trains SGD at its own 0.01; --cfg job showed the preset's 0.003.
    --package selects a node as Hydra's does; a command that does not compose is left to Hydra's message."""
    import yaml

    proc = run_cli(["experiment=fashion_mnist_convnet", "optimizer=sgd", "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = yaml.safe_load(proc.stdout)
    trained = plain(expt.compose(["experiment=fashion_mnist_convnet", "optimizer=sgd"]))
    assert shown == trained and shown["optimizer"]["lr"] == 0.01
    proc = run_cli(["experiment=fashion_mnist_convnet", "model=mlp", "--cfg", "job", "--package", "model"], cwd=tmp_path)
    assert proc.stdout.splitlines()[0] == "# @package model"
    assert yaml.safe_load(proc.stdout) == {"_target_": "expt.models.MLP", "hidden_sizes": [256, 128]}
    proc = run_cli(["experiment=fashion_mnist_convnet", "optimizer=sgd", "--cfg", "job", "-p", "_global_"], cwd=tmp_path)
    assert yaml.safe_load(proc.stdout) == trained
    for package, said in (("nothere", "package 'nothere' not found in config"), ("trainer.epochs", "30")):
        proc = run_cli(["experiment=fashion_mnist_convnet", "--cfg", "job", "-p", package], cwd=tmp_path)
        assert said in proc.stdout + proc.stderr and "@package" not in proc.stdout  # Hydra's own answer
    proc = run_cli(["experiment=fashion_mnist_convnet", "model=nope", "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 1 and "model=nope is not an option of model" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_an_error_paragraph_is_kept_in_the_log_file_and_a_log_file_that_fails_stays_quiet(tmp_path, capsys):
    """report_error: the paragraph on stderr once and in each log file; a file whose writes fail adds nothing
    (logging would print '--- Logging error ---' and a traceback)."""
    import logging

    from expt.__main__ import report_error

    kept, broken = logging.FileHandler(tmp_path / "expt.log"), logging.FileHandler(tmp_path / "full.log")
    broken.stream.close()  # every write now fails, as on a full disk
    root = logging.getLogger()
    root.addHandler(kept), root.addHandler(broken)
    try:
        report_error("Error: x.pt could not be written\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.")
    finally:
        root.removeHandler(kept), root.removeHandler(broken), kept.close()
    assert capsys.readouterr().err == "Error: x.pt could not be written\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    assert (tmp_path / "expt.log").read_text() == "Error: x.pt could not be written\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    assert logging.raiseExceptions


def test_two_commands_at_once_are_refused_in_one_line(tmp_path):
    """-m --cfg job: Hydra raised a ValueError with its traceback; expt names the two flags, exits 2, runs nothing."""
    proc = run_cli(["-m", "--cfg", "job", "optimizer.lr=1e-3,1e-2"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.startswith("Error: --multirun and --cfg job cannot be combined")
    assert "give --cfg job its overrides with one value each" in proc.stderr
    proc = run_cli(["--cfg", "job", "--info", "searchpath"], cwd=tmp_path)
    assert proc.returncode == 2 and "--cfg job and --info searchpath cannot be combined" in proc.stderr
    assert "one value each" not in proc.stderr and not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_the_cli_applies_the_same_rule(tmp_path):
    """From the command line: a preset's data and augmentation replaced, trained for 0 epochs (exit 0).

    The data is a relative data.path under hydra.job.chdir=true: it is read from where expt started."""
    x, y = _labelled_images(100)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    run_dir = tmp_path / "run"
    proc = run_cli(["experiment=mnist_convnet", "data=npz", "data.path=mine.npz", "augmentation=none",
                    "hydra.job.chdir=true", "trainer.epochs=0", "dashboard.histograms=false", "dashboard.graph=false",
                    f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "replaces the choice [mnist] of experiment=mnist_convnet" in proc.stdout + proc.stderr
    stored = OmegaConf.create(torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["config"])
    assert stored.data.name == "npz" and stored.data.val_size == 0.2 and plain(stored.augmentation) == {}
    assert stored.model.hidden_dim == 256 and stored.trainer.batch_size == 128  # the preset's other settings
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")  # what the run trained, not Hydra's first draft
    assert plain(saved.data) == plain(stored.data) and plain(saved.augmentation) == {}


@pytest.mark.parametrize("preset, rechosen, key", [
    ("fashion_mnist_convnet", "optimizer=sgd", "model.filters=[8,8,8,8]"),
    ("fashion_mnist_convnet", "optimizer=sgd", "data.download=false"),
    ("cifar10_resnet", "optimizer=adam", "model.depth=32"),
    ("digits", "model=mlp", "schedule.eta_min=1e-5"),
    ("fashion_mnist_convnet", "augmentation=none", "data.download=false"),
])
def test_a_key_only_the_presets_option_of_another_group_has_leaves_the_rule_as_it_is(preset, rechosen, key):
    """Setting such a key (model.depth: the preset's model has it, the default model not) used to undo the rule:
    the preset's lr on SGD, or an error about a key the user never set."""
    group, name = rechosen.split("=")[0], key.split("=")[0]
    cfg = expt.compose([f"experiment={preset}", rechosen, key])
    assert plain(cfg[group]) == plain(expt.compose([f"experiment={preset}", rechosen])[group])
    assert OmegaConf.select(cfg, name) == OmegaConf.select(expt.compose([f"experiment={preset}", key]), name)
    validate(cfg)


def test_a_checkpoint_written_before_a_new_null_key_still_resumes():
    from expt.checkpoint import config_changes

    stored = {"data": {"name": "digits", "val_size": 0.2}}
    assert config_changes(stored, {"data": {"name": "digits", "val_size": 0.2, "num_classes": None}}) == {}
    assert config_changes(stored, {"data": {"name": "digits", "val_size": 0.2, "num_classes": 12}}) == {
        "data.num_classes": ("<unset>", 12)}


# ----------------------------------------------------------------------------- class counts
def load_npz(tmp_path: Path, overrides=(), **arrays):
    from expt.data import load

    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return load(expt.compose(["data=npz", f"data.path={path}", *overrides]).data)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_label_set_with_gaps_trains_after_a_warning_that_states_the_counts(tmp_path, caplog):
    x = np.random.default_rng(0).random((400, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load_npz(tmp_path, x_train=x, y_train=(np.arange(400) % 4) * 100)
    assert splits.num_classes == 301
    (gaps,) = [w for w in warnings_of(caplog) if "y_train holds" in w]
    assert "y_train holds 4 of the 301 classes that labels from 0 to 300 imply" in gaps
    assert "1-99, 101-199, 201-299" in gaps and "297 classes" in gaps and "data.num_classes" in gaps

    caplog.clear()  # one label of 999 among 1,200 samples of the classes 0-9: 1,000 outputs, and a warning
    x = np.random.default_rng(0).random((1200, 4, 4)).astype(np.float32)
    y = np.where(np.arange(1200) == 9, 999, np.arange(1200) % 10)
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load_npz(tmp_path, x_train=x, y_train=y)
    assert splits.num_classes == 1000
    train_classes = len(np.unique(splits.y_train.numpy()))
    assert any(f"y_train holds {train_classes} of the 1000 classes that labels from 0 to 999 imply" in w
               for w in warnings_of(caplog)), warnings_of(caplog)


def test_a_subset_larger_than_the_training_split_trains_on_all_of_it_after_a_warning(caplog):
    from expt.data import load as load_data

    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load_data(expt.compose(["data.subset=100000"]).data)
    assert len(splits.x_train) == 1150  # the digits' training split, whole
    assert "data.subset=100000 is more than the 1150 training samples the split leaves: all 1150 are used." in \
        warnings_of(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="expt"):
        load_data(expt.compose(["data.subset=1150"]).data)
    assert not [w for w in warnings_of(caplog) if "data.subset" in w]


def test_labels_the_training_split_lacks_are_named(tmp_path, caplog):
    x = np.random.default_rng(0).random((100, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load_npz(tmp_path, x_train=x, y_train=np.arange(100) % 6, x_val=x[:30], y_val=np.full(30, 7))
    assert splits.num_classes == 8
    messages = warnings_of(caplog)
    assert any("y_val holds labels the training split lacks: 7 (30 of 30 samples)" in w for w in messages), messages
    assert any("y_train holds 6 of the 8 classes" in w and "6-7 (2 classes)" in w for w in messages), messages


def test_data_num_classes_says_what_is_meant(tmp_path, caplog):
    x = np.random.default_rng(0).random((100, 8, 8)).astype(np.float32)
    y = np.arange(100) % 4
    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load_npz(tmp_path, ["data.num_classes=5"], x_train=x, y_train=y)
    assert splits.num_classes == 5
    assert any("y_train holds 4 of the data.num_classes=5 classes" in w and "cannot be learned" in w
               for w in warnings_of(caplog)), warnings_of(caplog)
    with pytest.raises(ConfigError) as exc:
        load_npz(tmp_path, ["data.num_classes=3"], x_train=x, y_train=y)
    assert "out of it) holds 3 (25 of 100 labels) but data.num_classes=3" in one_paragraph(exc)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="expt"):
        assert load_npz(tmp_path, x_train=x, y_train=y).num_classes == 4
    assert not [w for w in warnings_of(caplog) if "y_train holds" in w or "lacks" in w], warnings_of(caplog)


def test_a_validation_split_of_a_few_samples_is_warned_about(caplog):
    from expt.data import load

    with caplog.at_level(logging.WARNING, logger="expt"):
        splits = load(expt.compose(["data.val_size=3"]).data)
    assert len(splits.y_val) == 3
    assert any("the validation split holds 3 samples" in w and "steps of 33%" in w for w in warnings_of(caplog))


def test_synthetic_data_makes_the_classes_data_num_classes_says():
    from expt.data import load

    splits = load(expt.compose(["data=synthetic", "data.num_classes=4", "data.num_samples=200"]).data)
    assert splits.num_classes == 4 and int(splits.y_train.max()) == 3


# ----------------------------------------------------------------------------- augmentation against the data
def test_flips_on_the_digits_train_after_one_loud_warning(caplog):
    from expt.build import build

    with caplog.at_level(logging.WARNING, logger="expt"):
        exp = build(expt.compose(["augmentation=[hflip]", "++data.subset=100"]))
    assert len(exp.augmentations) == 1
    (warning,) = [w for w in warnings_of(caplog) if "hflip" in w]
    assert "data=digits" in warning and "mirror" in warning and "Training anyway" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="expt"):
        build(expt.compose(["augmentation=[hflip]", "data=synthetic", "data.num_samples=200"]))
    assert not [w for w in warnings_of(caplog) if "hflip" in w]


# ----------------------------------------------------------------------------- resume
def test_resuming_with_fewer_epochs_than_the_checkpoint_holds_is_refused(tmp_path):
    from expt import checkpoint

    cfg = expt.compose(["trainer.epochs=2", "++data.subset=60", "trainer.checkpoint_interval=0",
                        "sanity.before_train=false", "dashboard.histograms=false", "dashboard.filters=false",
                        "dashboard.graph=false", "dashboard.update_ratio=false"])
    expt.train(cfg, tmp_path / "a")
    with pytest.raises(ConfigError) as exc:
        expt.train(expt.compose(["trainer.epochs=1", "++data.subset=60", f"trainer.resume={tmp_path / 'a'}"]),
                   tmp_path / "b")
    message = one_paragraph(exc)
    assert message.startswith("trainer.epochs=1 is fewer than the 2 epochs trainer.resume=") and "trainer.epochs=2" in message
    assert not (tmp_path / "b" / "metrics.json").exists()
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=True)
    stored = saved["config"]
    assert saved["epoch"] == 2
    for epochs in (2, 5):  # as many as it holds, or more: allowed
        current = OmegaConf.to_container(expt.compose([f"trainer.epochs={epochs}", "++data.subset=60",
                                                       "trainer.checkpoint_interval=0", "sanity.before_train=false",
                                                       "dashboard.histograms=false", "dashboard.filters=false",
                                                       "dashboard.graph=false", "dashboard.update_ratio=false",
                                                       f"trainer.resume={last}"]), resolve=True)
        checkpoint.check_resumable(stored, current, last, epoch=2)
        checkpoint.check_resumable(stored, current, last, epoch=None)  # a checkpoint without its epoch


def test_two_channels_last_are_read_as_channels():
    from expt.data import as_nchw

    assert as_nchw(np.zeros((5, 8, 6, 2), dtype=np.float32)).shape == (5, 2, 8, 6)
    assert as_nchw(np.zeros((5, 2, 8, 6), dtype=np.float32)).shape == (5, 2, 8, 6)
    assert as_nchw(np.zeros((5, 8, 6, 3), dtype=np.uint8)).shape == (5, 3, 8, 6)


def test_a_warm_up_as_long_as_the_run_is_warned_of(caplog):
    """warmup_cosine's warm-up of 2 epochs in a run of 2: the rate never reaches optimizer.lr; said, not refused
    (a preset shortened to try it is such a run)."""
    with caplog.at_level("WARNING", logger="expt"):
        validate(expt.compose(["schedule=warmup_cosine", "trainer.epochs=2"]))
    assert ("schedule.warmup_epochs=2 is not below trainer.epochs=2: the run ends inside its warm-up, so its rate never "
            "reaches optimizer.lr=0.001") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="expt"):
        validate(expt.compose(["schedule=warmup_cosine", "trainer.epochs=3"]))
    assert "warm-up" not in caplog.text


def test_a_target_that_does_not_import_is_said_once_and_leaves_hydras_logger_as_it_was(caplog):
    """Hydra's locator logs its failure as an ERROR before raising it; the ConfigError says it instead, once."""
    import logging

    from expt.instantiate import locate

    with caplog.at_level(logging.DEBUG, logger="hydra.utils"):
        with pytest.raises(ConfigError, match="activation._target_='nope.Missing' does not import"):
            locate("nope.Missing", "activation._target_")
        assert locate("torch.nn.ReLU", "activation._target_") is torch.nn.ReLU
        assert not caplog.records
        logging.getLogger("hydra.utils").error("a record of its own")  # the logger speaks again afterwards
        # while one thread locates, another thread's records of that logger pass
        import threading

        from expt import instantiate

        instantiate._WHILE_LOCATING.inside.locating = True
        try:
            other = threading.Thread(target=lambda: logging.getLogger("hydra.utils").error("another thread's"))
            other.start()
            other.join()
        finally:
            instantiate._WHILE_LOCATING.inside.locating = False
    assert [r.getMessage() for r in caplog.records] == ["a record of its own", "another thread's"]


def test_an_error_that_stops_a_run_is_described_as_one_sentence_with_its_kind():
    """Bad input, a file the run could not write and any other error each read as a sentence, headed as the
    command prints them; a message that already ends a sentence (with a question, say) gets no second stop."""
    from expt.errors import StorageError, described, sentence

    assert described(ConfigError("trainer.epochs=-1 is not allowed: an integer >= 0.")) == \
        "Error in the config: trainer.epochs=-1 is not allowed: an integer >= 0."
    assert described(ConfigError("Error in the config: already headed")) == "Error in the config: already headed."
    assert described(StorageError("/x/last.pt could not be written (No space left on device)")) == \
        "Error: /x/last.pt could not be written (No space left on device)."
    assert described(RuntimeError("CUDA out of memory")) == "RuntimeError: CUDA out of memory."
    assert [sentence(t) for t in ("leaking?", "done.", "wow!", "more  ")] == ["leaking?", "done.", "wow!", "more."]
