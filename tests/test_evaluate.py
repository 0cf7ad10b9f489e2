"""After training: expt.load rebuilds a run's model as a predictor; python -m expt.evaluate ensembles runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import QUIET, cli_env, command, run_cli

import expt
from expt import evaluate, predict
from expt.data import load as load_data
from expt.errors import ConfigError

QUICK = ["data.subset=300", "trainer.epochs=3", *QUIET]  # nothing here reads the dashboards


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """A multirun's layout: three runs of one config that differ in trainer.seed, plus a diverged one."""
    root = tmp_path_factory.mktemp("multirun")
    for seed in range(3):
        expt.train(expt.compose([*QUICK, f"trainer.seed={seed}"]), run_dir=root / str(seed))
    return root


def test_load_predicts_the_probabilities_the_run_measured(seeds):
    run = seeds / "0"
    metrics = json.loads((run / "metrics.json").read_text())
    predictor = expt.load(run)
    data = load_data(predictor.config.data)  # raw images, as the dataset gives them
    probs = predictor.predict(data.x_test)
    assert probs.shape == (len(data.x_test), 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-6)
    assert float((probs.argmax(1) == data.y_test).double().mean()) == pytest.approx(metrics["test_acc"])
    one = predictor.predict(data.x_test[0].numpy())  # one image, no batch axis, from numpy
    assert torch.allclose(one, probs[:1], atol=1e-6)
    uint8 = predictor.predict((data.x_test[:4].numpy() * 255).round().astype(np.uint8))  # pixels as bytes
    assert uint8.shape == (4, 10)


def test_load_leaves_the_callers_random_state_alone(seeds):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    expt.load(seeds / "1")
    assert torch.equal(torch.rand(3), expected)


def test_load_errors_name_the_path(tmp_path, seeds):
    with pytest.raises(ConfigError, match="is not a trained model"):
        expt.load(tmp_path / "nothing")
    predictor = expt.load(seeds / "0")
    with pytest.raises(ConfigError, match=r"do not fit the model .* trained on images of shape \(1, 8, 8\)"):
        predictor.predict(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ConfigError, match=r"images of shape \(50, 64\) \(read as \(50, 1, 1, 64\)\) do not fit"):
        predictor.predict(np.zeros((50, 64), dtype=np.float32))  # flat vectors: the shape given, then as read


def test_shift_views_move_the_image_by_one_pixel():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    down = predict._shift(x, 1, 0)
    assert torch.equal(down[0, 0, 1:], x[0, 0, :3]) and torch.equal(down[0, 0, 0], x[0, 0, 0])
    assert len(predict.TTA_VIEWS["shift"]) == 5 and len(predict.TTA_VIEWS["shift+flip"]) == 10


def test_an_ensemble_is_chosen_on_validation_and_tested_once(seeds):
    result = evaluate.evaluate_ensembles(seeds, tta=["none", "shift"])
    members = result["members"]
    assert len(members) == 3 and [m["best_val_acc"] for m in members] == sorted(
        [m["best_val_acc"] for m in members], reverse=True)
    best = max(result["candidates"], key=lambda c: c["val_acc"])
    assert result["ensemble"]["val_acc"] == best["val_acc"]  # the choice is the best on validation
    assert {(c["k"], c["tta"]) for c in result["candidates"]} == {(k, t) for k in (1, 2, 3) for t in ("none", "shift")}
    # recompute the chosen ensemble by hand from the predictors
    k, views = result["choice"]["k"], result["choice"]["tta"]
    data = load_data(expt.load(seeds / "0").config.data)
    chosen = [expt.load(seeds / name) for name in result["choice"]["members"]]
    assert len(chosen) == k
    probs = sum(p.predict(data.x_test, tta=views) for p in chosen) / k
    assert float((probs.argmax(1) == data.y_test).double().mean()) == pytest.approx(result["ensemble"]["test_acc"])
    saved = json.loads((seeds / evaluate.EVALUATION_FILE).read_text())
    assert saved["choice"] == result["choice"] and len(saved["test_evaluations"]) >= 1
    assert list((seeds / "evaluation").glob("events.out.tfevents.*"))


