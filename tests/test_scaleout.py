"""Beyond one process: the same sweeps through submitit (local executor), several GPUs, Ray.

submitit's local executor runs every trial as its own process from the pickled task, as on a
SLURM cluster, so these tests exercise what a cluster run depends on: the task survives pickling,
trials write ``search.jsonl`` side by side, a killed sweep resumes, a requeued trial continues
from its checkpoint. The device choice is a plain function, tested here on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import numbers, pause_env, read_metrics, run_cli, start_cli, wait_for_pause
from test_resume import PAUSED as RESUMABLE
from test_sweeper import APP, TINY, TINY_NOTED, records, summary, sweep

import expt
from expt.devices import allowed, choose_device, physical_gpu, runs_side_by_side
from expt.search import TrialRecord, append_record, read_records

ROOT = Path(__file__).resolve().parents[1]
has_submitit = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="needs hydra-submitit-launcher (pip install -e '.[slurm]')")
LOCAL = ["hydra/launcher=submitit_local"]
# test_resume's run (dropout, so the random streams matter; a step schedule), held at a step when asked
SHORTER = [*RESUMABLE, "dashboard.histograms=false", "dashboard.filters=false", "dashboard.graph=false"]
# a tiny expt run: the synthetic data, an MLP, one epoch
SMALL = ["model=mlp", "data=synthetic", "data.num_samples=600", "trainer.epochs=1", "trainer.batch_size=128",
         "sanity.before_train=false"]


# ---------------------------------------------------------------------------------------------
# the device a trial trains on


def test_auto_spreads_a_parallel_sweeps_trials_over_the_gpus_by_job_number() -> None:
    assert [choose_device("auto", 2, job, parallel=True) for job in range(5)] == [
        "cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert [choose_device("auto", 4, job, parallel=True) for job in range(8, 13)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]


def test_auto_keeps_the_first_gpu_or_the_cpu_everywhere_else() -> None:
    assert choose_device("auto", 0, 3, parallel=True) == "cpu"
    assert choose_device("auto", 1, 3, parallel=True) == "cuda"       # one GPU: every trial on it
    assert choose_device("auto", 4, 3, parallel=False) == "cuda"      # the basic launcher: one trial at a time
    assert choose_device("auto", 4, None, parallel=False) == "cuda"   # a single run
    assert choose_device("auto", 4, None, parallel=True) == "cuda"


def test_an_explicit_device_is_kept_whatever_the_job() -> None:
    for job in (None, 0, 1, 7):
        assert choose_device("cpu", 4, job, parallel=True) == "cpu"
        assert choose_device("cuda", 4, job, parallel=True) == "cuda"
        assert choose_device("cuda:2", 4, job, parallel=True) == "cuda:2"


@pytest.mark.parametrize("name, count, message", [
    ("cuda:2", 2, "trainer.device='cuda:2' is not available: this process sees 2 CUDA device(s); "
                  "use auto, cpu, cuda or cuda:0 to cuda:1."),
    ("cuda:1", 1, "use auto, cpu, cuda or cuda:0."),
    ("cuda", 0, "trainer.device='cuda' is not available: this machine has no CUDA device "
                "(use trainer.device=auto or cpu)."),
    ("cuda:x", 2, "trainer.device='cuda:x' is not allowed: use auto, cpu, cuda or cuda:0 to cuda:1."),
    ("gpu", 0, "trainer.device='gpu' is not allowed: use auto or cpu (this machine has no CUDA device)."),
])
def test_a_device_this_machine_lacks_is_an_error_naming_key_and_allowed_values(name, count, message) -> None:
    with pytest.raises(expt.ConfigError) as error:
        choose_device(name, count, 0, parallel=True)
    assert message in str(error.value)


def test_the_physical_gpu_behind_a_visible_index() -> None:
    assert physical_gpu(1, {"CUDA_VISIBLE_DEVICES": "2,3"}) == "3"
    assert physical_gpu(0, {"CUDA_VISIBLE_DEVICES": "GPU-8a1f,GPU-77c2"}) == "GPU-8a1f"
    assert physical_gpu(1, {}) == "1" and physical_gpu(1, {"CUDA_VISIBLE_DEVICES": ""}) == "1"
    assert allowed(3) == "auto, cpu, cuda or cuda:0 to cuda:2"


def test_which_launchers_run_a_batchs_jobs_side_by_side() -> None:
    for target in ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                   "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                   "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                   "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"):
        assert runs_side_by_side(target)
    # one process for the whole batch: one job after the other, or a population trained as one program
    for target in ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                   "hydra_plugins.expt_population.population_launcher.PopulationLauncher", ""):
        assert not runs_side_by_side(target)


DEVICE_APP = '''
import json, sys
import hydra
from expt.devices import choose_device, hydra_job

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    job, parallel = hydra_job()
    with open(cfg.out, "a") as handle:
        handle.write(json.dumps({"job": job, "parallel": parallel, "device": choose_device("auto", 2, job, parallel)}) + "\\n")

main()
'''


def test_hydra_jobs_report_their_number_and_whether_the_launcher_is_parallel(tmp_path: Path) -> None:
    """Real Hydra runs: a single run, a multirun with the basic launcher and one with joblib (2 GPUs assumed)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    app = tmp_path / "app.py"
    app.write_text(DEVICE_APP)
    seen = {}
    for name, args in {"run": [], "basic": ["-m", "+x=1,2,3"],
                       "joblib": ["-m", "+x=1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}.items():
        out = tmp_path / f"{name}.jsonl"
        flags, overrides = [a for a in args if a == "-m"], [a for a in args if a != "-m"]
        done = run_cli(*flags, f"+out={out}", f"hydra.sweep.dir={tmp_path / name}", f"hydra.run.dir={tmp_path / name}",
                       *overrides, program=app, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        seen[name] = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["job"] or 0)
    assert seen["run"] == [{"job": None, "parallel": False, "device": "cuda"}]
    assert seen["basic"] == [{"job": j, "parallel": False, "device": "cuda"} for j in range(3)]
    assert seen["joblib"] == [{"job": j, "parallel": True, "device": f"cuda:{j % 2}"} for j in range(3)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_parallel_sweep_on_this_machines_gpus(tmp_path: Path) -> None:
    """Two joblib trials at once: each on its GPU (job number mod device count), or both on the one GPU."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "sweep"
    done = run_cli("-m", f"hydra.sweep.dir={out}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL,
                   "optimizer.lr=1e-3,1e-2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    count = torch.cuda.device_count()
    for job in (0, 1):
        assert read_metrics(out / str(job))["status"] == "completed"
        log = (out / str(job) / "expt.log").read_text()
        expected = f"cuda:{job % count}" if count > 1 else "cuda"
        assert f"MLP on {expected}:" in log


# ---------------------------------------------------------------------------------------------
# submitit: every trial its own process, from the pickled task


def submitit_controllers(sweep_dir: Path) -> list[int]:
    """The local executor's job ids are the process ids of the controllers that run the jobs."""
    folder = sweep_dir / ".submitit"
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float = 600.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; the timeout only guards against a hung process."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@has_submitit
@pytest.mark.slow
def test_a_coarse_to_fine_sweep_through_submitit_records_every_trial_even_failed_ones(tmp_path: Path) -> None:
    """Round 1's five trials run at once as separate processes and append to search.jsonl side by side."""
    out = tmp_path / "sweep"
    sweep(out, *LOCAL, "hydra.sweeper.rounds=[{trials:5,top_k:2},{trials:1}]", "hydra.sweeper.seed=4",
          "toy.raise_above_lr=1e-2", "toy.diverge_above_lr=1e-3")
    lines = (out / "search.jsonl").read_text().splitlines()
    assert len(lines) >= 6 and all(json.loads(line) for line in lines)  # whole lines, none interleaved
    by_job = {r["job"]: r for r in records(out)}
    assert sorted(by_job) == list(range(len(lines)))
    statuses = {r["status"] for r in by_job.values()}
    assert statuses == {"completed", "failed", "diverged"}
    for r in by_job.values():
        lr = r["values"]["optimizer.lr"]
        expected = "failed" if lr > 1e-2 else "diverged" if lr > 1e-3 else "completed"
        assert r["status"] == expected, r
        if expected == "failed":
            assert "ValueError" in r["error"]
    assert len(set(submitit_controllers(out))) == len(lines)  # one job, one process each
    assert summary(out)["best"]["job"] in {j for j, r in by_job.items() if r["status"] == "completed"}


@has_submitit
@pytest.mark.slow
def test_a_plain_multirun_through_submitit(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    done = run_cli("-m", *LOCAL, f"hydra.sweep.dir={plain}", "optimizer.lr=1e-3,3e-3", program=APP, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    objectives = [read_metrics(plain / str(job))["objective"] for job in (0, 1)]
    assert objectives[1] == pytest.approx(0.98) and objectives[0] < objectives[1]  # the toy peaks at lr 3e-3
    assert len(submitit_controllers(plain)) == 2


# hydra-optuna-sweeper expects Hydra to build its sampler when it builds the sweeper; a Hydra that
# does not hands it the sampler's config, and Optuna fails on its first trial with this
OPTUNA_INCOMPATIBLE = "'infer_relative_search_space' not in 'SamplerConfig'"


@has_submitit
@pytest.mark.slow
def test_the_optuna_sweeper_through_submitit(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    tuned = tmp_path / "optuna"
    done = run_cli("-m", *LOCAL, f"hydra.sweep.dir={tuned}", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.n_jobs=2", "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0",
                   "optimizer.lr=tag(log, interval(1e-5, 1e-1))", program=APP, cwd=tmp_path)
    if done.returncode != 0 and OPTUNA_INCOMPATIBLE in done.stderr:
        from importlib.metadata import version

        pytest.skip(f"hydra-optuna-sweeper {version('hydra-optuna-sweeper')} does not run under hydra-core "
                    f"{version('hydra-core')} (its sampler is left unbuilt), with any launcher")
    assert done.returncode == 0, done.stderr
    results = yaml.safe_load((tuned / "optimization_results.yaml").read_text())
    runs = [read_metrics(tuned / str(job))["objective"] for job in range(2)]
    assert results["best_value"] == pytest.approx(max(runs))
    assert len(submitit_controllers(tuned)) == 2


@has_submitit
@pytest.mark.slow
def test_a_sweep_killed_mid_round_reruns_only_the_trials_that_never_finished(tmp_path: Path,
                                                                           tiny_sweep: Path) -> None:
    """SIGKILL the sweep once two trials are recorded; the jobs it had started finish on their own; the
    re-run runs each missing trial once and ends with the records of a sweep that was never stopped."""
    straight = tiny_sweep
    jobs = sorted(r["job"] for r in records(straight))
    out, calls, release = tmp_path / "sweep", tmp_path / "calls.txt", tmp_path / "release"
    # two trials at a time; from job 2 on (round 1's second batch) each holds until the test releases it
    args = [*TINY_NOTED, *LOCAL, f"toy.calls_file={calls}", "hydra.sweeper.max_batch_size=2", "toy.hold_from_job=2",
            f"toy.release_file={release}"]
    proc = start_cli("--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={out}", *args, program=APP,
                     cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(read_records(out / "search.jsonl")) >= 2 or proc.poll() is not None, what="2 records")
        assert proc.poll() is None, "the sweep ended before its held trials were released"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        release.touch()  # the held jobs the sweep had started go on, as a cluster's would
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: not any(alive(pid) for pid in submitit_controllers(out)), what="the orphaned jobs")
    before = read_records(out / "search.jsonl")
    assert 2 <= len(before) < len(jobs)
    first = [int(x) for x in calls.read_text().split()]

    calls.write_text("")
    sweep(out, *args)
    again = [int(x) for x in calls.read_text().split()]
    assert sorted(first + again) == jobs  # every trial ran once: none again, none lost
    assert set(again) == set(jobs) - {r.job for r in before.values()}
    assert sorted(json.loads(line)["job"] for line in (out / "search.jsonl").read_text().splitlines()) == jobs
    a = {r.job: (r.round, r.objective, r.status, r.values) for r in read_records(straight / "search.jsonl").values()}
    b = {r.job: (r.round, r.objective, r.status, r.values) for r in read_records(out / "search.jsonl").values()}
    assert a == b


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_record(Path(path), TrialRecord(round=1, job=worker * 1000 + i, overrides=[f"+w={worker}", f"+i={i}"],
                                              values={"x": float(i)}, objective=0.5, status="completed",
                                              seconds=0.0))


def test_search_jsonl_takes_concurrent_appends_from_many_processes(tmp_path: Path) -> None:
    path = tmp_path / "search.jsonl"
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    workers = [ctx.Process(target=_append_many, args=(str(path), w, 100)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["status"] == "completed" for line in lines)
    assert sorted(r.job for r in read_records(path).values()) == sorted(w * 1000 + i for w in range(4)
                                                                       for i in range(100))


@has_submitit
@pytest.mark.slow
def test_a_preempted_expt_job_is_requeued_and_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    """The signal SLURM sends before preempting a job, sent to the job's process: submitit requeues it, and the
    run, told to by EXPT_RESUME_OWN_CHECKPOINT (as the slurm_gpu preset does), continues from its last.pt and
    ends with the numbers of a run that was never stopped."""
    from expt import checkpoint

    out, marker = tmp_path / "sweep", tmp_path / "paused"
    proc = start_cli("--multirun", *LOCAL, f"hydra.sweep.dir={out}", *SHORTER,
                     "+hydra.job.env_set.EXPT_RESUME_OWN_CHECKPOINT=1", cwd=tmp_path,
                     env=pause_env(SHORTER, 3, marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = out / "0" / "checkpoints" / checkpoint.LAST
    try:
        wait_for_pause(marker, proc, "the sweep")  # the trial holds at epoch 3's first step, epoch 2 saved
        (controller,) = submitit_controllers(out)
        task = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(int(p.name)) == controller]
        assert len(task) == 1
        os.kill(task[0], signal.SIGUSR2)  # submitit's preemption signal
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    log = (out / "0" / "expt.log").read_text()
    assert f"resuming from {last}" in log
    reached = int(re.search(r"Resumed from .* after epoch (\d+)", log).group(1))
    assert reached == 2
    assert any("Requeued job" in p.read_text() for p in (out / ".submitit").rglob("*_log.*"))
    resumed = read_metrics(out / "0")
    assert resumed["status"] == "completed"
    straight = expt.train(expt.compose(SHORTER), run_dir=tmp_path / "straight")
    for row_a, row_b in zip(numbers(straight), numbers(resumed), strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-6, abs=1e-9)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_the_slurm_gpu_preset_composes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    done = run_cli("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hydra_cfg = yaml.safe_load(done.stdout)["hydra"]
    launcher = hydra_cfg["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (1, 1, 1)
    assert launcher["timeout_min"] == 240 and launcher["max_num_timeout"] == 10 and launcher["partition"] == "gpu"
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert hydra_cfg["sweep"]["dir"].startswith("${oc.env:EXPT_SWEEP_ROOT,multirun}/")
    assert hydra_cfg["job"]["env_set"]["EXPT_RESUME_OWN_CHECKPOINT"] == "1"
    assert launcher["name"] == "${hydra.job.name}" and hydra_cfg["job"]["name"] == "expt"  # the name squeue shows


# ---------------------------------------------------------------------------------------------
# Ray: Hydra's Ray launcher, and expt trials under Ray Tune (examples/ray_tune.py)


@pytest.mark.slow
def test_expts_coarse_to_fine_sweep_on_a_local_ray_cluster(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    out = tmp_path / "sweep"
    done = run_cli("--multirun", "hydra/sweeper=coarse_to_fine", "hydra/launcher=ray_local", f"hydra.sweep.dir={out}",
                   *TINY, *SMALL, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = records(out)
    assert len(lines) >= 4 and sorted(r["job"] for r in lines) == list(range(len(lines)))
    for r in lines:
        metrics = read_metrics(out / r["run_dir"])
        assert r["status"] == metrics["status"] and r["objective"] == metrics["objective"]
    assert "completed" in {r["status"] for r in lines}
    assert summary(out)["best"]["objective"] == max(r["objective"] or 0.0 for r in lines) > 0


def _ray_tune_example():
    spec = importlib.util.spec_from_file_location("ray_tune_example", ROOT / "examples" / "ray_tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ray_tune_examples_trial_runs_expt_and_resumes_in_its_directory(tmp_path: Path, caplog) -> None:
    """The trial function alone (no Ray needed): what python -m expt runs, and a second start resumes."""
    example = _ray_tune_example()
    params = {"optimizer.lr": 3e-3, "regularization.l2": 1e-4}
    assert example.overrides_for(params, ["model=mlp"]) == ["model=mlp", "optimizer.lr=0.003",
                                                           "regularization.l2=0.0001"]
    first = example.run_trial(params, SMALL, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert first["objective"] == metrics["objective"] > 0 and first["status"] == "completed"
    caplog.set_level("INFO", logger="expt")
    again = example.run_trial(params, SMALL, tmp_path / "run")  # as a retried trial would: from last.pt
    assert again["objective"] == first["objective"]
    assert numbers(read_metrics(tmp_path / "run")) == numbers(metrics)
    assert "Resumed from" in caplog.text and "after epoch 1" in caplog.text


@pytest.mark.slow
def test_the_ray_tune_example_on_a_local_ray_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune")
    done = run_cli("--samples", "2", "--storage", str(tmp_path / "tune"), "--", *SMALL,
                   program=ROOT / "examples" / "ray_tune.py", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["trials"]) == 2 and all(0 < t <= 1 for t in result["trials"])
    best = result["best"]
    assert best["objective"] == max(result["trials"])
    metrics = read_metrics(Path(best["run_dir"]))
    assert metrics["objective"] == best["objective"] and metrics["status"] == "completed"
