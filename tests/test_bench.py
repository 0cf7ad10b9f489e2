"""The benchmarks in bench/ run end to end and write well-formed tables (their numbers are never judged here).

Each script runs as a user would run it, at its smallest settings, and writes into a temporary
results file instead of bench/RESULTS.md. The tests read the tables back and check that every
row holds the measurements it promises: times that are numbers, finite ratios, every case present. No
assertion depends on how fast the machine is: a time is never compared with a limit, and one printed
rounded may read 0.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli

BENCH = ROOT / "bench"
pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, results: Path) -> str:
    run_cli(*args, f"--results={results}", program=BENCH / script, cwd=results.parent, timeout=600, check=True)
    return results.read_text()


def table(text: str, key: str) -> list[list[str]]:
    """The first Markdown table of section ``key``: its rows (header and rule left out) as lists of cells."""
    section = text.split(f"<!-- {key} -->", 1)[1].split(f"<!-- /{key} -->", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]


def positive(cell: str) -> float:
    value = float(cell)
    assert math.isfinite(value) and value > 0, cell
    return value


def measured(cell: str) -> float:
    """A measured time as printed: a finite number, never negative (rounded, a short one may print as 0)."""
    value = float(cell)
    assert math.isfinite(value) and value >= 0, cell
    return value


def test_overhead_writes_paired_ratios_for_each_variant(tmp_path):
    text = run_bench("overhead.py", "--quick", "--only", "convnet / digits", results=tmp_path / "R.md")
    rows = table(text, "overhead-cpu")
    assert [r[1] for r in rows] == ["defaults", "diagnostics off", "diagnostics off, checkpoint every epoch"]
    for case, _, runs, bare, ours, ratio, middle, extra, run_ratio, deviation, rss, gpu in rows:
        assert case == "convnet / digits" and runs == "2 x 3 epochs" and gpu == "-"
        assert float(deviation) == 0  # on the CPU both sides compute the same validation losses, bit for bit
        measured(bare), measured(ours), positive(run_ratio)  # times: measured, never judged
        low, high = (positive(v) for v in middle.split(" - "))
        assert low <= positive(ratio) <= high  # the median of the paired ratios lies in their middle half
        assert math.isfinite(float(extra))
        assert positive(rss) > 50
    diagnostics = text.split("| case | histograms", 1)[1].splitlines()[2]
    assert diagnostics.startswith("| convnet / digits |")
    costs = [float(v) for v in diagnostics.strip("|").split("|")[1:]]
    assert len(costs) == 5 and all(math.isfinite(c) for c in costs)  # each diagnostic was on, and timed


def test_overhead_names_a_case_that_fails_and_goes_on_with_the_others(tmp_path):
    """A case that cannot run (here every one: CUDA on a machine without it) is a line of the section, not the end
    of the benchmark before anything is written; the exit status says so."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the cases would run")
    results = tmp_path / "R.md"
    done = run_cli("--quick", "--only", "convnet / digits", "--device", "cuda", f"--results={results}",
                   program=BENCH / "overhead.py", cwd=tmp_path, timeout=600)
    assert done.returncode == 1 and done.stdout.count("FAILED: ") == 3, done.stdout + done.stderr
    text = results.read_text()
    assert text.split("<!-- overhead-cuda -->", 1)[1].count("\n- failed: convnet / digits, ") == 3
    assert "so-far" not in text  # the rows while it ran were replaced by the complete section


def test_rows_written_while_a_benchmark_runs_sit_beside_the_last_complete_section(tmp_path):
    """A benchmark a time limit stops keeps the rows it measured, and loses nothing measured before it."""
    sys.path.insert(0, str(BENCH))
    from common import write_results

    results = tmp_path / "R.md"
    write_results("case", "A case", "| old | 1 |", "here", results)
    first = results.read_text()
    write_results("case", "A case", "| new | 1 |", "here", results, so_far=True)
    text = results.read_text()
    assert "| old | 1 |" in text and "<!-- case-so-far -->\n## A case: so far (the run is going on" in text
    write_results("case", "A case", "| new | 1 |\n| new | 2 |", "here", results, so_far=True)
    assert results.read_text().count("<!-- case-so-far -->") == 1 and "| new | 2 |" in results.read_text()
    write_results("case", "A case", "| new | 1 |\n| new | 2 |\n| new | 3 |", "here", results)
    assert results.read_text() == first.replace("| old | 1 |", "| new | 1 |\n| new | 2 |\n| new | 3 |")  # as if alone