def test_the_same_choice_again_is_reported_as_already_evaluated(seeds, tmp_path):
    first = evaluate.evaluate_ensembles(seeds, top=2)
    again = run_cli(str(seeds), "--top", "2", program="expt.evaluate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already evaluated on the test split" in again.stdout
    assert f"{100 * first['ensemble']['test_acc']:.2f}%" in again.stdout
    assert "ens." in again.stdout and "rank" in again.stdout


@pytest.mark.parametrize("args,message", [
    (["--top", "7"], r"--top 7 is not allowed: .* holds 3 finished run\(s\); give a number from 1 to 3"),
    (["--tta", "rotate"], r"--tta rotate is not allowed: one of none, shift, flip, shift\+flip"),
])
def test_bad_evaluation_requests_are_one_paragraph(seeds, tmp_path, args, message):
    done = run_cli(str(seeds), *args, program="expt.evaluate", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    import re
    assert re.search(message, done.stderr), done.stderr


def test_runs_of_other_data_or_no_runs_are_refused(tmp_path, seeds):
    with pytest.raises(ConfigError, match="holds no finished run"):
        evaluate.evaluate_ensembles(tmp_path)
    with pytest.raises(ConfigError, match="--tta flipp is not allowed"):  # said before any checkpoint is read
        evaluate.evaluate_ensembles(tmp_path, tta=["none", "flipp"])
    mixed = tmp_path / "mixed"
    expt.train(expt.compose([*QUICK, "data.split_seed=1", "trainer.epochs=1"]), run_dir=mixed / "a")
    shutil.copytree(seeds / "0", mixed / "b")  # a finished run of the same data as the seeds' runs
    with pytest.raises(ConfigError, match="were trained on different data"):
        evaluate.evaluate_ensembles(mixed)
    # fewer training samples (as a search's pinpoint trials have): the same validation and test splits
    fewer = copy_runs(seeds, tmp_path / "fewer", names=("0",))
    expt.train(expt.compose([*QUICK, "data.subset=200", "trainer.epochs=1"]), run_dir=fewer / "small")
    result = evaluate.evaluate_ensembles(fewer)
    assert sorted(m["run_dir"] for m in result["members"]) == [str(fewer / "0"), str(fewer / "small")]


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("snapshots") / "run"
    expt.train(expt.compose(["data.subset=300", "trainer.epochs=5", "trainer.snapshots=3", *QUIET]), run_dir=run)
    return run


def test_snapshots_keep_the_last_epochs_weights(snapshot_run):
    from expt import checkpoint

    kept = checkpoint.snapshots(snapshot_run / "checkpoints")
    assert list(kept) == [5, 4, 3]  # the last three epochs, newest first; epochs 1 and 2 were pruned
    history = {row["epoch"]: row for row in json.loads((snapshot_run / "metrics.json").read_text())["history"]}
    for epoch, path in kept.items():
        predictor = expt.load(path)
        data = load_data(predictor.config.data)
        acc = float((predictor.predict(data.x_val).argmax(1) == data.y_val).double().mean())
        assert predictor.epoch == epoch and acc == pytest.approx(history[epoch]["val_acc"])


def test_an_ensemble_of_one_runs_snapshots(snapshot_run):
    result = evaluate.evaluate_ensembles(snapshot_run, snapshots=True)
    assert [m["run_dir"] for m in result["members"]] == [
        str(snapshot_run / "checkpoints" / f"epoch_{e:04d}.pt") for e in (5, 4, 3)]
    assert {c["k"] for c in result["candidates"]} == {1, 2, 3}
    k = result["choice"]["k"]
    assert result["choice"]["members"] == [f"checkpoints/epoch_{e:04d}.pt" for e in (5, 4, 3)[:k]]
    assert result["choice"]["ranked_by"] == "epoch, newest first"
    data = load_data(expt.load(snapshot_run).config.data)
    probs = sum(expt.load(snapshot_run / m).predict(data.x_test) for m in result["choice"]["members"]) / k
    assert float((probs.argmax(1) == data.y_test).double().mean()) == pytest.approx(result["ensemble"]["test_acc"])
    table = evaluate.format_table(result).splitlines()  # the epochs' test columns are empty, and the footer says why
    assert all(row.split()[3:5] == ["-", "-"] for row in table[1:4])
    assert "an epoch's weights have none of their own: training tested only its best model" in table[-1]
    with pytest.raises(ConfigError, match=r"--top 4 is not allowed: .* holds 3 epoch snapshot\(s\)"):
        evaluate.evaluate_ensembles(snapshot_run, top=4, snapshots=True)


def test_a_run_started_anew_leaves_nothing_of_the_run_before_it(snapshot_run, tmp_path):
    """The earlier run's snapshots and evaluation would otherwise be ranked as this run's (an MLP's best.pt among
    a ConvNet's snapshots)."""
    run = tmp_path / "run"
    shutil.copytree(snapshot_run, run)
    evaluate.evaluate_ensembles(run, snapshots=True)
    assert (run / "evaluation.json").is_file() and (run / "evaluation").is_dir()
    metrics = expt.train(expt.compose(["model=mlp", "data.subset=300", "trainer.epochs=1", *QUIET]), run_dir=run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not (run / "evaluation.json").exists() and not (run / "evaluation").exists()
    assert json.loads((run / "metrics.json").read_text())["best_val_acc"] == metrics["best_val_acc"]
    events = sorted(p.name for p in run.glob("events.out.tfevents.*"))  # the new run's events and HParams session
    assert len(events) == 2 and sum(name.endswith(".hparams") for name in events) == 1
    with pytest.raises(ConfigError, match=r"kept no epoch snapshots"):
        evaluate.evaluate_ensembles(run, snapshots=True)


def test_an_earlier_runs_snapshots_alone_are_replaced_too(snapshot_run, tmp_path):
    """Its last.pt, best.pt, metrics.json and events deleted, the epoch snapshots still make it a run's directory:
    left there, they would be ensembled as the new run's."""
    run = tmp_path / "run"
    shutil.copytree(snapshot_run, run)
    for path in [run / "metrics.json", run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt",
                 *run.glob("events.out.tfevents.*")]:
        path.unlink()
    assert len(list((run / "checkpoints").glob("epoch_*.pt"))) == 3
    expt.train(expt.compose(["model=mlp", "data.subset=300", "trainer.epochs=1", *QUIET]), run_dir=run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_a_run_in_a_directory_of_the_users_own_leaves_its_files_alone(tmp_path):
    """No earlier run there (no metrics.json, checkpoint or events): nothing is removed, an evaluation/ folder of
    the user's included; where an earlier run was, only python -m expt.evaluate's events leave evaluation/."""
    project = tmp_path / "project"
    (project / "evaluation").mkdir(parents=True)
    (project / "evaluation" / "notes.txt").write_text("mine")
    expt.train(expt.compose(["data.subset=100", "trainer.epochs=1", *QUIET]), run_dir=project)
    assert (project / "evaluation" / "notes.txt").read_text() == "mine"
    (project / "evaluation" / "events.out.tfevents.1.host.2.3").write_bytes(b"")  # as expt.evaluate writes them
    expt.train(expt.compose(["data.subset=100", "trainer.epochs=1", *QUIET]), run_dir=project)
    assert [p.name for p in (project / "evaluation").iterdir()] == ["notes.txt"]


def test_snapshots_are_refused_where_there_are_none_or_several_runs(seeds):
    with pytest.raises(ConfigError, match=r"kept no epoch snapshots .* trainer.snapshots=K"):
        evaluate.evaluate_ensembles(seeds / "0", snapshots=True)
    with pytest.raises(ConfigError, match=r"--snapshots ensembles the epoch snapshots of one run, .* holds 3 finished"):
        evaluate.evaluate_ensembles(seeds, snapshots=True)


# ----------------------------------------------------------------------------- what evaluate must survive
def copy_runs(seeds: Path, to: Path, names=("0", "1")) -> Path:
    """A sweep of copies of the seeds' runs (never write into the shared fixture)."""
    for name in names:
        shutil.copytree(seeds / name, to / name)
    return to


def evaluate_merged(directory: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m expt.evaluate DIR ARGS`` with stderr merged into stdout, so the order of what it says shows."""
    return subprocess.run(command(str(directory), *args, program="expt.evaluate"), cwd=cwd, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def assert_table_then_warnings(done: subprocess.CompletedProcess, sweep: Path, reasons: dict[str, str]) -> None:
    """Exit 0, the table and the result printed, then one warning line per file not written, naming it and why."""
    out = done.stdout
    assert done.returncode == 0 and "Traceback" not in out, out
    assert "rank  val acc" in out and "\nens. " in out and "ensemble test accuracy" in out, out
    warnings = [line for line in out.splitlines() if line.startswith("Warning: could not write")]
    assert len(warnings) == len(reasons), out
    for line, (name, reason) in zip(warnings, reasons.items()):
        assert line.startswith(f"Warning: could not write {sweep / name} (") and reason in line, line
        assert out.index(line) > out.index("ensemble test accuracy")  # the result first, whatever is not saved
    assert "Written to" not in out  # nothing claims a file that is not there


def test_a_read_only_sweep_directory_still_prints_the_evaluation(seeds, tmp_path):
    sweep = copy_runs(seeds, tmp_path / "sweep")
    sweep.chmod(0o555)
    try:
        try:
            (sweep / "probe").write_text("x")
        except OSError:
            pass
        else:  # root: chmod does not stop it writing (the next test blocks the paths instead)
            pytest.skip("chmod 555 does not make a directory read-only for this user (root)")
        done = evaluate_merged(sweep, cwd=tmp_path)
    finally:
        sweep.chmod(0o755)
    assert_table_then_warnings(done, sweep, {evaluate.EVALUATION_FILE: "Permission denied", "evaluation":
                                             "Permission denied"})
    assert not (sweep / evaluate.EVALUATION_FILE).exists()


def test_an_unwritable_destination_still_prints_the_evaluation(seeds, tmp_path):
    """Destinations that cannot be written by anyone, root included: a directory where evaluation.json goes,
    a file where the TensorBoard directory goes."""
    sweep = copy_runs(seeds, tmp_path / "sweep")
    (sweep / evaluate.EVALUATION_FILE / "kept").mkdir(parents=True)
    (sweep / "evaluation").write_text("not a directory")
    done = evaluate_merged(sweep, cwd=tmp_path)
    assert_table_then_warnings(done, sweep, {
        evaluate.EVALUATION_FILE: f"Is a directory: '{sweep / evaluate.EVALUATION_FILE}'",
        "evaluation": "File exists"})
    assert (sweep / evaluate.EVALUATION_FILE / "kept").is_dir()
    assert not list(sweep.glob(".*.tmp"))  # no temporary file left behind
    result = evaluate.evaluate_ensembles(sweep)  # from Python: the result, and what was not written
    assert [item["path"] for item in result["not_written"]] == [str(sweep / evaluate.EVALUATION_FILE),
                                                                 str(sweep / "evaluation")]


def test_a_run_whose_metrics_have_the_wrong_types_is_left_out(seeds, tmp_path):
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1", "2"))
    for name, key, value in (("1", "best_val_acc", "abc"), ("2", "best_val_loss", [0.1])):
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        metrics[key] = value
        (sweep / name / "metrics.json").write_text(json.dumps(metrics))
    done = run_cli(str(sweep), program="expt.evaluate", cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "left out 1: its metrics.json holds best_val_acc='abc', not a number" in done.stdout, done.stdout
    assert "left out 2: its metrics.json holds best_val_loss=[0.1], not a number" in done.stdout, done.stdout
    result = evaluate.evaluate_ensembles(sweep)
    assert [m["run_dir"] for m in result["members"]] == [str(sweep / "0")]



def test_runs_left_out_come_in_job_order_and_a_lone_run_is_named_by_its_path(seeds, tmp_path):
    """Jobs 5, 11 and 24 unfinished: listed 5, 11, 24 (they sorted as text: 11, 24, 5); an interrupted lone run is
    named by its path (it was '.')."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0",))
    for name in ("5", "11", "24"):
        shutil.copytree(seeds / "1", sweep / name)
        (sweep / name / "metrics.json").unlink()
    _, left_out = evaluate.find_runs(sweep)
    assert [run.name for run in left_out] == ["5", "11", "24"]
    lone = sweep / "5"
    (lone / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(ConfigError, match=rf"holds no finished run: .* in each run; {re.escape(str(lone))}: its "
                                          r"status is 'interrupted'"):
        evaluate.evaluate_ensembles(lone)


def test_a_run_whose_weights_no_longer_fit_its_model_is_left_out(seeds, tmp_path):
    """A best.pt whose weights the model's code no longer takes (a layer renamed since): that run is left out
    with the key that differs, and the ensemble of the others goes on; expt.load names the file and the key."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1", "2"))
    best = sweep / "1" / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    layer = next(iter(state["model"]))
    state["model"][f"{layer}_old"] = state["model"].pop(layer)
    torch.save(state, best)
    with pytest.raises(ConfigError, match=rf"best\.pt'.s model does not fit the ConvNet its config builds "
                                          rf"\(Missing key\(s\) in state_dict: \"{re.escape(layer)}\""):
        expt.load(sweep / "1")
    done = run_cli(str(sweep), program="expt.evaluate", cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "left out 1: its checkpoints/best.pt cannot be loaded (" in done.stdout, done.stdout
    assert f'Missing key(s) in state_dict: "{layer}"' in done.stdout, done.stdout
    result = evaluate.evaluate_ensembles(sweep)
    assert sorted(m["run_dir"] for m in result["members"]) == [str(sweep / "0"), str(sweep / "2")]


def test_flip_views_are_refused_on_digits_and_taken_where_a_mirror_keeps_the_class(seeds, tmp_path):
    for views in (["flip"], ["none", "shift+flip"]):
        done = run_cli(str(seeds), "--tta", *views, program="expt.evaluate", cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.strip().splitlines()
        flips = " ".join(v for v in views if "flip" in v)
        assert line.startswith(f"Error: --tta {flips} is not allowed on data=digits: ") and "mirror" in line, line
        assert "Use --tta none or shift" in line and "fashion_mnist or cifar10" in line, line
    run = tmp_path / "synthetic"  # generated images: a mirror changes no class, so flips are a fair choice
    expt.train(expt.compose(["data=synthetic", "data.num_samples=200", "data.shape=[1,8,8]", "trainer.epochs=1",
                             *QUIET]), run_dir=run)
    result = evaluate.evaluate_ensembles(run, tta=["none", "flip"])
    assert {c["tta"] for c in result["candidates"]} == {"none", "flip"}


def test_a_relative_data_path_is_found_from_where_the_run_started(tmp_path):
    project, elsewhere, run = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "run"
    project.mkdir()
    elsewhere.mkdir()
    digits = load_data(expt.compose([]).data)
    np.savez(project / "rel.npz", x_train=digits.x_train[:300, 0].numpy(), y_train=digits.y_train[:300].numpy())
    run_cli("data=npz", "data.path=rel.npz", "trainer.epochs=1", *QUIET, f"hydra.run.dir={run}", cwd=project,
            check=True)
    done = run_cli(str(run), program="expt.evaluate", cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ensemble test accuracy" in done.stdout
    (project / "rel.npz").rename(project / "moved.npz")  # now in neither directory: say which run and where
    done = run_cli(str(run), program="expt.evaluate", cwd=elsewhere)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: data.path='rel.npz' of the run {run} is not a file"), line
    assert f"{elsewhere} (the current directory)" in line and f"{project} (where the run was started" in line, line


def test_runs_trained_before_their_data_file_changed_are_refused(tmp_path):
    """The file rewritten with its samples in another order, under the same config: the runs' training images
    then sat in the validation and test splits, and the ensemble scored 98.9% test where training had measured
    97.2%, without a word."""
    digits = load_data(expt.compose([]).data)
    x, y = digits.x_train[:400, 0].numpy(), digits.y_train[:400].numpy()
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    expt.train(expt.compose(["data=npz", f"data.path={path}", "trainer.epochs=1", *QUIET]), run_dir=tmp_path / "a")
    order = np.random.default_rng(0).permutation(len(y))
    np.savez(path, x_train=x[order], y_train=y[order])
    with pytest.raises(ConfigError, match=r"1 of 1 run\(s\) \(.*a\) trained on other data than data\.path=.*d\.npz' "
                                          r"gives now: their validation and test labels differ"):
        evaluate.evaluate_ensembles(tmp_path / "a")
    np.savez(path, x_train=x, y_train=y)  # restored: the same splits again
    assert evaluate.evaluate_ensembles(tmp_path / "a")["members"][0]["run_dir"] == str(tmp_path / "a")


def test_a_run_training_now_is_left_out(seeds, tmp_path):
    """A run resumed in place was ranked on its earlier metrics.json and scored with a best.pt being rewritten."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1"))
    hold = ("import sys; from pathlib import Path; from expt.files import only_writer\n"
            "with only_writer(Path(sys.argv[1]), RuntimeError):\n    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen(command("-c", hold, str(sweep / "1"), program=None), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        result = evaluate.evaluate_ensembles(sweep)
    finally:
        holder.communicate("", timeout=60)
    assert [m["run_dir"] for m in result["members"]] == [str(sweep / "0")]
    assert result["left_out"] == [{"run_dir": "1", "reason": f"it is training now (process {holder.pid}); "
                                                             "evaluate it once it ends"}]
    assert len(evaluate.evaluate_ensembles(sweep)["members"]) == 2  # once it has ended


def test_the_same_members_holding_other_weights_are_not_called_the_same_evaluation(seeds, tmp_path):
    """A member resumed to more epochs since: its test accuracy moved, and the evaluation said 'the result is the
    same', keeping only the old number."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1"))
    first = evaluate.evaluate_ensembles(sweep, top=2)
    assert evaluate.evaluate_ensembles(sweep, top=2)["repeated"]
    shutil.copy(seeds / "2" / "checkpoints" / "best.pt", sweep / "0" / "checkpoints" / "best.pt")
    again = evaluate.evaluate_ensembles(sweep, top=2)
    assert again["choice"] == first["choice"] and not again["repeated"]
    assert len(again["test_evaluations"]) == 2
    # an evaluation recorded before the digests were is taken as of the weights there are: a repeat
    path = sweep / evaluate.EVALUATION_FILE
    saved = json.loads(path.read_text())
    saved["test_evaluations"] = [{k: v for k, v in e.items() if k != "models"} for e in saved["test_evaluations"]]
    path.write_text(json.dumps(saved))
    assert evaluate.evaluate_ensembles(sweep, top=2)["repeated"]


def test_an_evaluation_file_expt_did_not_write_is_replaced_without_its_entries(seeds, tmp_path):
    """A JSON list there (or entries that are not objects) raised AttributeError after the evaluation was done."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0",))
    path = sweep / evaluate.EVALUATION_FILE
    for foreign in ([1, 2], {"test_evaluations": [3, "x"]}, {"test_evaluations": "none"}):
        path.write_text(json.dumps(foreign))
        result = evaluate.evaluate_ensembles(sweep, top=1)
        assert not result["repeated"] and len(result["test_evaluations"]) == 1
        assert json.loads(path.read_text())["test_evaluations"] == result["test_evaluations"]


def test_two_evaluations_ending_together_keep_both_records(seeds, tmp_path, monkeypatch):
    """Each reads evaluation.json's earlier test evaluations and writes them back with its own: one at a time, so
    neither drops the other's. Here another process holds the directory while this evaluation ends, then adds a
    record of its own."""
    import contextlib
    import threading

    from expt.files import updating

    reached = threading.Event()  # this evaluation is at the lock (the real one, taken just after)

    @contextlib.contextmanager
    def taking_the_lock(directory):
        reached.set()
        with updating(directory):
            yield

    monkeypatch.setattr(evaluate, "updating", taking_the_lock)
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1"))
    other = subprocess.Popen(command("-c", f"""
import json, sys
from pathlib import Path
from expt.files import updating
with updating(Path({str(sweep)!r})):
    print("held", flush=True)
    sys.stdin.readline()
    Path({str(sweep / evaluate.EVALUATION_FILE)!r}).write_text(json.dumps({{"test_evaluations": [{{"by": "other"}}]}}))
""", program=None), env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "held\n"
        results = []
        ours = threading.Thread(target=lambda: results.append(evaluate.evaluate_ensembles(sweep, top=2)))
        ours.start()
        assert reached.wait(600), "the evaluation never reached the lock"
        ours.join(1)  # without the lock its last steps (a file read, two written) would most likely be done by now
        assert ours.is_alive() and not (sweep / evaluate.EVALUATION_FILE).exists()  # it waits for the other
        other.communicate("go\n", timeout=60)
        ours.join()
    finally:
        other.kill()
    assert other.returncode == 0
    (result,) = results
    saved = json.loads((sweep / evaluate.EVALUATION_FILE).read_text())
    assert [e.get("by") for e in saved["test_evaluations"]] == ["other", None]
    assert saved["test_evaluations"][1]["choice"] == result["choice"]


def test_uint8_images_for_a_model_trained_on_float_0_to_255_pixels_are_refused(tmp_path):
    """They are scaled to 0-1: 19.5% accuracy where the same images as float scored 95.5%, without a word."""
    digits = load_data(expt.compose(["data.subset=300"]).data)
    path = tmp_path / "d255.npz"
    np.savez(path, x_train=(digits.x_train[:, 0].numpy() * 255).astype(np.float32), y_train=digits.y_train.numpy())
    expt.train(expt.compose(["data=npz", f"data.path={path}", "trainer.epochs=1", *QUIET]), run_dir=tmp_path / "run")
    predictor = expt.load(tmp_path / "run")
    pixels = (digits.x_test[:5].numpy() * 255).round()
    assert predictor.predict(pixels.astype(np.float32)).shape == (5, 10)
    with pytest.raises(ConfigError, match=r"images are uint8, whose pixels are scaled to 0-1, but the model of .* was "
                                          r"trained on float pixels from 0 to 255, kept as they were: give these "
                                          r"images as float"):
        predictor.predict(pixels.astype(np.uint8))


def test_one_image_with_its_channels_last_is_taken(tmp_path, seeds):
    """As PIL and numpy give it: (8, 8, 1) was read as (8, 1, 8, 1) and refused."""
    predictor = expt.load(seeds / "0")
    image = load_data(predictor.config.data).x_test[0]  # (1, 8, 8)
    expected = predictor.predict(image)
    torch.testing.assert_close(predictor.predict(image.permute(1, 2, 0).numpy()), expected)
    torch.testing.assert_close(predictor.predict((image.permute(1, 2, 0) * 255).round().to(torch.uint8)), expected,
                               atol=0.05, rtol=0)


def test_views_the_model_cannot_take_are_refused_by_predict_and_evaluate(seeds, tmp_path):
    """Mirrors of digits (evaluate refused them, predict took them), and moved pixels after a per-pixel
    preprocessing: a whitened run scored 73.6% without views and 55.9% with shifts."""
    digits = expt.load(seeds / "0")
    with pytest.raises(ConfigError, match=r"tta='flip' is not allowed on data=digits: those views add each image's "
                                          r"mirror"):
        digits.predict(torch.zeros(1, 1, 8, 8), tta="flip")
    run = tmp_path / "mean_image"
    expt.train(expt.compose([*QUICK, "trainer.epochs=1", "preprocessing=mean_image"]), run_dir=run)
    per_pixel = expt.load(run)
    assert per_pixel.predict(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(ConfigError, match=r"tta='shift' is not allowed for the model of .*, trained with "
                                          r"preprocessing=expt.preprocess.MeanImage: it subtracts or rotates per pixel"):
        per_pixel.predict(torch.zeros(1, 1, 8, 8), tta="shift")
    done = run_cli(str(run), "--tta", "none", "shift", program="expt.evaluate", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("Error: --tta shift is not allowed for the model of "), done.stderr
    assert evaluate.evaluate_ensembles(run)["choice"]["tta"] == "none"


def test_a_sanity_runs_overfit_check_is_no_member_of_an_ensemble(seeds, tmp_path):
    """Its overfit run (100 samples, regularization off) was ensembled with the sweep's runs."""
    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0",))
    done = run_cli("mode=sanity", "data.subset=300", "sanity.overfit_epochs=2", *QUIET,
                   f"hydra.run.dir={sweep / 'checks'}", cwd=tmp_path)
    assert (sweep / "checks" / "sanity" / "overfit" / "metrics.json").is_file(), done.stderr
    result = evaluate.evaluate_ensembles(sweep)
    assert [m["run_dir"] for m in result["members"]] == [str(sweep / "0")]
    assert result["left_out"] == [{"run_dir": "checks", "reason": "it is a mode=sanity run (its report is "
                                                                  "sanity.json), which trains no model to use"}]


def test_the_evaluation_in_tensorboard_reads_as_the_command_prints_it(seeds, tmp_path):
    """TensorBoard showed the table in a proportional font (its columns out of line) with each run's absolute path,
    and named the candidates' curves '(none views)'."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugin_util import markdown_to_safe_html

    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1"))
    result = evaluate.evaluate_ensembles(sweep, tta=["none", "shift"])
    table = evaluate.format_table(result)
    assert [line.split()[-1] for line in table.splitlines()[1:3]] == [Path(m["run_dir"]).name
                                                                     for m in result["members"]]
    events = EventAccumulator(str(sweep / "evaluation"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("ensemble/table/text_summary")
    html = markdown_to_safe_html(text.tensor_proto.string_val[0].decode())
    assert html.startswith("<pre><code>rank  val acc") and str(sweep) not in html
    assert {"ensemble/val_acc (no test-time views)", "ensemble/val_acc (test-time views: shift)"} <= set(
        events.Tags()["scalars"])


# Ctrl-C (a real SIGINT) at a point of python -m expt.evaluate: as it imports torch, or at its device check
SIGINT_WHILE_LOADING = ("import builtins, os, signal\n"
                        "load = builtins.__import__\n"
                        "def interrupted(name, globals=None, *args, **kwargs):\n"
                        "    if name == 'torch' and (globals or {}).get('__name__') == '__main__':\n"
                        "        os.kill(os.getpid(), signal.SIGINT)\n"
                        "    return load(name, globals, *args, **kwargs)\n"
                        "builtins.__import__ = interrupted\n")
SIGINT_AT_DEVICE_CHECK = ("import os, signal; import expt.devices as devices\n"
                          "devices.choose_device = lambda *a, **k: os.kill(os.getpid(), signal.SIGINT)\n")


@pytest.mark.parametrize("stop", [SIGINT_WHILE_LOADING, SIGINT_AT_DEVICE_CHECK], ids=["loading", "device check"])
def test_ctrl_c_during_an_evaluation_says_interrupted_and_exits_130(tmp_path: Path, stop: str) -> None:
    """A real SIGINT, sent while ``python -m expt.evaluate`` loads its libraries (most of a small evaluation's time)
    or once it has parsed its arguments: one line, exit 130, no traceback, and nothing written in the directory."""
    from conftest import finish, start_cli

    evaluate = (stop + "import runpy, sys; sys.argv = ['expt.evaluate', sys.argv[1]]\n"
                "runpy.run_module('expt.evaluate', run_name='__main__', alter_sys=True)")
    proc = start_cli("-c", evaluate, str(tmp_path), program=None, cwd=tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)
    output = finish(proc, timeout=120)
    assert proc.returncode == 130 and output.strip() == "Interrupted.", output[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_a_long_evaluation_says_how_far_it_has_gone_and_counts_every_image(seeds, tmp_path, monkeypatch, capsys):
    """Scoring every run on large splits in each view set takes minutes on a CPU: without a terminal (a log file)
    the command writes a line a minute. With a line after every view, each phase's counts add up to the total it
    announced: each run on validation in every view of ``shift`` (five) and once without views for its own row,
    then the k chosen runs in the chosen views on test."""
    from expt import progress

    sweep = copy_runs(seeds, tmp_path / "sweep", names=("0", "1", "2"))
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # every view is "a minute later"
    assert evaluate.main([str(sweep), "--tta", "shift"]) == 0
    said = capsys.readouterr().err.splitlines()
    data = load_data(expt.load(sweep / "0").config.data)
    choice = json.loads((sweep / evaluate.EVALUATION_FILE).read_text())["choice"]
    views = len(predict.TTA_VIEWS[choice["tta"]])
    phases = [("evaluating on validation: ", 3 * (5 + 1), len(data.y_val)),
              ("testing the choice: ", choice["k"] * views, len(data.y_test))]
    assert [line.split(": ")[0] for line in said if " of " in line] == [
        what[:-2] for what, passes, _ in phases for _ in range(passes)], said  # validation first, then test
    for what, passes, images in phases:
        lines = [line for line in said if line.startswith(what)]
        counts = [[int(n.replace(",", "")) for n in re.findall(r"[\d,]+(?= of | images \()", line)] for line in lines]
        assert [c[0] for c in counts] == [images * (i + 1) for i in range(passes)], lines
        assert {c[1] for c in counts} == {images * passes}, lines
        assert all(line.endswith(" images/s") for line in lines), lines


@pytest.mark.parametrize("after", [0.0, 3600.0], ids=["bar", "too short for a bar"])
def test_at_a_terminal_an_evaluation_draws_a_bar_and_leaves_no_line_in_the_output(seeds, tmp_path, monkeypatch,
                                                                                  after):
    """A bar once a phase has run ``PROGRESS_AFTER`` seconds (0: from the first image on), taken off at its end;
    an evaluation shorter than that draws nothing at all (no bar left on the screen before the table)."""
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    sweep = copy_runs(seeds, tmp_path / "sweep")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    monkeypatch.setattr(evaluate, "PROGRESS_AFTER", after)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # tqdm draws on every update, on any machine
    monkeypatch.setenv("TQDM_MINITERS", "1")
    with open(follower, "w", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        evaluate.evaluate_ensembles(sweep, tta=["none"], progress=True)
        terminal.flush()
        os.set_blocking(leader, False)
        try:  # before the terminal closes
            screen = os.read(leader, 1 << 20).decode(errors="replace")
        except BlockingIOError:  # nothing was written
            screen = ""
    os.close(leader)
    if after:
        assert screen == "", screen
    else:
        assert "evaluating on validation:" in screen and "testing the choice:" in screen and "img/s" in screen, screen
        assert "images (each" not in screen  # the bar, not the lines a log file gets
