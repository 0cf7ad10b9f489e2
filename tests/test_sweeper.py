"""The coarse_to_fine sweeper through real Hydra: a toy app (tests/sweeper_app) and expt itself.

Every sweep runs in a subprocess, as a user would start it, with the expt this process imports
(``conftest.run_cli``): the plugin must be found from an installed expt, editable or not.
"""

from __future__ import annotations

import json
import signal
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import QUIET, ROOT, run_cli

APP = ROOT / "tests" / "sweeper_app" / "app.py"
# One stage of three tiny rounds (4, 2 and 2 trials) over optimizer.lr and regularization.l2
# keeps each sweep of the toy app to a few seconds.
TINY = ["hydra.sweeper.pinpoint.enabled=false", "model.hidden_dim=64", "regularization.dropout=0.2",
        "hydra.sweeper.rounds=[{trials:4,top_k:3,overrides:['trainer.epochs=1']},"
        "{trials:2,top_k:2,overrides:['trainer.epochs=3']},{trials:2,top_k:1,overrides:['trainer.epochs=10']}]"]
# TINY with a value every round replaces (trainer.epochs) and a key of the command line's own: the sweep
# conftest.tiny_sweep runs once for the tests that read it and for those that stop and resume its twin
TINY_NOTED = [*TINY, "trainer.epochs=5", "+toy_note=x"]