def test_throughput_compares_expt_with_the_bare_loop(tmp_path):
    text = run_bench("throughput.py", "--device=cpu", "--quick", results=tmp_path / "R.md")
    rows = table(text, "throughput-cpu")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (m, "64", mode) for m in ("convnet", "deep_convnet") for mode in ("eager", "amp bf16")
    ]
    for _, _, _, bare, ours, ratio, compiled in rows:
        # images per second printed to the image, their ratio to 0.001: the ratio of the printed rates, within
        # what the rounding of all three allows, whatever the rates are
        bare, ours = positive(bare), positive(ours)
        assert (ours - 0.5) / (bare + 0.5) - 0.0005 <= positive(ratio) <= (ours + 0.5) / (bare - 0.5) + 0.0005
        assert compiled == "-"


def test_startup_times_each_phase(tmp_path):
    text = run_bench("startup.py", "--reps=1", results=tmp_path / "R.md")
    rows = table(text, "startup")
    assert [r[0] for r in rows] == ["import torch", "import expt + hydra", "compose config", "load + split data",
                                    "build (preprocess, model, init, optimizer)", "TensorBoard writer"]
    for _, seconds in rows:
        measured(seconds)  # measured, never judged
    assert "median" in text.split("<!-- startup -->", 1)[1].split("|", 1)[0]


def median_of(cell: str) -> str:
    """The median of a 'median (min-max)' cell, as printed."""
    return cell.split(" (")[0].rstrip("%")


def median(cell: str) -> float:
    """The median of a 'median (min-max)' cell."""
    return float(median_of(cell))


def percent(cell: str) -> float:
    assert cell.split(" (")[0].endswith("%"), cell
    return median(cell)


def test_augment_times_each_augmentation_against_the_step(tmp_path):
    text = run_bench("augment.py", "--quick", results=tmp_path / "R.md")
    rows = table(text, "augment-cpu")
    assert [(r[0], r[1]) for r in rows] == [(p, a) for p in ("float32", "bf16")
                                            for a in ("translate (pad 4)", "hflip", "cutout (8x8)")]
    for _, _, aug_ms, step_ms, share in rows:
        measured(aug_ms), measured(step_ms)
        assert share.endswith("%") and float(share[:-1]) >= 0
    epoch = text.split("| epoch with translate + hflip", 1)[1].splitlines()[2]
    assert epoch.startswith("| convnet, 1024 images") and positive(epoch.strip("|").split("|")[-1])  # a ratio


# bench/presets.py's runs in these tests: on fashion_slice's real images (its 1,000 test images), validated on 500,
# the three-layer ConvNet narrower (16 filters, 32 hidden units; its own width takes a 2-core CPU most of a minute)
SLICE_RUNS = ("data.val_size=500", "model.num_filters=16", "model.hidden_dim=32")


def slice_overrides(root: Path, *overrides: str) -> list[str]:
    """``--override`` options for bench/presets.py: ``data.root=root`` and ``overrides``."""
    return [arg for o in (f"data.root={root}", *overrides) for arg in ("--override", o)]


