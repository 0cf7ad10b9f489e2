"""Early stopping inside a sweep round (expt.pruning): the median rule, the shared progress file, a pruned run."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

import expt
from expt import checkpoint
from expt.jsonl import read_lines
from expt.pruning import MedianRule, ProgressReport
from expt.sweep_env import JOB, PROGRESS, PRUNE, ROUND, SweepTrial
from expt.status import PRUNED


def test_the_median_rule_waits_for_warmup_and_enough_others_then_stops_only_below_the_median() -> None:
    rule = MedianRule(min_trials=3, warmup_epochs=2)
    others = [0.90, 0.95, 0.97]
    assert not rule.should_stop(1, 0.10, others)  # still warming up
    assert not rule.should_stop(2, 0.10, others[:2])  # too few others to judge
    assert rule.should_stop(2, 0.94, others)
    assert not rule.should_stop(2, 0.95, others)  # at the median is not behind
    assert MedianRule.decode(rule.encode()) == rule


def test_a_report_compares_with_the_other_jobs_of_its_round_at_the_same_epoch(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    rule = MedianRule(min_trials=2, warmup_epochs=1)
    for job, score in [(0, 0.9), (1, 0.8)]:
        assert not ProgressReport(path, 1, job, rule).report(1, score)
    ProgressReport(path, 2, 7, rule).report(1, 0.99)  # another round does not count
    me = ProgressReport(path, 1, 2, rule)
    assert me.scores_at(1) == {0: 0.9, 1: 0.8}
    assert me.report(1, 0.5)
    assert not ProgressReport(path, 1, 3, rule).report(1, 0.95)
    assert SweepTrial.read({}) == SweepTrial() and SweepTrial.read({}).progress_report() is None
    env = {PROGRESS: str(path), ROUND: "1", JOB: "4", PRUNE: "3:2"}
    trial = SweepTrial.read(env)
    report = trial.progress_report()
    assert report is not None and (report.round, report.job, report.rule) == (1, 4, MedianRule(3, 2))
    assert trial.variables() == env and SweepTrial.read(trial.variables()) == trial  # what the sweeper sets


def _append_many(args: tuple[str, int]) -> None:
    path, job = args
    report = ProgressReport(Path(path), 1, job, MedianRule(min_trials=100))
    for epoch in range(1, 151):
        report.report(epoch, epoch / 1000 + job)


def test_parallel_processes_append_to_one_progress_file_without_losing_or_tearing_a_line(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(path), job) for job in range(4)])
    lines = [line for _, line in read_lines(path)]
    assert len(lines) == 600 and len(path.read_text().splitlines()) == 600
    assert sorted((line["job"], line["epoch"]) for line in lines) == [
        (job, epoch) for job in range(4) for epoch in range(1, 151)]


@pytest.mark.parametrize("others, pruned", [(0.99, True), (0.01, False)])
def test_a_run_behind_its_round_stops_as_pruned_and_keeps_what_it_learned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, others: float, pruned: bool) -> None:
    progress = tmp_path / "progress.jsonl"
    for job in range(3):  # three trials of the round already reported epoch 1
        ProgressReport(progress, 1, job, MedianRule()).report(1, others)
    for key, value in {PROGRESS: str(progress), ROUND: "1", JOB: "3", PRUNE: "3:1"}.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    metrics = expt.train(expt.compose(["model=mlp", "trainer.epochs=3", "data.subset=300",
                                       "sanity.before_train=false"]), run_dir=run_dir)
    if not pruned:
        assert metrics["status"] == "completed" and metrics["epochs_completed"] == 3
        return
    assert metrics["status"] == PRUNED and metrics["epochs_completed"] == 1
    assert metrics["objective"] == metrics["best_val_acc"] > 0.1
    assert metrics["best_val_loss"] == metrics["history"][0]["val_loss"]
    assert metrics["val_samples"] == 288
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == PRUNED
    assert (run_dir / "checkpoints" / checkpoint.LAST).exists() and (run_dir / "checkpoints" / checkpoint.BEST).exists()
    mine = [line for _, line in read_lines(progress) if line["job"] == 3]
    assert mine == [{"round": 1, "job": 3, "epoch": 1, "score": metrics["best_val_acc"]}]