def sweep(sweep_dir: Path, *overrides: str, app: Path = APP, check: bool = True,
          extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python app.py --multirun hydra/sweeper=coarse_to_fine hydra.sweep.dir=... <overrides>``."""
    return run_cli("--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={sweep_dir}", *overrides,
                   program=app, cwd=sweep_dir.parent, env=extra_env, check=check)


def records(sweep_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (sweep_dir / "search.jsonl").read_text().splitlines()]


def summary(sweep_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((sweep_dir / "search_summary.yaml").read_text())


def test_a_sweep_records_every_trial_and_summarises_the_rounds(tiny_sweep: Path) -> None:
    out, output = tiny_sweep, (tiny_sweep.parent / "output.txt").read_text()
    lines = records(out)
    assert sorted(r["job"] for r in lines) == list(range(8))
    assert [r["round"] for r in sorted(lines, key=lambda r: r["job"])] == [1] * 4 + [2] * 2 + [3] * 2
    for r in lines:
        assert set(r) >= {"round", "job", "overrides", "values", "objective", "status", "seconds"}
        assert r["status"] == "completed" and isinstance(r["objective"], float)
        assert set(r["values"]) == {"optimizer.lr", "regularization.l2"}
        assert f"trainer.epochs={[1, 3, 10][r['round'] - 1]}" in r["overrides"]
        assert "+toy_note=x" in r["overrides"]
        run_dir = out / r["run_dir"]
        assert run_dir == out / str(r["job"]) and (run_dir / ".hydra" / "overrides.yaml").exists()
        assert json.loads((run_dir / "metrics.json").read_text())["objective"] == r["objective"]
    info = summary(out)
    best = max(lines, key=lambda r: r["objective"])
    assert info["best"]["job"] == best["job"] and info["best"]["overrides"] == best["overrides"]
    assert [r["round"] for r in info["rounds"]] == [1, 2, 3]
    assert info["rounds"][0]["space"]["optimizer.lr"] == {"type": "float", "low": 1e-5, "high": 0.1,
                                                          "log": True}
    assert isinstance(info["edge_moves"], list) and info["trials"] == {"completed": 8}
    assert "top trials (maximize)" in output
    assert (out / "multirun.yaml").exists()


@pytest.mark.slow
def test_the_default_search_is_pinpoint_then_lr_decay_reg_then_width_with_the_best_held(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    done = sweep(out)  # the preset as it ships; the toy has no schedule or num_filters, which are left out
    lines = sorted(records(out), key=lambda r: r["job"])
    assert [r["round"] for r in lines] == [0] * 7 + [1] * 8 + [2] * 4 + [3] * 2 + [4] * 4 + [5] * 2
    info = summary(out)
    assert [(s["name"], s["params"], s["rounds"]) for s in info["stages"]] == [
        ("lr_decay_reg", ["optimizer.lr", "regularization.l2"], [1, 2, 3]),
        ("width_dropout", ["model.hidden_dim", "regularization.dropout"], [4, 5])]
    first = [r for r in lines if 1 <= r["round"] <= 3]
    assert all(set(r["values"]) == {"optimizer.lr", "regularization.l2"} for r in first)
    held = next(r for r in lines if r["job"] == info["stages"][0]["held_from_job"])
    assert held["objective"] == max(r["objective"] for r in first)
    for r in lines[21:]:
        assert set(r["values"]) == {"model.hidden_dim", "regularization.dropout"}
        held_lr = next(o for o in held["overrides"] if o.startswith("optimizer.lr="))
        assert held_lr in r["overrides"] and "trainer.epochs=" + ("5" if r["round"] == 4 else "10") in r["overrides"]
    low, high = info["pinpoint"]["range"]
    assert all(low <= r["values"]["optimizer.lr"] <= high for r in lines if r["round"] == 1)
    # only round 1 may move a range: round 2 precedes its stage's last round, stage 2 has two rounds
    assert all(m["after_round"] == 1 for m in info["edge_moves"])
    best = info["best"]
    assert best["objective"] == max(r["objective"] for r in lines if r["round"] > 0)
    assert f"chosen: job {best['job']} (round {best['round']})" in done.stdout + done.stderr


def test_trials_that_raise_return_nan_or_diverge_count_as_worst(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep(out, *TINY[:3], "hydra.sweeper.rounds=[{trials:8},{trials:2},{trials:1}]",
          "hydra.sweeper.seed=1", "toy.raise_above_lr=1e-2",
          "toy.nan_above_l2=1e-2", "toy.diverge_above_lr=1e-3")
    lines = records(out)
    by_status = {s: [r for r in lines if r["status"] == s] for s in ("completed", "failed", "diverged")}
    assert by_status["failed"] and by_status["diverged"] and by_status["completed"]
    assert len(lines) == 11
    assert all("ValueError" in r["error"] for r in by_status["failed"])
    assert all(r["objective"] in (None, 0.0) for r in by_status["diverged"])
    assert summary(out)["best"]["job"] in {r["job"] for r in by_status["completed"]}


@pytest.mark.slow
def test_joblib_launcher_runs_each_round_in_parallel(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = sweep(out, *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    log = done.stdout + done.stderr
    assert "is launching 4 jobs" in log and log.count("is launching 2 jobs") == 2
    lines = records(out)
    assert sorted(r["job"] for r in lines) == list(range(8))
    assert all((out / str(r["job"]) / "metrics.json").exists() for r in lines)
    assert summary(out)["best"] is not None


@pytest.mark.slow
def test_resuming_runs_only_the_trials_missing_from_search_jsonl(tmp_path: Path) -> None:
    out, calls = tmp_path / "sweep", tmp_path / "calls.txt"
    args = [*TINY, f"toy.calls_file={calls}", "hydra.sweeper.max_batch_size=3"]
    sweep(out, *args)
    first = records(out)
    assert sorted(int(x) for x in calls.read_text().split()) == list(range(8))

    calls.write_text("")
    sweep(out, *args)
    assert calls.read_text() == "" and records(out) == first

    # as if the sweep had been stopped during round 2: the last three trials never finished
    kept = [r for r in first if r["job"] < 5]
    (out / "search.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    sweep(out, *args)
    assert sorted(int(x) for x in calls.read_text().split()) == [5, 6, 7]
    again = {r["job"]: r for r in records(out)}
    assert sorted(again) == list(range(8))
    assert [again[j]["overrides"] for j in range(8)] == [
        r["overrides"] for r in sorted(first, key=lambda r: r["job"])]



def test_trials_with_the_same_overrides_are_each_recorded_once(tmp_path: Path) -> None:
    """Four trials over three choices: two of them run the same overrides, and each job is its own trial."""
    out, calls = tmp_path / "sweep", tmp_path / "calls.txt"
    args = ["hydra.sweeper.pinpoint.enabled=false", "hydra.sweeper.params=null", "activation=choice(relu,gelu,tanh)",
            "hydra.sweeper.rounds=[{trials:4,top_k:2,overrides:['trainer.epochs=1']}]", f"toy.calls_file={calls}"]
    done = sweep(out, *args)
    lines = records(out)
    assert sorted(r["job"] for r in lines) == [0, 1, 2, 3]
    assert len({tuple(r["overrides"]) for r in lines}) < 4  # the case at hand: a repeated trial
    table = (done.stdout + done.stderr).split("top trials (maximize):\n", 1)[1].splitlines()[1:5]
    assert sorted(int(row.split()[2]) for row in table) == [0, 1, 2, 3], table  # rank round job ...
    assert sorted(int(x) for x in calls.read_text().split()) == [0, 1, 2, 3]
    assert summary(out)["trials"] == {"completed": 4}
    calls.write_text("")
    sweep(out, *args)  # resumed: every job is already recorded, each once
    assert calls.read_text() == "" and records(out) == lines


def test_a_changed_search_in_the_same_directory_is_refused_before_any_trial(tmp_path: Path) -> None:
    out, calls = tmp_path / "sweep", tmp_path / "calls.txt"
    sweep(out, *TINY, f"toy.calls_file={calls}")
    first = records(out)
    kept = {name: (out / name).read_bytes() for name in ("search_summary.yaml", "multirun.yaml")}
    calls.write_text("")
    # the same first round, another second (round 1 keeps its best 2, not 3): refused at round 2, and the refused
    # command leaves the search's summary and multirun.yaml as they were (it rewrote them, saying round 1 of 3)
    changed = TINY[-1].replace("{trials:4,top_k:3,", "{trials:4,top_k:2,")
    done = sweep(out, *TINY[:-1], changed, f"toy.calls_file={calls}", check=False)
    assert done.returncode == 1 and "holds the trials of another search: its job 4 (round 2) ran " in done.stderr
    assert {name: (out / name).read_bytes() for name in kept} == kept
    done = sweep(out, *TINY, f"toy.calls_file={calls}", "hydra.sweeper.seed=1", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{out} holds the trials of another search: its job 0 (round 1) ran " in done.stderr
    assert "Give this sweep a directory of its own (hydra.sweep.dir=...)" in done.stderr
    assert calls.read_text() == "" and records(out) == first
    # the same rounds after a pinpoint stage, turned on since: its trials take job numbers 0, 1, ... in round 0,
    # and would replace the earlier trials' run directories
    done = sweep(out, *TINY[1:], f"toy.calls_file={calls}", "hydra.sweeper.pinpoint.enabled=true", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{out} holds the trials of another search: its job 0 (round 1) ran " in done.stderr
    assert "where this sweep's job 0 (round 0) is " in done.stderr
    assert calls.read_text() == "" and records(out) == first
    assert {name: (out / name).read_bytes() for name in kept} == kept


def test_a_sweep_stopped_in_a_trial_that_says_nothing_of_itself_still_says_how_to_continue(tmp_path: Path) -> None:
    """The hint came only from an expt job's own stop: a stop between trials, or in a task of another app (here the
    toy, which prints nothing), ended with the interrupt alone. The sweeper says it where the stop reaches it."""
    import time

    from conftest import finish, start_cli
    from expt.search import read_records

    out, calls, release = tmp_path / "sweep", tmp_path / "calls.txt", tmp_path / "release"
    proc = start_cli("--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={out}", *TINY,
                     f"toy.calls_file={calls}", "toy.hold_from_job=2", f"toy.release_file={release}", program=APP,
                     cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(6000):  # until job 2 holds (jobs 0 and 1 recorded): the wait guards a hung process only
            if proc.poll() is not None or (calls.is_file() and "2" in calls.read_text().split()):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before its held trial"
        proc.send_signal(signal.SIGINT)
        output = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(r.job for r in read_records(out / "search.jsonl").values()) == [0, 1]
    assert output.count(f"To continue the sweep: run the same command again with hydra.sweep.dir={out} and "
                        "EXPT_RESUME_OWN_CHECKPOINT=1 in the environment") == 1, output[-3000:]


@pytest.mark.slow
def test_a_resumed_sweep_runs_its_failed_trials_again_and_forgets_unfinished_progress(tmp_path: Path) -> None:
    """A trial failed by what the user then fixed (a missing file) runs again on resume; the early-stopping
    scores of trials that never finished are dropped, those of recorded trials kept."""
    out, needed = tmp_path / "sweep", tmp_path / "needed.txt"
    args = [*TINY, f"toy.fail_unless_file={needed}"]
    done = sweep(out, *args, check=False)
    assert done.returncode == 1 and "Every trial of the sweep ended without a score" in done.stderr
    assert [r["status"] for r in records(out)] == ["failed"] * 4
    needed.write_text("here now")
    progress = out / "progress.jsonl"  # as a stopped sweep leaves it: scores of jobs 0-3 of round 1 and job 4's
    progress.write_text("".join(json.dumps({"round": n, "job": j, "epoch": 1, "score": 0.5}) + "\n"
                                for n, j in [(1, 0), (1, 1), (1, 2), (1, 3), (2, 4)]))
    kept = [r for r in records(out) if r["job"] < 2]  # jobs 0 and 1 recorded as completed, 2 and 3 never
    (out / "search.jsonl").write_text("".join(json.dumps({**r, "status": "completed", "objective": 0.5,
                                                          "error": None}) + "\n" for r in kept))
    again = sweep(out, *args)
    assert "resuming: 2 of 4 trials of this round are already in search.jsonl" in again.stdout + again.stderr
    lines = records(out)
    assert sorted(r["job"] for r in lines) == list(range(8)) and all(r["status"] == "completed" for r in lines)
    # the toy reports no scores: what is left is what the recorded trials reported
    assert [(line["round"], line["job"]) for line in map(json.loads, progress.read_text().splitlines())] == [
        (1, 0), (1, 1)]
    # the first attempt's records, all failed, run again
    (out / "search.jsonl").write_text("".join(json.dumps({**r, "status": "failed", "objective": None})
                                              + "\n" for r in lines if r["round"] == 1))
    again = sweep(out, *args)
    assert "resuming: 0 of 4 trials of this round are already in search.jsonl; the 4 that failed run again" in (
        again.stdout + again.stderr)
    assert all(r["status"] == "completed" for r in records(out)[4:])

@pytest.mark.parametrize("point", ["search.jsonl:partial@3", "search.jsonl:appended@3"])
def test_a_sweep_killed_at_a_record_write_resumes_to_the_same_records(tmp_path: Path, tiny_sweep: Path,
                                                                      point: str) -> None:
    """SIGKILL in the middle of a trial's line, or right after it: the re-run ends with the uninterrupted records."""
    from expt.faults import ENV
    from expt.search import read_records

    straight = tiny_sweep
    out = tmp_path / "sweep"
    killed = sweep(out, *TINY_NOTED, check=False, extra_env={ENV: point})
    assert killed.returncode == -signal.SIGKILL
    assert len(read_records(out / "search.jsonl")) == (2 if point.endswith("partial@3") else 3)
    sweep(out, *TINY_NOTED)
    a, b = read_records(straight / "search.jsonl"), read_records(out / "search.jsonl")
    assert sorted(a) == sorted(b) and len(a) == 8
    for key in a:
        assert (b[key].objective, b[key].status, b[key].values) == (a[key].objective, a[key].status, a[key].values)