def test_presets_trains_each_candidate_over_seeds_and_writes_its_table(tmp_path, fashion_slice):
    """bench/presets.py on a slice: one candidate, two seeds trained together as one population (--population),
    1 epoch on 2,000 real Fashion-MNIST images. (The search's test below trains its choice one run a seed.)"""
    text = run_bench("presets.py", "--subset", "2000", "--epochs", "1", "--only", "three-layer", "--seeds", "0", "1",
                     "--population", *slice_overrides(fashion_slice, *SLICE_RUNS), "--out", str(tmp_path / "runs"),
                     results=tmp_path / "R.md")
    assert ("## Fashion-MNIST presets on 2,000 training images, 1 epoch each (2 seeds, each candidate's seeds as one "
            f"population, 3 at once), with data.root={fashion_slice} {' '.join(SLICE_RUNS)}") in text
    [row] = table(text, "presets-cpu-slice-override-population-convnet")  # a section apart from the presets'
    name, seeds, test, val, seconds, epochs = row
    assert "three-layer" in name and seeds == "2" and epochs == "1"
    median, spread = test.split("%", 1)
    assert 10 < float(median) <= 100 and spread.strip().startswith("(")  # above chance after one epoch
    assert 0 <= float(val.rstrip("%")) <= 100 and measured(seconds) >= 0
    for job, seed in ((0, 0), (1, 1)):  # the population's jobs, one a seed, each with the overrides
        run = tmp_path / "runs" / "convnet-three-layer-convnet-the-old-preset" / str(job)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert config["trainer"]["seed"] == seed and config["model"]["num_filters"] == 16
        assert config["data"]["root"] == str(fashion_slice) and config["data"]["val_size"] == 500
        assert "/ 1000 test samples of shape 1x28x28" in (run / "expt.log").read_text()  # the slice's test images


def test_presets_stops_its_runs_at_the_stop_time_and_says_what_they_reached(tmp_path, fashion_slice):
    """--stop-after sends the population SIGTERM: its members end as at Ctrl-C, and the table says which epoch each
    reached and its best validation accuracy (a time limit on a GPU cut the ResNet preset's runs at epoch 33). How far
    they get depends on the machine, never judged: 10,000 epochs are never reached."""
    out = tmp_path / "runs"
    results = tmp_path / "R.md"
    done = run_cli("--subset", "1000", "--epochs", "10000", "--only", "three-layer", "--seeds", "0", "1",
                   "--population", "--stop-after", "15", *slice_overrides(fashion_slice, *SLICE_RUNS),
                   "--out", str(out), f"--results={results}", program=BENCH / "presets.py", cwd=tmp_path, timeout=600,
                   check=True)
    [row] = table(results.read_text(), "presets-cpu-slice-override-population-convnet")
    assert row[1] == "0" and row[3:] == ["", "", ""], row
    said = row[2].split("; ")
    assert len(said) == 2, row  # each seed's own
    assert "killed" not in row[2], done.stdout[-6000:]  # where the run was when it did not end (the fault handler's)
    for job, status in enumerate(said):
        metrics_file = out / "convnet-three-layer-convnet-the-old-preset" / str(job) / "metrics.json"
        if not metrics_file.is_file():  # stopped while it started (a slow machine)
            assert status == "stopped before its first epoch (past --stop-after)", status
            continue
        metrics = json.loads(metrics_file.read_text())
        assert metrics["status"] == "interrupted", metrics["status"]
        expected = f"stopped (past --stop-after) after epoch {metrics['epochs_completed']}"
        if metrics["best_val_acc"] is not None:  # and the best model's test, which a stopped run still measures
            expected += f", best val {100 * metrics['best_val_acc']:.2f}%, its test {100 * metrics['test_acc']:.2f}%"
        assert status == expected


def test_a_stopped_process_that_does_not_end_is_killed_and_says_where_it_was(tmp_path, monkeypatch):
    """bench/presets.py's stop: a process that ignores SIGTERM is killed after the grace, and Python's fault handler
    says where each of its threads was (here: the function it spins in)."""
    import time

    sys.path.insert(0, str(BENCH))
    import presets

    (tmp_path / "stubborn.py").write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n\n\n"
                                         "def wait_forever():\n    while True:\n        time.sleep(0.05)\n\n\n"
                                         "print('started', flush=True)\nwait_forever()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(presets, "STOP_GRACE", 1)
    proc, stopped = presets.expt([], time.time() + 3, module="stubborn")
    assert stopped and presets.killed(proc) and proc.stdout == "started\n", proc
    where = presets.where_it_was(proc)
    assert where.startswith("Fatal Python error: Aborted") and 'stubborn.py", line 7 in wait_forever' in where, where


