"""Bad inputs of the search, sweep, evaluate and load side: one paragraph each, never a traceback.

Sweeps run as ``python -m expt`` (``conftest.run_cli``) where the exit code and what is printed are the
point; everything else runs in-process on a pair of tiny digits runs shared by the module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import expt
from conftest import ROOT, read_metrics, run_cli
from expt import evaluate
from expt.data import load as load_data
from expt.errors import ConfigError
from expt.search import TrialRecord, append_record

TINY = ["data.subset=200", "trainer.epochs=1"]
# two rounds of one and two trials, no pinpoint: the smallest coarse-to-fine sweep
TINY_SWEEP = ["hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false",
              "hydra.sweeper.rounds=[{trials:2,top_k:1,overrides:['trainer.epochs=1']},{trials:1,top_k:1}]"]


def paragraph(stderr: str) -> str:
    """The error as printed: no traceback, one paragraph plus Hydra's line on HYDRA_FULL_ERROR."""
    assert "Traceback" not in stderr and 'File "' not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    assert len(lines) == 1, stderr
    return lines[0]


# ============================================================================= the sweeper's own settings
@pytest.mark.parametrize("override,expected", [
    ("optimizer.lr=interval(1e-1,1e-3)",
     "Error in the config: optimizer.lr=interval(1e-1,1e-3) (a sweep on the command line) is not allowed: a range "
     "whose low end is not above its high end (here 0.1 > 0.001: swap them, interval(0.001, 0.1))."),
    ("optimizer.lr=tag(log, interval(0, 1e-1))",
     "Error in the config: optimizer.lr=tag(log, interval(0, 1e-1)) (a sweep on the command line) is not allowed: "
     "a log range needs both ends > 0 (here the low end is 0): start it at the smallest value worth trying, "
     "e.g. tag(log, interval(1e-5, 1e-1)) spans four decades."),
    ("hydra.sweeper.margin=-1",
     "Error in the config: hydra.sweeper.margin=-1.0 is not allowed: a number >= 0"),
    # misspelt keys, with and without "+": the keys there are (before, Hydra's traceback or no word at all)
    ("+hydra.sweeper.tie_breaks=x",
     "Error in the config: hydra.sweeper.tie_breaks=x is not a setting of the coarse_to_fine sweeper (did you mean "
     "hydra.sweeper.tie_break?); its settings are: params, stages, rounds, seed, direction, margin, edge, "
     "max_edge_moves, limits, max_batch_size, pinpoint, tie_break, tie_samples, pruning."),
    ("+hydra.sweeper.pinpoint.nm=3",
     "Error in the config: hydra.sweeper.pinpoint.nm=3 is not a setting of the coarse_to_fine sweeper's pinpoint "
     "(did you mean hydra.sweeper.pinpoint.num?); its settings are: enabled, param, low, high, num, overrides, "
     "metric, threshold."),
    # a value a setting cannot take: Hydra printed a block of five lines (the value, full_key, object_type, ...)
    ("hydra.sweeper.seed=abc",
     "Error in the config: hydra.sweeper.seed=abc is not allowed: Value 'abc' of type 'str' could not be converted to "
     "Integer."),
    ("hydra.sweeper.pruning.min_trials=abc",
     "Error in the config: hydra.sweeper.pruning.min_trials=abc is not allowed: Value 'abc' of type 'str' could not be "
     "converted to Integer."),
    ("hydra.sweeper.direction=up",
     "Error in the config: hydra.sweeper.direction=up is not allowed: Invalid value 'up', expected one of [maximize, "
     "minimize]."),
    # a misspelt key of a round, given as a list or by its place: Hydra's 'Key 'topk' not in 'RoundConf'' before
    ("hydra.sweeper.rounds=[{trials:2,topk:1}]",
     "Error in the config: topk (in hydra.sweeper.rounds=[{trials:2,topk:1}]) is not a setting of the coarse_to_fine "
     "sweeper's rounds (did you mean top_k?); its settings are: trials, top_k, overrides."),
    ("hydra.sweeper.stages.0.rounds.0.topk=1",
     "Error in the config: hydra.sweeper.stages.0.rounds.0.topk=1 is not a setting of the coarse_to_fine sweeper's "
     "stages' rounds (did you mean hydra.sweeper.stages.0.rounds.0.top_k?); its settings are: trials, top_k, "
     "overrides."),
    ("hydra.sweeper.pinpoint.enable=false",  # without "+" Hydra refused it with its own message
     "Error in the config: hydra.sweeper.pinpoint.enable=false is not a setting of the coarse_to_fine sweeper's "
     "pinpoint (did you mean hydra.sweeper.pinpoint.enabled?); its settings are: enabled, param, low, high, num, "
     "overrides, metric, threshold."),
])
def test_a_bad_range_or_setting_is_its_paragraph_alone(tmp_path, override, expected):
    done = run_cli("-m", *TINY_SWEEP, override, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 1
    assert paragraph(done.stderr) == expected
    assert not (tmp_path / "sweep" / "0").exists()  # no trial started


@pytest.mark.parametrize("overrides,expected", [
    (["hydra/launcher=population", "hydra.launcher.max_populaton=4"],
     "hydra.launcher.max_populaton=4 is not a setting of the population launcher (did you mean "
     "hydra.launcher.max_population?); its settings are: max_population, memory_fraction."),
    (["hydra/launcher=population", "+hydra.launcher.max_populaton=4"],  # Hydra's advice, which then failed worse
     "hydra.launcher.max_populaton=4 is not a setting of the population launcher (did you mean "
     "hydra.launcher.max_population?); its settings are: max_population, memory_fraction."),
    (["hydra.launcher.max_population=16"],
     "hydra.launcher.max_population=16 is not a setting of the basic launcher (Hydra's default, which has none); it is "
     "a setting of hydra/launcher=population: add it."),
    (["hydra/launcher=basic", "hydra.launcher.n_jobs=2"],  # the installed launchers that have the key are named
     "hydra.launcher.n_jobs=2 is not a setting of the basic launcher (Hydra's default, which has none); it is a "
     "setting of hydra/launcher=joblib: add it."),
    (["hydra.launcher.timeout_min=5"],  # expt's own preset of submitit_slurm too
     "hydra.launcher.timeout_min=5 is not a setting of the basic launcher (Hydra's default, which has none); it is a "
     "setting of hydra/launcher=submitit_local, hydra/launcher=submitit_slurm and hydra/launcher=slurm_gpu: add one "
     "of them."),
    (["hydra.launcher.partition=gpu"],
     "hydra.launcher.partition=gpu is not a setting of the basic launcher (Hydra's default, which has none); it is a "
     "setting of hydra/launcher=submitit_slurm and hydra/launcher=slurm_gpu: add one of them."),
    (["hydra/launcher=population", "hydra.launcher.max_population=all"],
     "hydra.launcher.max_population=all is not allowed: Value 'all' of type 'str' could not be converted to Integer."),
    (["hydra.launcher.n_job=2"],
     "hydra.launcher.n_job=2 is not a setting of the basic launcher (Hydra's default, which has none)."),
])
def test_a_launcher_setting_it_lacks_is_its_paragraph_alone(tmp_path, capsys, overrides, expected):
    """Hydra would say only that the key is not in the launcher's schema (and, for an added key, fail in the
    launcher's constructor with a traceback); the paragraph lists the settings there are, or says which launcher
    has the key. The command line's check before Hydra runs, in process; the first case from the command itself."""
    from expt.__main__ import command_line, stop_on_misspelt_keys

    with pytest.raises(SystemExit) as stopped:
        stop_on_misspelt_keys(command_line(["-m", *overrides, *TINY]))
    assert stopped.value.code == 1 and paragraph(capsys.readouterr().err) == f"Error in the config: {expected}"
    if overrides[-1] == "hydra.launcher.max_populaton=4":
        done = run_cli("-m", *overrides, *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
        assert done.returncode == 1 and paragraph(done.stderr) == f"Error in the config: {expected}"
        assert not (tmp_path / "sweep").exists()


def test_launcher_presets_are_named_by_their_keys_and_their_launchers_and_other_files_passed_over(tmp_path):
    """The presets a misplaced launcher setting's paragraph names, read from a folder of files: their own keys and
    those of the launcher they extend count; a launcher not installed, and files that are no such preset (YAML that
    does not parse, a list, a default written as a mapping), name nothing and stop nothing."""
    from omegaconf import OmegaConf

    from hydra_plugins.expt_population.population_launcher import _presets_with, launchers_with

    files = {
        "mine.yaml": "# @package _global_\ndefaults:\n  - /hydra/launcher/joblib@hydra.launcher\n"
                     "hydra:\n  launcher:\n    extra_key: 1\n",
        "elsewhere.yaml": "# @package _global_\ndefaults:\n  - /hydra/launcher/not_installed@hydra.launcher\n"
                          "hydra:\n  launcher:\n    n_jobs: 2\n",
        "broken.yaml": "defaults: [\n",
        "a_list.yaml": "- n_jobs\n",
        "mapping_default.yaml": "defaults:\n  - /hydra/launcher@hydra.launcher: joblib\n",
        "notes.txt": "n_jobs",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    installed = {"joblib": OmegaConf.create({"n_jobs": 10, "backend": None})}
    assert _presets_with("n_jobs", installed, tmp_path) == ["mine"]  # joblib's key
    assert _presets_with("extra_key", installed, tmp_path) == ["mine"]  # its own
    assert _presets_with("partition", installed, tmp_path) == []
    assert _presets_with("n_jobs", {}, tmp_path) == []  # joblib not installed
    named = launchers_with("partition")  # expt's own slurm_gpu after the launchers, where submitit's is installed
    assert named == (["submitit_slurm", "slurm_gpu"] if "submitit_slurm" in named else []), named


def test_a_launcher_setting_is_left_to_hydra_where_a_preset_of_ones_own_may_choose_the_launcher(tmp_path):
    """A preset found through hydra.searchpath chooses joblib: its n_jobs is no misspelt key of the basic launcher."""
    presets = tmp_path / "mine" / "experiment"
    presets.mkdir(parents=True)
    (presets / "joblib_preset.yaml").write_text("# @package _global_\ndefaults:\n  - override /hydra/launcher: joblib\n")
    done = run_cli("-m", f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "experiment=joblib_preset",
                   "hydra.launcher.n_jobs=1", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "sweep" / "0" / "metrics.json").read_text())["status"] == "completed"





@pytest.mark.parametrize("override,expected", [
    ("hydra.sweeper.pinpoint.overrides=['trainer.epoch=3']",
     "Error in the config: hydra.sweeper.pinpoint.overrides: trainer.epoch=3 is not a key of trainer (TrainerConfig) "
     "(did you mean trainer.epochs?)"),
    ("hydra.sweeper.rounds=[{trials:2,top_k:1},{trials:1,overrides:['model.num_filter=3']}]",
     "Error in the config: hydra.sweeper.rounds.1.overrides: model.num_filter=3 is not a key of "
     "model=convnet (did you mean model.num_filters?)"),
    ("hydra.sweeper.rounds=[{trials:2,top_k:1},{trials:1,overrides:['trainer.batch_size=abc']}]",
     "Error in the config: hydra.sweeper.rounds.1.overrides: trainer.batch_size=abc is not allowed: Value "
     "'abc' of type 'str' could not be converted to Integer."),
    ("hydra.sweeper.rounds=[{trials:2,top_k:1},{trials:1,overrides:['schedule=cosin']}]",
     "Error in the config: hydra.sweeper.rounds.1.overrides: schedule=cosin is not an option of schedule (did you "
     "mean cosine?); its options are: constant, cosine,"),
])
def test_a_misspelt_key_in_a_rounds_overrides_stops_the_sweep_before_its_first_trial(tmp_path, override, expected):
    """As on the command line, where it came from: Hydra's error would come at that round, after the trials
    before it (and would suggest adding the key with '+'); so would a value of the wrong type."""
    args = [a for a in TINY_SWEEP if not a.startswith("hydra.sweeper.rounds")] if "rounds" in override else \
        [a for a in TINY_SWEEP if "pinpoint" not in a] + ["hydra.sweeper.pinpoint.num=2"]
    done = run_cli("-m", *args, *TINY, override, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 1
    assert paragraph(done.stderr).startswith(expected), done.stderr
    assert not (tmp_path / "sweep" / "0").exists()  # no trial started

def test_a_sweeper_key_added_to_another_apps_sweep_is_its_paragraph_alone(tmp_path):
    """Not through expt's command line (another app of the sweeper): the sweeper's own check, at its setup."""
    done = run_cli("--multirun", "hydra/sweeper=coarse_to_fine", "+hydra.sweeper.trails=3",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", program=ROOT / "tests" / "sweeper_app" / "app.py",
                   cwd=tmp_path)
    assert done.returncode == 1
    assert paragraph(done.stderr).startswith("Error in the config: hydra.sweeper.trails=3 is not a setting of the "
                                             "coarse_to_fine sweeper; its settings are: params, stages,")


def test_a_tie_breaker_or_pinpoint_metric_no_trial_has_is_warned_of_once(tmp_path):
    done = run_cli("--multirun", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.tie_break=best_val_los",
                   "hydra.sweeper.pinpoint.num=2", "hydra.sweeper.pinpoint.metric=history.-1.train_accc",
                   "hydra.sweeper.rounds=[{trials:2,top_k:1},{trials:1,top_k:1}]",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", program=ROOT / "tests" / "sweeper_app" / "app.py",
                   cwd=tmp_path, check=True)
    log = done.stdout + done.stderr
    for setting in ("hydra.sweeper.tie_break=best_val_los", "hydra.sweeper.pinpoint.metric=history.-1.train_accc"):
        assert log.count(f"{setting} is a number in none of the 2 completed trials' metrics of the pinpoint "
                         "stage: give a key of each run's metrics.json") == 1, log
    assert "tie_break=best_val_loss" not in log  # the preset's, which the toy app does not write: no word

def test_an_old_rounds_key_names_its_place_in_the_stages(tmp_path):
    done = run_cli("-m", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.rounds.0.trials=4",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 1
    text = paragraph(done.stderr)
    assert text.startswith("Error in the config: hydra.sweeper.rounds.0.trials=4 changes a round of "
                           "hydra.sweeper.rounds, which is unset")
    assert "write hydra.sweeper.stages.0.rounds.0.trials=4" in text and "AssertionError" not in done.stderr


def test_old_rounds_keys_map_to_the_presets_stages_in_order():
    from hydra_plugins.expt_sweeper.config import old_round_key

    assert "write hydra.sweeper.stages.1.rounds.0.top_k=2" in old_round_key(["hydra.sweeper.rounds.3.top_k=2"])
    assert "stages.1.rounds.1" in old_round_key(["hydra.sweeper.rounds.9.trials=2"])  # lists the preset's rounds
    # a whole list given on the command line is a single stage, whose rounds the key then changes
    assert old_round_key(["hydra.sweeper.rounds=[{trials:2}]", "hydra.sweeper.rounds.0.trials=4"]) is None
    assert old_round_key(["hydra.sweeper.stages.0.rounds.0.trials=4"]) is None


def test_a_key_of_a_stage_the_preset_lacks_names_the_stages_there_are(tmp_path):
    """The README counts the pinpoint as stage 1, so stages.2 is a natural guess for the third: OmegaConf would say
    only that a dict is not a StageConf."""
    from hydra_plugins.expt_sweeper.config import missing_stage

    done = run_cli("-m", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.stages.2.rounds.0.trials=2",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 1 and not (tmp_path / "sweep").exists()
    assert paragraph(done.stderr) == (
        "Error in the config: hydra.sweeper.stages.2.rounds.0.trials=2 changes stage 2 of hydra.sweeper.stages, whose "
        "stages are 0: lr_decay_reg, 1: width_dropout; the pinpoint stage before them is hydra.sweeper.pinpoint "
        "(hydra.sweeper.pinpoint.num=...). To add a stage, give the whole list: hydra.sweeper.stages=[{name:...,"
        "params:[...],rounds:[...]},...].")
    assert missing_stage(["hydra.sweeper.stages.1.rounds.0.trials=2"]) is None
    # a whole list given on the command line may have a third stage, whose keys the arguments then change
    assert missing_stage(["hydra.sweeper.stages=[{name:a},{name:b},{name:c}]", "hydra.sweeper.stages.2.name=d"]) is None


@pytest.mark.parametrize("override,expected", [
    ("activation=choice(relu,foo)",
     "Error in the config: activation=choice(relu,foo) is not allowed: foo is not an option of activation; its "
     "options are: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh."),
    ("+hydra.sweeper.params.activation='choice(relu,foo)'",
     "Error in the config: hydra.sweeper.params.activation=choice(relu, foo) is not allowed: foo is not an option "
     "of activation; its options are: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh."),
    ("activation=choice(relu,rleu)",
     "Error in the config: activation=choice(relu,rleu) is not allowed: rleu is not an option of activation (did "
     "you mean relu?); its options are: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh."),
    ("trainer.batch_size=choice(32,abc)",
     "Error in the config: trainer.batch_size=choice(32, abc) is not allowed: the option abc does not compose "
     "(Error merging override trainer.batch_size=abc: Value 'abc' of type 'str' could not be converted to Integer)."),
])
def test_every_option_of_a_choice_is_checked_before_the_first_trial(tmp_path, override, expected):
    done = run_cli("-m", *TINY_SWEEP, override, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 1
    assert paragraph(done.stderr) == expected
    assert not (tmp_path / "sweep" / "0").exists()


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_says_so_and_why(tmp_path):
    """What fails every trial of a round (here a width every trial shares) would fail the next rounds too: the
    sweep stops after the first round, says why, and still draws its pictures."""
    out = tmp_path / "sweep"
    done = run_cli("-m", *TINY_SWEEP, *TINY, "model.num_filters=0", f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "log-scaled" not in done.stderr
    assert "every trial so far failed (2): the sweep stops before its next round" in done.stdout + done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line][-1]
    assert last.startswith("Every trial of the sweep ended without a score (2 trial(s): 2 failed), so nothing was "
                           "chosen; the first failure, job 0 (round 1): Error in the config: model.num_filters=0")
    assert "top trials" not in done.stderr  # no empty table
    records = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["failed"] * 2
    assert all(r["error"].startswith("Error in the config: model.num_filters=0") for r in records)
    for name in ("sweep_optimizer.lr.png", "sweep_history.png"):  # drawn, failed trials along the bottom
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_sweep_whose_pinpoint_trials_all_fail_stops_there_and_counts_them(tmp_path):
    pinpoint = [s for s in TINY_SWEEP if "pinpoint" not in s] + ["hydra.sweeper.pinpoint.num=2"]
    done = run_cli("-m", *pinpoint, *TINY, "model.num_filters=0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line][-1]
    assert last.startswith("Every trial of the sweep ended without a score (2 trial(s): 2 failed), so nothing was "
                           "chosen; the first failure, job 0 (round 0): Error in the config: model.num_filters=0"), last
    assert len((tmp_path / "sweep" / "search.jsonl").read_text().splitlines()) == 2  # no round after the pinpoint


def test_the_sweep_pictures_of_trials_without_a_score_have_their_values_on_the_axis(tmp_path):
    from expt.dashboard import plot_sweep

    records = [{"round": 1, "job": j, "values": {"optimizer.lr": lr, "activation": act}, "objective": None,
                "status": status} for j, (lr, act, status) in enumerate(
                    [(1e-5, "relu", "failed"), (2e-4, "gelu", "failed"), (3e-2, "relu", "diverged")])]
    paths = plot_sweep(records, {"optimizer.lr": True, "activation": False}, tmp_path, metric="val_acc")
    assert [p.name for p in paths] == ["sweep_optimizer.lr.png", "sweep_activation.png", "sweep_history.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_a_bad_job_of_a_plain_multirun_fails_alone_and_the_others_run(tmp_path):
    out = tmp_path / "multirun"
    done = run_cli("-m", "optimizer.lr=-1,1e-3", *TINY, f"hydra.sweep.dir={out}", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert read_metrics(out / "1")["status"] == "completed"  # the job after the bad one trained
    assert not (out / "0" / "metrics.json").exists() and not (out / "0" / "checkpoints").exists()
    message = ("Error in the config: optimizer.lr=-1 is not allowed: a learning rate > 0 (for a model that must "
               "not learn use a tiny rate such as 1e-9).")
    tail = done.stderr[done.stderr.index("Error executing job with overrides: ['optimizer.lr=-1'"):]
    assert paragraph(tail.split("\n", 1)[1]) == message
    assert f"{message} This job trains nothing; the other jobs go on." in done.stdout + done.stderr


# ============================================================================= after training
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A multirun's layout: two finished runs of one config, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        expt.train(expt.compose([*TINY, f"trainer.seed={seed}"]), run_dir=root / str(seed))
    return root


@pytest.fixture(scope="module")
def predictor(runs):
    return expt.load(runs / "0")


@pytest.fixture(scope="module")
def digits(predictor):
    return load_data(predictor.config.data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_the_trainings_paragraph(runs, capsys):
    with pytest.raises(ConfigError) as error:
        expt.load(runs / "0", device="cuda")
    assert str(error.value) == ("device='cuda' is not available: this machine has no CUDA device "
                                "(use device=auto or cpu).")
    assert evaluate.main([str(runs), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip() == (
        "Error: --device='cuda' is not available: this machine has no CUDA device (use --device=auto or cpu).")
    assert expt.load(runs / "0", device="auto").device == torch.device("cpu")


def test_a_directory_that_does_not_exist_is_named_so(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "no" / "such")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"Error: {str(tmp_path / 'no' / 'such')!r} does not exist: give a run directory (outputs/<date>/<time>) "
        "or a sweep's or multirun's (multirun/<date>/<time>).")


def test_members_rows_are_without_views_whatever_views_the_ensemble_uses(runs):
    plain = evaluate.evaluate_ensembles(runs, tta=["none"])
    flipped = evaluate.evaluate_ensembles(runs, tta=["shift"])  # the digits: shifted views (a mirror is refused)
    assert flipped["choice"]["tta"] == "shift"
    for a, b in zip(plain["members"], flipped["members"]):
        assert (a["run_dir"], a["val_acc"], a["val_loss"], a["test_acc"]) == (
            b["run_dir"], b["val_acc"], b["val_loss"], b["test_acc"])
        # a member's validation accuracy here is the one training measured for the same best model
        assert b["val_acc"] == pytest.approx(b["best_val_acc"])
    table = evaluate.format_table(flipped)
    assert "each member alone without test-time views" in table and "with its views, shift, on both splits" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_an_ensemble_on_a_device_the_machine_lacks_is_refused_before_any_run_is_read(runs):
    """Through the Python API as on the command line: the device is named, no run is left out for it."""
    with pytest.raises(ConfigError, match=r"^device='cuda' is not available: this machine has no CUDA device"):
        evaluate.evaluate_ensembles(runs, device="cuda")


def test_runs_left_out_of_an_ensemble_are_named_with_the_reason(runs, tmp_path, capsys):
    root = tmp_path / "sweep"
    shutil.copytree(runs / "0", root / "0")
    shutil.copytree(runs / "1", root / "1")
    shutil.copytree(runs / "1", root / "2")
    (root / "1" / "metrics.json").write_text('{"status": "comp')  # cut short
    (root / "2" / "checkpoints" / "best.pt").unlink()
    (root / "3" / ".hydra").mkdir(parents=True)  # a job that failed before training
    diverged = read_metrics(runs / "1") | {"status": "diverged"}
    shutil.copytree(runs / "1", root / "4")
    (root / "4" / "metrics.json").write_text(json.dumps(diverged))
    shutil.copytree(runs / "1", root / "5")
    best = root / "5" / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])  # cut short, as a full disk leaves a copy
    (root / "6" / ".hydra").mkdir(parents=True)  # a trial the sweep recorded as failed
    append_record(root / "search.jsonl", TrialRecord(
        round=1, job=6, overrides=["optimizer.lr=0.1"], values={"optimizer.lr": 0.1}, objective=None,
        status="failed", seconds=0.5, run_dir="6", error="FileNotFoundError: no such file: 'data.npz'"))
    assert evaluate.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:6] == [
        "left out 1: its metrics.json cannot be read (damaged or not a JSON object)",
        "left out 2: it has no checkpoints/best.pt",
        "left out 3: it has no metrics.json (the run failed, was killed, or is still running)",
        "left out 4: its status is 'diverged', not 'completed'",
        "left out 6: the trial failed (FileNotFoundError: no such file: 'data.npz')",
        "left out 5: its checkpoints/best.pt cannot be loaded (" + out.split("best.pt cannot be loaded (")[1].split("\n")[0],
    ]  # a checkpoint is found unreadable when it is loaded, after the others
    assert "is not a readable checkpoint" in out.splitlines()[5]
    saved = json.loads((root / evaluate.EVALUATION_FILE).read_text())
    assert [m["run_dir"] for m in saved["members"]] == [str(root / "0")]
    assert [item["run_dir"] for item in saved["left_out"]] == ["1", "2", "3", "4", "6", "5"]
    (root / "0" / "metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"holds no finished run: .*; 0: it has no metrics.json \(the run failed, "
                                          r"was killed, or is still running\); 1: its metrics.json cannot be read"):
        evaluate.evaluate_ensembles(root)


# ============================================================================= what a predictor takes
EXPECTS = (r"the model of .*best.pt takes a batch of images shaped \(N, 1, 8, 8\) \(or \(N, H, W\), \(N, H, W, C\), "
           r"or one image\), float pixels on the training images' scale \(0 to 1\) or uint8 pixels \(0-255\)\.$")


@pytest.mark.parametrize("case,message", [
    ("strings", r"^predict: images holds strings; images must be numeric arrays \(uint8 or float pixels\)\. Here "),
    ("bool", r"^predict: images holds values of dtype bool; images must be numeric arrays"),
    ("complex", r"^predict: images holds values of dtype complex128; images must be numeric arrays"),
    ("nan", r"^predict: images holds NaN or Inf pixels in 1 of 5 samples; pixels must be finite numbers"),
    ("empty", r"^predict: images holds no image \(shape \(0, 1, 8, 8\)\); "),
    ("raw 0-16", r"^predict: images hold pixels from 0 to 16, on another scale than the images the model of .* was "
                 r"trained on \(0 to 1, as expt.data.load gave them\): scale them the same way \(raw 0-16 digits "
                 r"divided by 16, 8-bit images as uint8 or divided by 255\); "),
])
def test_a_predictor_refuses_what_training_would_with_what_it_expects(predictor, digits, case, message):
    x = digits.x_test[:5].numpy()
    bad = {"strings": np.array([["0"] * 8] * 8), "bool": x > 0.5, "complex": x.astype(np.complex128),
           "nan": np.where(np.arange(5)[:, None, None, None] == 2, np.nan, x), "empty": x[:0],
           "raw 0-16": np.round(x * 16)}[case]
    with pytest.raises(ConfigError) as error:
        predictor.predict(bad)
    text = str(error.value)
    assert "\n" not in text
    import re
    assert re.search(message, text), text
    assert re.search(EXPECTS, text), text


def test_a_predictor_takes_the_training_scale_and_uint8(predictor, digits, runs):
    x = digits.x_test.numpy()
    assert predictor.pixel_range == (0.0, 1.0)
    probs = predictor.predict(x)
    acc = float((probs.argmax(1) == digits.y_test).double().mean())
    assert acc == pytest.approx(read_metrics(runs / "0")["test_acc"])
    as_bytes = predictor.predict((x * 255).round().astype(np.uint8))
    assert float((as_bytes.argmax(1) == digits.y_test).double().mean()) == pytest.approx(acc, abs=0.01)


def test_a_checkpoint_written_before_the_pixel_range_still_loads(runs, digits, tmp_path):
    state = torch.load(runs / "0" / "checkpoints" / "best.pt", weights_only=True)
    del state["preprocess"]["pixel_range"]
    torch.save(state, tmp_path / "old.pt")
    old = expt.load(tmp_path / "old.pt")
    assert old.pixel_range is None
    x = digits.x_test[:5].numpy()
    assert torch.allclose(old.predict(x), expt.load(runs / "0").predict(x))
    assert old.predict(np.round(x * 16)).shape == (5, 10)  # its scale is unknown: not refused
    with pytest.raises(ConfigError, match=r"float pixels in \[0, 1\] or uint8 pixels\.$"):
        old.predict(x > 0.5)


@pytest.mark.slow
def test_a_sweeper_or_launcher_chosen_without_multirun_is_warned_of_and_the_one_run_trains(tmp_path):
    """python -m expt hydra/sweeper=coarse_to_fine (no -m) trained the config's one run without a word."""
    done = run_cli("hydra/sweeper=coarse_to_fine", "hydra/launcher=population", "trainer.epochs=0",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [line for line in (done.stdout + done.stderr).splitlines() if "only take" in line]
    assert len(warned) == 1 and warned[0].endswith(
        "hydra/sweeper=coarse_to_fine and hydra/launcher=population only take effect in a multirun: this command "
        "trains one run with the config's values; to sweep, add -m (--multirun)."), warned
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_plain_multirun_into_a_coarse_to_fine_sweep_directory_is_refused(tmp_path):
    """Its jobs 0, 1 would have replaced the search's trials 0, 1, and search.jsonl would describe runs that are gone;
    the search itself goes on in its directory."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *TINY_SWEEP, *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    before = (sweep / "0" / "metrics.json").read_text()
    done = run_cli("-m", *TINY, "optimizer.lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 1
    assert paragraph(done.stderr).startswith(f"Error in the config: hydra.sweep.dir={str(sweep)!r} holds a "
                                             "coarse_to_fine search (search.jsonl); this multirun's jobs would replace "
                                             "its trials.")
    assert (sweep / "0" / "metrics.json").read_text() == before
    full = run_cli("-m", *TINY, "optimizer.lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                   env={"HYDRA_FULL_ERROR": "1"})  # refused all the same
    assert full.returncode == 1 and "holds a coarse_to_fine search" in full.stderr
    assert (sweep / "0" / "metrics.json").read_text() == before
    again = run_cli("-m", *TINY_SWEEP, *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # the search, resumed
    assert again.returncode == 0, again.stderr[-2000:]
    # the other way round: a search into a plain multirun's directory replaced its finished jobs, saying so in a log
    # line a job; it is refused, and the multirun's jobs stay
    plain = tmp_path / "plain"
    assert run_cli("-m", *TINY, "optimizer.lr=1e-3,1e-2", f"hydra.sweep.dir={plain}", cwd=tmp_path).returncode == 0
    before = (plain / "0" / "metrics.json").read_text()
    done = run_cli("-m", *TINY_SWEEP, *TINY, f"hydra.sweep.dir={plain}", cwd=tmp_path)
    assert done.returncode == 1 and paragraph(done.stderr) == (
        f"Error in the config: hydra.sweep.dir={str(plain)!r} holds the jobs of a multirun of another sweeper "
        "(multirun.yaml); this search's trials would replace them. Give this search another hydra.sweep.dir.")
    assert (plain / "0" / "metrics.json").read_text() == before and not (plain / "search.jsonl").exists()


def test_a_rounds_override_that_needs_a_searched_option_is_not_refused(tmp_path):
    """optimizer.momentum composes only with an optimizer the choice() draws, not with the default Adam: every trial
    composes, so the up-front check lets the sweep run."""
    done = run_cli("-m", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false",
                   "optimizer=choice(momentum,nesterov)",
                   "hydra.sweeper.stages=[{name:a,params:null,rounds:[{trials:1,overrides:['optimizer.momentum=0.95']}]}]",
                   *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optimizer.momentum=0.95" in (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text()