def test_pinpoint_stage_starts_round_one_from_the_rates_that_learned(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep(out, *TINY[1:], "hydra.sweeper.pinpoint.enabled=true",
          "hydra.sweeper.pinpoint.metric=history.-1.train_acc", "hydra.sweeper.pinpoint.threshold=0.99")
    lines = sorted(records(out), key=lambda r: r["job"])
    pin = lines[:7]
    assert [r["round"] for r in pin] == [0] * 7 and lines[7]["round"] == 1
    assert [r["values"]["optimizer.lr"] for r in pin] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert all("data.subset=100" in r["overrides"] and "regularization=none" in r["overrides"]
               for r in pin)
    info = summary(out)
    assert info["pinpoint"]["learned"] == [1e-4, 1e-3, 1e-2, 1e-1]
    low, high = info["pinpoint"]["range"]
    assert low == pytest.approx(10 ** -4.5, rel=1e-3) and high == pytest.approx(10 ** -0.5, rel=1e-3)
    assert all(low <= r["values"]["optimizer.lr"] <= high for r in lines[7:11])


def test_command_line_sweeps_join_the_space_and_plain_values_pin_it(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    done = sweep(out, "hydra.sweeper.rounds=[{trials:4,top_k:2}]", "optimizer.lr=0.003",
          "regularization.dropout=interval(0.0, 0.7)", "model.hidden_dim=range(32, 512)",
          "activation=choice(relu, leaky_relu, gelu)")
    lines = records(out)
    assert len(lines) == 4
    for r in lines:
        assert set(r["values"]) == {"regularization.l2", "regularization.dropout", "model.hidden_dim",
                                    "activation"}
        assert "optimizer.lr=0.003" in r["overrides"]
        assert 32 <= r["values"]["model.hidden_dim"] <= 511
        assert r["values"]["activation"] in {"relu", "leaky_relu", "gelu"}
    log = done.stdout + done.stderr
    assert "optimizer.lr is fixed on the command line (optimizer.lr=0.003): not searched" in log
    assert "pinpoint: optimizer.lr is not searched (fixed, or not in this config): no pinpoint stage" in log
    assert "schedule.gamma is not a key of this config" in log  # the toy has no schedule


@pytest.mark.slow
def test_a_searched_group_choice_sets_each_key_only_where_the_drawn_option_has_it(tmp_path: Path) -> None:
    """model=choice(convnet,mlp) with the preset's model.num_filters (the ConvNet's alone), and leaky ReLU's slope
    searched beside activation=choice(relu,leaky_relu): a trial that draws the option without the key runs without
    it (it failed Hydra's composition and stopped the sweep), and a key no option has is left out."""
    out = tmp_path / "sweep"
    done = run_cli("--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={out}", "data.subset=100",
                   "hydra.sweeper.pinpoint.enabled=false", "hydra.sweeper.rounds=[{trials:8,top_k:2,overrides:"
                   "['trainer.epochs=1']},{trials:2,overrides:['trainer.epochs=1']}]", "model=choice(convnet,mlp)",
                   "activation=choice(relu,leaky_relu)", "activation.negative_slope=interval(0.01, 0.3)",
                   "+hydra.sweeper.params.model.depth='range(2, 4)'", *(f"{q}" for q in QUIET),
                   cwd=tmp_path, check=True)
    lines = records(out)
    assert len(lines) == 10 and {r["status"] for r in lines} == {"completed"}
    assert {r["values"]["model"] for r in lines} == {"convnet", "mlp"}
    for r in lines:
        convnet, leaky = r["values"]["model"] == "convnet", r["values"]["activation"] == "leaky_relu"
        assert ("model.num_filters" in r["values"]) == convnet == any("model.num_filters=" in o for o in r["overrides"])
        assert ("activation.negative_slope" in r["values"]) == leaky
    log = done.stdout + done.stderr
    assert "model.num_filters is searched where model is convnet (the other options lack it)" in log
    assert "activation.negative_slope is searched where activation is leaky_relu" in log
    assert "model.depth is not a key of any option of model (convnet, mlp): not searched" in log


def test_a_bad_sweeper_setting_is_an_error_naming_key_value_and_allowed(tmp_path: Path) -> None:
    done = sweep(tmp_path / "sweep", "hydra.sweeper.stages.0.rounds.1.top_k=0", check=False)
    assert done.returncode != 0
    assert "hydra.sweeper.stages.0.rounds.1.top_k=0 is not allowed: an integer >= 1" in done.stderr
    done = sweep(tmp_path / "sweep", "hydra.sweeper.stages.1.params=[model.hiden_dim]", check=False)
    assert "hydra.sweeper.stages.1.params='model.hiden_dim' is not allowed: a parameter of hydra.sweeper.params" in done.stderr


def test_plugin_is_discovered_by_expt(tmp_path: Path) -> None:
    """Without PYTHONPATH: the installed expt must expose the plugin to Hydra's scanner."""
    done = run_cli("--info", "plugins", cwd=tmp_path, env={"PYTHONPATH": None})
    assert done.returncode == 0, done.stderr
    assert "CoarseToFineSweeper" in done.stdout


def test_expt_declares_what_a_sweep_tells_its_trials() -> None:
    """expt's config declares, empty, every variable the sweeper sets for a trial: the sweeper then sets them as
    Hydra settings, which the launchers leave out of their job lines, and empty they read as no sweep."""
    from hydra import compose, initialize_config_module

    import expt.config  # noqa: F401  (registers the schema with Hydra's ConfigStore)
    from expt.pruning import MedianRule
    from expt.sweep_env import SweepTrial

    every = SweepTrial(round=1, job=2, final=True, label="r1-j002 lr=0.1", progress=Path("progress.jsonl"),
                       rule=MedianRule())
    with initialize_config_module(config_module="expt.conf", version_base="1.3"):
        env_set = compose("config", return_hydra_config=True).hydra.job.env_set
    assert sorted(every.variables()) == sorted(env_set)
    assert SweepTrial.read(env_set) == SweepTrial()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_a_sweep_of_expt_prunes_trials_behind_their_round(tmp_path: Path, launcher: list[str]) -> None:
    """Real trials of expt, early stopping on, through the basic and the joblib launcher."""
    out = tmp_path / "sweep"
    done = run_cli(
        "--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={out}",
        "hydra.sweeper.pinpoint.enabled=false", "model=mlp", "regularization.l2=1e-4", "schedule.gamma=0.5",
        "regularization.dropout=0", "hydra.sweeper.pruning.min_trials=2", "data.subset=400",
        "hydra.sweeper.rounds=[{trials:6,top_k:2,overrides:['trainer.epochs=3']}]", *launcher,
        cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    # the launcher's job lines show each trial's overrides, not what the sweeper tells it through env_set
    launched = [line for line in (done.stdout + done.stderr).splitlines() if " : model=mlp " in line]
    assert len(launched) == 6 and not any("env_set" in line for line in launched), launched
    lines = records(out)
    assert sorted(r["job"] for r in lines) == list(range(6))
    for r in lines:
        metrics = json.loads((out / r["run_dir"] / "metrics.json").read_text())
        assert r["status"] == metrics["status"] in ("completed", "pruned")
        assert r["epochs"] == metrics["epochs_completed"] == (3 if r["status"] == "completed" else r["epochs"])
        assert r["tie_value"] == metrics["best_val_loss"] and r["val_samples"] == 288
        assert r["test_acc"] == metrics["test_acc"]
        hydra_cfg = yaml.safe_load((out / r["run_dir"] / ".hydra" / "hydra.yaml").read_text())
        env_set = hydra_cfg["hydra"]["job"]["env_set"]
        assert env_set["EXPT_SWEEP_ROUND"] == "1" and env_set["EXPT_SWEEP_JOB"] == str(r["job"])
        assert env_set["EXPT_SWEEP_LABEL"].startswith(f"r1-j{r['job']:03d} lr=")
    pruned = [r for r in lines if r["status"] == "pruned"]
    assert all(r["epochs"] < 3 for r in pruned)
    if not launcher:  # one after another, the order is known: the slow learners after the first two stop
        assert pruned
    # every epoch of every trial is in the progress file, each line whole
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert sorted((p["job"], p["epoch"]) for p in progress) == sorted(
        (r["job"], e) for r in lines for e in range(1, r["epochs"] + 1) if e < 3)
    info = summary(out)
    assert info["best"]["job"] in {r["job"] for r in lines if r["status"] == "completed"}
    chosen = next(r for r in lines if r["job"] == info["best"]["job"])
    assert f"; its test accuracy {100 * chosen['test_acc']:.2f}%: " in done.stdout + done.stderr  # as a run prints it
    ranks = [line.split() for line in (done.stdout + done.stderr).split("top trials (maximize):")[1].splitlines()[2:8]]
    statuses = [row[6] for row in ranks]
    assert statuses == sorted(statuses)  # "completed" rows all above "pruned" ones
    assert (out / "sweep_optimizer.lr.png").is_file()


@pytest.mark.slow
def test_plugin_is_discovered_from_a_wheel_install(tmp_path: Path) -> None:
    """A regular (non-editable) install: build the wheel, install it into a fresh virtual environment."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("expt-*.whl")
    venv = tmp_path / "venv"
    # expt itself only from the wheel; the dependencies from this interpreter's site-packages, which a
    # .pth file appends to the new environment's path (--system-site-packages would find the base
    # interpreter's packages, not those of a virtual environment the tests run in)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")} | set(site.getsitepackages())
    (venv_site / "dependencies.pth").write_text("\n".join(sorted(p for p in ours if Path(p).is_dir())) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    clean = {"PYTHONPATH": None}  # expt from the wheel alone, as the tests' own subprocesses find it
    where = run_cli("-c", "import expt, hydra_plugins.expt_sweeper as p; print(expt.__file__); print(p.__file__)",
                    program=None, python=python, cwd=tmp_path, env=clean)
    assert where.returncode == 0, where.stderr
    assert all(str(venv) in line for line in where.stdout.splitlines())
    # the package's version is written once, in expt/__init__.py; the wheel's name and metadata carry it
    versions = run_cli("-c", "import expt, importlib.metadata as m; print(expt.__version__, m.version('expt'))",
                       program=None, python=python, cwd=tmp_path, env=clean)
    ours, installed = versions.stdout.split()
    assert ours == installed == wheel.name.split("-")[1]
    done = run_cli("--info", "plugins", python=python, cwd=tmp_path, env=clean)
    assert done.returncode == 0, done.stderr
    assert "CoarseToFineSweeper" in done.stdout
    # the installed conf/ (the package expt.conf) composes and trains, and the sweeper runs a trial of it
    out = tmp_path / "sweep"
    done = run_cli("--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={out}", "model=mlp",
                   "hydra.sweeper.pinpoint.enabled=false", "hydra.sweeper.rounds=[{trials:1}]", "data.subset=100",
                   "trainer.epochs=1", "sanity.before_train=false", python=python, cwd=tmp_path, env=clean)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [r["status"] for r in records(out)] == ["completed"]


def test_int_interval_is_an_integer_parameter_in_either_spelling() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.expt_sweeper.space import param_from_override

    parser = OverridesParser.create()
    for line in ("model.num_filters=tag(log, int(interval(16, 128)))", "model.num_filters=tag(log, int, interval(16, 128))"):
        param = param_from_override(parser.parse_overrides([line])[0], {})
        assert (param.integer, param.log, param.low, param.high) == (True, True, 16.0, 128.0), line
    assert not param_from_override(parser.parse_overrides(["schedule.gamma=interval(0, 1)"])[0], {}).integer


def test_the_sweep_pictures_star_the_trial_the_search_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """285/288 with validation loss 0.30 against 284/288 with 0.05: one sample apart is a tie (tie_samples=1) that
    the lower loss breaks, so the search chooses the second; the summary and every picture's star say the same."""
    from matplotlib.figure import Figure
    from omegaconf import OmegaConf

    from expt.search import COMPLETED, POSITIVE, CoarseToFineSearch, NumericParam, TrialRecord
    from hydra_plugins.expt_sweeper._impl import CoarseToFineSweeperImpl
    from hydra_plugins.expt_sweeper.report import plot

    sweeper = CoarseToFineSweeperImpl(params={}, rounds=[{"trials": 2, "top_k": 1}], tie_break="best_val_loss",
                                      tie_samples=1)
    sweeper.config, sweeper.sweep_dir = OmegaConf.create({"trainer": {"epochs": 3}}), tmp_path
    lr = NumericParam("optimizer.lr", 1e-4, 1e-1, log=True, limits=POSITIVE)
    search = CoarseToFineSearch({"optimizer.lr": lr}, sweeper.settings)
    first, second = search.propose(1)
    search.conclude(1, [TrialRecord(spec.round, spec.job, list(spec.overrides), spec.values, accuracy, COMPLETED, 1.0,
                                    tie_value=loss, val_samples=288)
                        for spec, (accuracy, loss) in ((first, (285 / 288, 0.30)), (second, (284 / 288, 0.05)))])
    assert search.best().job == second.job and search.summary()["best"]["job"] == second.job

    drawn: list = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k))[1])
    plot(search, sweeper.sweep_dir, sweeper.config)
    (scatter, history) = drawn
    for fig, x in ((scatter, second.values["optimizer.lr"]), (history, second.job)):
        (ax,) = fig.axes
        (star,) = [c for c in ax.collections if c.get_label().startswith("best: ")]
        assert star.get_offsets().tolist() == [[x, 284 / 288]]