def test_the_gpu_script_says_when_there_is_no_gpu(tmp_path):
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bench/gpu.sh would take its figures")
    for mode in ([], ["--resnet"]):  # every mode checks for the GPU before its first part
        proc = subprocess.run(["bash", str(BENCH / "gpu.sh"), *mode, "--results", str(tmp_path / "R.md")],
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                              timeout=300)
        assert proc.returncode == 1 and "no CUDA device" in proc.stderr and not (tmp_path / "R.md").exists(), mode
    bad = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--fast"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr and "--resnet" in bad.stderr
    two = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--presets", "--resnet"], capture_output=True, text=True,
                         timeout=60)
    assert two.returncode == 2 and "--resnet and --presets are run one at a time" in two.stderr


@pytest.mark.slow
def test_presets_search_chooses_a_configuration_trains_it_and_ensembles_the_search(tmp_path, fashion_slice):
    """--search at its smallest: two pinpoint rates and two 1-epoch trials of a narrow ConvNet on 2,000 real
    Fashion-MNIST images, through the population launcher; the choice trained on one seed."""
    text = run_bench("presets.py", "--quick", "--search", "--only", "chosen", "--seeds", "0",
                     *slice_overrides(fashion_slice), "--out", str(tmp_path / "runs"), results=tmp_path / "R.md")
    rows = table(text, "presets-cpu-quick-override-search-convnet")
    assert [r[0] for r in rows][:2] == ["convnet: chosen by the staged search", "the search itself"]
    (_, seeds, test, _, _, epochs), (_, spent, _, _, seconds, _), ensemble = rows
    assert seeds == "1" and epochs == "1" and 10 < float(test.split("%")[0]) <= 100
    assert spent == "4 trials" and seconds.endswith("in all")
    # the search's best runs by validation accuracy averaged: as many as completed (a pinpoint rate may diverge), at
    # most five, each set of test-time views tried on validation
    search = tmp_path / "runs" / "search"
    assert (search / "evaluation.json").is_file(), ensemble
    evaluation = json.loads((search / "evaluation.json").read_text())
    top, views = evaluation["choice"]["k"], evaluation["choice"]["tta"]
    completed = {m.parent.name: json.loads(m.read_text())["best_val_acc"] for m in search.glob("*/metrics.json")
                 if json.loads(m.read_text())["status"] == "completed"}
    assert top == min(5, len(completed)) >= 1 and views in ("none", "flip"), evaluation["choice"]
    assert {c["tta"] for c in evaluation["candidates"]} == {"none", "flip"}
    members = evaluation["choice"]["members"]
    assert len(members) == top and min(completed[m] for m in members) >= max(
        [v for name, v in completed.items() if name not in members], default=0), (members, completed)
    assert ensemble == [f"the search's top {top} runs, their predictions averaged (`python -m expt.evaluate --top {top}`)"
                        f", test-time views: {views}", f"{top} runs", f"{100 * evaluation['ensemble']['test_acc']:.2f}%",
                        f"{100 * evaluation['ensemble']['val_acc']:.2f}%", ensemble[4], ""], ensemble
    assert ensemble[4].endswith(" to evaluate") and measured(ensemble[4].split()[0]) >= 0
    assert "The search chose: `optimizer.lr=" in text
    for trial in sorted((tmp_path / "runs" / "search").glob("[0-9]*/.hydra/config.yaml")):  # the search's own data
        assert yaml.safe_load(trial.read_text())["data"]["root"] == str(fashion_slice), trial


def test_measuring_times_each_model_at_each_batch_size(tmp_path):
    text = run_bench("measuring.py", "--quick", results=tmp_path / "R.md")
    rows = table(text, "measuring-cpu")
    assert [r[0] for r in rows] == ["digits MLP", "digits ConvNet", "Fashion-MNIST ConvNet preset",
                                    "Fashion-MNIST ResNet preset", "CIFAR-10 ResNet-20 preset"]
    sizes = (2048, 512, 128, 64, 32)
    for _, *ms, fastest, vs_fastest, vs_2048 in rows:
        times = [measured(t) for t in ms]
        assert len(times) == len(sizes) and times[sizes.index(int(fastest))] == min(times), (times, fastest)
        assert positive(vs_fastest) >= 1.0  # the fastest size's time at most expt's (a consistency check)
        positive(vs_2048)
    assert "expt measures in batches of 64 on cpu" in text
