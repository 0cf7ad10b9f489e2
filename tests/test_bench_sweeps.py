"""bench/sweeps.py runs end to end and writes well-formed tables (its numbers are never judged here).

Apart from tests/test_bench.py because these two are the suite's longest: in a file of their own, the
suite's two workers (pytest-xdist, one file each at a time) run them beside the other benchmarks.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import run_cli

from test_bench import BENCH, measured, median, median_of, percent, positive, run_bench, table

pytestmark = pytest.mark.slow


def test_sweeps_times_two_launchers_and_compares_searches(tmp_path):
    text = run_bench("sweeps.py", "--trials=3", "--seeds=1", "--tiny", results=tmp_path / "R.md")
    launchers = table(text, "sweep-throughput")
    assert [r[0] for r in launchers] == ["basic", "joblib, 2 workers"]
    for _, seconds, per_minute in launchers:  # measured, never judged: a loaded machine is slower
        measured(seconds), positive(per_minute)
    methods = {r[0]: r for r in table(text, "search-quality")}
    assert set(methods) == {"staged preset", "staged preset, no early stopping",
                            "staged preset, exact ties only (tie_samples=0)",
                            "previous preset (lr, l2; 20x1 + 10x3 + 4x10)", "random search (2 x 1 epochs)",
                            "Optuna TPE (2 x 1 epochs)", "no search: the default config (trainer.seed)"}
    for name, row in methods.items():
        if "not run" in row[1]:  # Optuna without hydra-optuna-sweeper
            assert name.startswith("Optuna")
            continue
        _, acc, loss, test, epochs, trials, seconds, seeds = row
        assert 0.05 < percent(acc) <= 100 and 0.05 < percent(test) <= 100 and seeds == "1"
        assert 0 < median(loss) < 10 and median(epochs) > 0 and median(trials) >= 1
        measured(median_of(seconds))
    assert median(methods["no search: the default config (trainer.seed)"][5]) == 1


def test_sweeps_measures_the_seconds_a_trial_costs_beyond_its_epoch(tmp_path):
    text = run_bench("sweeps.py", "--overhead", "--repeats=1", "--rounds", "2", "4", "--only", "last-round",
                     "--only", "population", results=tmp_path / "R.md")
    rows = table(text, "trial-overhead")  # the kinds of trial --only names, in the table's order
    assert [r[:2] for r in rows] == [["this version", "a last-round trial (every diagnostic)"],
                                     ["this version", "an earlier round's trial, hydra/launcher=population"]]
    for _, name, per_trial, epoch, overhead, per_minute in rows:  # measured, never judged
        # differences of wall times (and, for the population, of two epochs): a loaded machine may even
        # make them negative
        assert all(math.isfinite(float(cell)) for cell in (per_trial, epoch, overhead, per_minute)), name
        if "population" not in name:
            measured(epoch)


@pytest.mark.parametrize("args, said", [
    (["--only", "populaton"], "--only 'populaton' is in no kind of trial's name: a last-round trial"),
    (["--device", "cuda:0"], "--device cuda:0: no CUDA device here"),
])
def test_sweeps_refuses_an_overhead_it_cannot_measure_before_any_sweep(tmp_path, args, said):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    done = run_cli("--overhead", *args, f"--results={tmp_path / 'R.md'}", program=BENCH / "sweeps.py", cwd=tmp_path)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (tmp_path / "R.md").exists()


@pytest.mark.parametrize("few, many", [("10", "2"), ("4", "4"), ("1", "10")])
def test_sweeps_refuses_rounds_whose_difference_measures_nothing(tmp_path, few, many):
    done = run_cli("--overhead", "--rounds", few, many, f"--results={tmp_path / 'R.md'}",
                   program=BENCH / "sweeps.py", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"--rounds {few} {many}: FEW must be at least 2 and less than MANY" in done.stderr
    assert not (tmp_path / "R.md").exists()