def test_a_trials_record_is_made_from_what_its_task_returned(tmp_path: Path) -> None:
    """expt's RunResult (a float with the run's metrics, pickled as a launcher sends it back), a mapping, a bare
    number and a raised error each become the trial's record; no metrics.json is read."""
    import math
    import pickle

    from expt.status import RunResult
    from hydra_plugins.expt_sweeper.recording import trial_record

    trial = {"round": 0, "job": 3, "overrides": ["optimizer.lr=0.1"], "values": {"optimizer.lr": 0.1},
             "metric": "history.-1.train_acc", "tie_break": "best_val_loss"}
    metrics = {"status": "pruned", "objective": 0.75, "best_val_loss": 0.4, "val_samples": 288, "test_acc": 0.7,
               "epochs_completed": 2, "seconds": 12.5, "history": [{"train_acc": 0.5}, {"train_acc": 0.9}]}
    result = pickle.loads(pickle.dumps(RunResult(metrics)))
    assert float(result) == 0.75 and result.metrics == metrics and str(result) == "0.75"
    for value in (result, metrics):
        record = trial_record(trial, value, None, "3")
        assert (record.objective, record.status, record.metric, record.tie_value, record.val_samples,
                record.test_acc, record.epochs, record.seconds, record.run_dir) == (
                    0.75, "pruned", 0.9, 0.4, 288, 0.7, 2, 12.5, "3")
    assert trial_record(trial, result, 1.25, "3").seconds == 1.25  # the job's own clock when it timed the trial
    assert (trial_record(trial, 0.5, 1.0, None).objective, trial_record(trial, 0.5, 1.0, None).status) == (0.5, "completed")
    for diverged in (math.nan, None, RunResult({"objective": None}), {"status": "diverged", "objective": 0.0}):
        assert trial_record(trial, diverged, 1.0, None).status == "diverged"
    failed = trial_record(trial, None, 2.0, "3", ValueError("lr too large"))
    assert (failed.status, failed.objective, failed.error, failed.seconds) == ("failed", None, "ValueError: lr too large", 2.0)
