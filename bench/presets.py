"""The Fashion-MNIST presets on the full data: test accuracy over seeds, and each step of the recipe measured.

Each candidate is a list of overrides (the presets, and the steps added one at a time on the way to them);
each is trained with ``python -m expt`` for every seed in ``--seeds`` (``trainer.seed``; the split stays
``data.split_seed=0``), up to ``--parallel`` runs at once on the one device. The table gives, per
candidate, the median test accuracy of the best model (chosen on validation) with the lowest and highest
seed, the median validation accuracy, and the median seconds a run took (metrics.json's ``seconds``:
runs that share the device take longer than a run alone would).

    python bench/presets.py                         # every candidate, seeds 0-2
    python bench/presets.py --only resnet           # the candidates whose name contains "resnet"
    python bench/presets.py --quick                 # 1 epoch on 2,000 images: checks the script, not the presets
    python bench/presets.py --only convnet --subset 10000 --epochs 10   # the steps on a slice a CPU can train
    python bench/presets.py --override data.root=/data/fmnist   # an override added to every run (repeatable)

``--search`` first runs the recipe's search on the ConvNet preset: the coarse-to-fine sweeper's staged preset
(pinpoint the learning rate, then the rate and L2 coarse to fine over 2, 5 and 10 epochs, then what the
config has of width and dropout), through ``--search-launcher`` (the population launcher by default), on
``--search-subset`` training images if given. The search's best runs by validation accuracy (five, or as many
as finished) are averaged as one ensemble (``python -m expt.evaluate --top 5``, with or without flipped
test-time views as validation chooses) while the configuration it chose is trained like the presets, on the
full data for the preset's epochs over the same seeds ("convnet: chosen by the search").

    python bench/presets.py --search --only convnet     # the search, its choice and the preset, 3 seeds each

``--population`` trains each candidate's seeds together as one population (``hydra/launcher=population``: one
vmapped step for all of them, their numbers those of the runs alone), so that on a GPU a small model's three
seeds should take about one run's time (a launch-bound step does three members' work in about one's);
``seconds`` is then the population's. Each model's candidates (``convnet``, ``resnet``), a search's and a table of
populations are sections of their own in the results file (``presets-cuda-population-resnet``), so that
``gpu.sh --presets`` and ``--resnet`` do not replace each other's tables (two runs of one kind, each with its own
``--only``, still do). Each candidate's runs go to a folder named after it under ``--out``; a
``metrics.json`` an earlier run left there is removed first. At ``--stop-after`` a run gets SIGTERM and ends as
at Ctrl-C; the table says which epoch each stopped run reached and its best validation accuracy. One that has not
ended 30 s later is killed, and the log shows where each of its threads was (Python's fault handler).

    python bench/presets.py --population --only "resnet: ResNet-20 x2 width (the preset)"
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yaml  # noqa: E402
from common import machine, results_option, write_results  # noqa: E402

from expt.overrides import split_override  # noqa: E402

CONVNET = ["experiment=fashion_mnist_convnet"]
RESNET = ["experiment=fashion_mnist_resnet"]
# name -> overrides: from the old preset (the recipe's three-layer ConvNet) to the new ones, one step at a time
CANDIDATES = {  # the two presets first: with --deadline, they are the runs that start
    "convnet: + weight average (the preset)": [*CONVNET],
    "resnet: ResNet-20 x2 width (the preset)": [*RESNET],
    "convnet: three-layer ConvNet (the old preset)": [
        *CONVNET, "model=convnet", "model.num_filters=64", "model.hidden_dim=256", "schedule=cosine",
        "optimizer.lr=1e-3", "trainer.batch_size=128", "trainer.ema=0", "regularization.l2=1e-4"],
    "convnet: VGG-style 4 convs, cosine, no average": [
        *CONVNET, "schedule=cosine", "optimizer.lr=1e-3", "trainer.ema=0"],
    "convnet: + one-cycle rate per step": [*CONVNET, "trainer.ema=0"],
    "convnet: preset without flips": [*CONVNET, "augmentation=[translate]"],
    "resnet: ResNet-20 x2 width, no average": [*RESNET, "trainer.ema=0"],
}


STOP_GRACE = 30  # seconds a run stopped at --stop-after has to end as Ctrl-C ends it (its metrics, its checkpoint)


def expt(arguments: list[str], stop: float, module: str = "expt") -> tuple[subprocess.CompletedProcess, bool]:
    """``python -m expt <arguments>`` (or another ``module``), and whether it was stopped: at the time ``stop`` it gets
    SIGTERM, which a run (a population's members too) ends as it ends at Ctrl-C, writing what it reached (``python -m
    expt.evaluate`` ends at once: its evaluation.json is written whole or not at all). If it has not ended
    :data:`STOP_GRACE` seconds later it is killed with SIGABRT, on which Python's fault handler prints where each of its
    threads was (:func:`where_it_was`), then with SIGKILL if even that did not end it."""
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", module, *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=None if stop == float("inf") else max(1.0, stop - time.time()))
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            print(f"  python -m {module} had not ended {STOP_GRACE} s after SIGTERM; where it was:\n{where_it_was(done)}",
                  flush=True)
            return done, True
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), True


def killed(proc: subprocess.CompletedProcess) -> bool:
    """Whether ``proc`` was killed for not ending within :data:`STOP_GRACE` seconds of its stop."""
    return proc.returncode in (-signal.SIGABRT, -signal.SIGKILL)


def where_it_was(proc: subprocess.CompletedProcess) -> str:
    """What a process killed by :func:`expt` printed last: the fault handler's stack of each thread, where it had
    got to, after its last lines before."""
    lines = (proc.stderr or "").rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), max(0, len(lines) - 3))
    return "\n".join(lines[max(0, start - 3):])


def tail(proc: subprocess.CompletedProcess) -> str:
    """The last lines a failed process printed (its error), on one line."""
    return " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])


def finished(proc: subprocess.CompletedProcess, stopped: bool, run_dir: Path, seed: int) -> dict:
    """The metrics of the completed run in ``run_dir``, or ``{"_status": how it ended}``; and its line."""
    metrics_file = run_dir / "metrics.json"
    m = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    test = m.get("test_acc")
    if m.get("status") == "completed" and isinstance(test, (int, float)) and math.isfinite(test):
        print(f"  {run_dir.parent.name} seed {seed}: test {100 * test:.2f}%  "
              f"val {100 * (m['best_val_acc'] or 0):.2f}%  {m['seconds']:.0f} s", flush=True)
        return m
    if not m:
        status = ("stopped before its first epoch (past --stop-after)" if stopped and not killed(proc)
                  else f"killed {STOP_GRACE} s after its stop, nothing written" if stopped else "failed")
    else:
        best = m.get("best_val_acc")
        said = "stopped (past --stop-after)" if stopped and m.get("status") == "interrupted" else m.get("status")
        status = (f"{said} after epoch "
                  f"{m.get('epochs_completed')}" + (f", best val {100 * best:.2f}%" if isinstance(best, float) else "")
                  + (f", its test {100 * test:.2f}%" if isinstance(test, float) and math.isfinite(test) else ""))
    said = tail(proc) if status == "failed" else ""
    print(f"  {run_dir} seed {seed}: {status}{': ' + said if said else ''}", flush=True)
    return {"_status": status}


def run(overrides: list[str], seeds: list[int], run_dir: Path, extra: list[str], deadline: float, stop: float,
        population: bool = False) -> list[dict]:
    """Train ``overrides`` for each seed: one run a seed in ``run_dir/<seed>``, or with ``population`` the seeds
    together as one population (``hydra/launcher=population``), job i in ``run_dir/<i>``. Each seed's metrics, or
    ``{"_status": how it ended}``. A metrics.json an earlier run left there goes first: never read as this run's."""
    if time.time() >= min(deadline, stop):  # a run started past its stop time would only be stopped
        why = "--deadline" if time.time() >= deadline else "--stop-after"
        print(f"  not started (past {why}): {run_dir}", flush=True)
        return [{"_status": f"not started (past {why})"}] * len(seeds)
    dirs = [run_dir / str(i) for i in range(len(seeds))] if population else [run_dir / str(seeds[0])]
    for d in dirs:
        (d / "metrics.json").unlink(missing_ok=True)
    if population:
        seed_list = ",".join(str(s) for s in seeds)
        arguments = ["-m", *overrides, f"trainer.seed={seed_list}", *extra, "hydra/launcher=population",
                     f"hydra.sweep.dir={run_dir}", "hydra.job.chdir=false"]
    else:
        arguments = [*overrides, f"trainer.seed={seeds[0]}", *extra, f"hydra.run.dir={dirs[0]}", "hydra.job.chdir=false"]
    proc, stopped = expt(arguments, stop)
    return [finished(proc, stopped, d, seed) for d, seed in zip(dirs, seeds)]


def folder(name: str) -> str:
    """A candidate's folder: ``convnet: + weight average (the preset)`` -> ``convnet-weight-average-the-preset``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


CHOSEN = "convnet: chosen by the staged search"
# --quick checks the script, not the presets: 1 epoch on 2,000 images, validated on 500
QUICK = ["data.subset=2000", "data.val_size=500", "trainer.epochs=1"]
# and the smallest search: two pinpoint rates, then one round of two 1-epoch trials over the rate, of a ConvNet
# a quarter as wide, whose choice is trained at that width too (evaluating the preset's width on the 10,000
# test images takes a 2-core CPU half a minute)
QUICK_WIDTH = ["model.filters=[16,16,32,32]"]
QUICK_SEARCH = ["data.subset=2000", "data.val_size=500", *QUICK_WIDTH, "hydra.sweeper.pinpoint.num=2",
                "hydra.sweeper.stages=[{name:lr,params:[optimizer.lr],rounds:"
                "[{trials:2,top_k:1,overrides:['trainer.epochs=1']}]}]"]


def search(sweep_dir: Path, launcher: str, extra: list[str], stop: float) -> tuple[list[str], str]:
    """The staged search on the ConvNet preset, into ``sweep_dir``: the overrides of the configuration it chose (none
    when it chose none) and the table's row of what the search spent."""
    start = time.time()
    # an earlier search's summary and ensemble: never read as this one's (the ensemble's record of earlier test
    # evaluations goes with it: they were of other runs)
    for earlier in ("search_summary.yaml", "evaluation.json"):
        (sweep_dir / earlier).unlink(missing_ok=True)
    proc, stopped = expt(["-m", *CONVNET, "hydra/sweeper=coarse_to_fine", f"hydra/launcher={launcher}", *extra,
                          f"hydra.sweep.dir={sweep_dir}", "hydra.job.chdir=false"], stop)
    if stopped:
        print("  the search was stopped (past --stop-after)", flush=True)
        return [], ""
    summary_file = sweep_dir / "search_summary.yaml"
    if proc.returncode != 0 or not summary_file.is_file():
        print(f"  the search FAILED: {tail(proc)}", flush=True)
        return [], ""
    best = (yaml.safe_load(summary_file.read_text()) or {}).get("best") or {}
    chosen = [f"{key}={value}" for key, value in (best.get("values") or {}).items()]
    seconds = time.time() - start
    trials = len(list(sweep_dir.glob("*/metrics.json")))
    print(f"  search: {trials} trials in {seconds:.0f} s; chosen job {best.get('job')}: {' '.join(chosen)}", flush=True)
    return chosen, f"| the search itself | {trials} trials | | | {seconds:.0f} in all | |"


ENSEMBLE = 5  # the search's best runs whose predictions are averaged


def ensemble(sweep_dir: Path, device: str, stop: float) -> list[str]:
    """The search's :data:`ENSEMBLE` best runs by validation accuracy (fewer if fewer finished), their predictions
    averaged by ``python -m expt.evaluate`` on ``device`` with the test-time views (none, or flips) chosen on
    validation: the table's row (none if there is nothing to average)."""
    from expt.errors import ConfigError
    from expt.evaluate import find_runs

    try:
        top = min(ENSEMBLE, len(find_runs(sweep_dir)[0]))  # the runs evaluate averages: completed, with a best.pt
    except ConfigError as exc:  # no such directory: the runs' table is written all the same
        print(f"  no ensemble: {exc}", flush=True)
        return []
    if not top:
        return []
    start = time.time()
    proc, stopped = expt([str(sweep_dir), "--top", str(top), "--tta", "none", "flip", "--device", device], stop,
                         module="expt.evaluate")
    name = f"the search's top {top} runs, their predictions averaged (`python -m expt.evaluate --top {top}`)"
    evaluation = sweep_dir / "evaluation.json"
    if stopped or proc.returncode != 0 or not evaluation.is_file():
        said = "stopped (past --stop-after)" if stopped else "failed (its error is in the log above)"
        print(f"  the ensemble {said}{'' if stopped else ': ' + tail(proc)}", flush=True)
        return [f"| {name} | | {said} | | | |"]
    result = json.loads(evaluation.read_text())
    e, views = result["ensemble"], result["choice"]["tta"]
    print(f"  ensemble of the top {top}: test {100 * e['test_acc']:.2f}%  val {100 * e['val_acc']:.2f}%  "
          f"(test-time views: {views})", flush=True)
    return [f"| {name}, test-time views: {views} | {top} runs | {100 * e['test_acc']:.2f}% | {100 * e['val_acc']:.2f}% "
            f"| {time.time() - start:.0f} to evaluate | |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=3, help="runs at once (default: %(default)s)")
    parser.add_argument("--only", action="append", help="candidates whose name contains this (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("outputs/presets"), help="where the runs go")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images, 500 validation images")
    parser.add_argument("--subset", type=int, help="train every candidate on this many training images (default: all)")
    parser.add_argument("--epochs", type=int, help="train every candidate this many epochs (default: its own)")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds after which no further run starts (the table keeps what finished)")
    parser.add_argument("--stop-after", type=float, default=float("inf"),
                        help="seconds after which runs still going are stopped (the table keeps what finished)")
    parser.add_argument("--population", action="store_true",
                        help="train each candidate's seeds together, as one population (hydra/launcher=population)")
    parser.add_argument("--search", action="store_true",
                        help="first run the staged search on the ConvNet preset and train its choice too")
    parser.add_argument("--search-launcher", default="population", help="the search's Hydra launcher")
    parser.add_argument("--search-subset", type=int, help="training images the search sees (default: all)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override added to every run and to the search, after the script's own "
                             "(repeatable): data.root=..., trainer.device=cuda:1 (the search's ensemble follows "
                             "trainer.device too); the table is a section of its own")
    results_option(parser)
    args = parser.parse_args()
    if args.quick and (args.subset or args.epochs):
        parser.error("--quick sets its own slice and epochs: leave out --subset and --epochs")
    slice_ = [f"data.subset={args.subset}"] * bool(args.subset) + [f"trainer.epochs={args.epochs}"] * bool(args.epochs)
    extra = [*(QUICK if args.quick else slice_), *args.override]
    start = time.time()
    candidates, search_row, ensembling = dict(CANDIDATES), "", None
    if args.search:
        if args.quick:
            search_extra = QUICK_SEARCH
        else:
            search_extra = [f"data.subset={args.search_subset}"] if args.search_subset else []
        search_extra = [*search_extra, *args.override]
        sweep_dir = args.out / "search"
        chosen, search_row = search(sweep_dir, args.search_launcher, search_extra, start + args.stop_after)
        if search_row:  # the search's best runs averaged, beside the runs below (no run waits for it)
            on = ([value for key, value in map(split_override, args.override) if key == "trainer.device"]
                  or ["auto"])[-1]  # the last, as Hydra takes it
            ensembling = ThreadPoolExecutor(1).submit(ensemble, sweep_dir, on, start + args.stop_after)
        if chosen:
            candidates[CHOSEN] = [*CONVNET, *(QUICK_WIDTH if args.quick else []), *chosen]
    names = [n for n in candidates if not args.only or any(o in n for o in args.only)]
    if not names:  # an empty table would replace a section of results
        parser.error(f"--only {' '.join(args.only)}: no candidate's name holds it; the candidates: {', '.join(candidates)}")
    # a process a run, or with --population a process a candidate, its seeds one population
    jobs = [(n, args.seeds) for n in names] if args.population else [(n, [s]) for n in names for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda job: run(candidates[job[0]], job[1], args.out / folder(job[0]), extra,
                                             start + args.deadline, start + args.stop_after, args.population), jobs))
    results: dict[str, list[dict]] = {n: [] for n in names}
    unfinished: dict[str, list[str]] = {n: [] for n in names}
    for (name, _), runs in zip(jobs, done):
        for metrics in runs:
            if "_status" in metrics:
                unfinished[name].append(metrics["_status"])
            else:
                results[name].append(metrics)
    seconds = "seconds a population (its seeds together)" if args.population else "seconds a run, median"
    table = ["| candidate | seeds | test accuracy, median (min - max) | val accuracy, median | " + seconds
             + " | epochs |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        others = "; ".join(unfinished[name])  # how each seed that did not complete ended
        if not runs:
            table.append(f"| {name} | 0 | {others} | | | |")
            continue
        test = [100 * r["test_acc"] for r in runs]
        val = [100 * r["best_val_acc"] for r in runs]
        table.append(f"| {name} | {len(runs)}{f' (and {len(unfinished[name])} more: {others})' if others else ''} "
                     f"| {statistics.median(test):.2f}% ({min(test):.2f} - {max(test):.2f}) "
                     f"| {statistics.median(val):.2f}% | {statistics.median(r['seconds'] for r in runs):.0f} "
                     f"| {runs[0]['epochs_completed']} |")
    if search_row:
        table.append(search_row)
    if ensembling is not None:
        table.extend(ensembling.result())
    if CHOSEN in candidates:
        table.append("")
        table.append(f"The search chose: `{' '.join(chosen)}`"
                     + (f" (searched on {args.search_subset} training images)" if args.search_subset else "") + ".")
    print("\n".join(table))
    print(f"{len(names) * len(args.seeds)} runs in {time.time() - start:.0f} s")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seeds = f"{len(args.seeds)} seed{'s' * (len(args.seeds) != 1)}, " + (
        f"each candidate's seeds as one population, {args.parallel} at once" if args.population
        else f"{args.parallel} run{'s' * (args.parallel != 1)} at once")
    if args.quick:
        key, title = "-quick", "Fashion-MNIST presets, quick check (1 epoch, 2,000 images, 500 validated)"
    elif slice_:
        on = f"{args.subset:,} training images" if args.subset else "the full data"
        for_ = f", {args.epochs} epoch{'s' * (args.epochs != 1)} each" if args.epochs else ""
        key, title = "-slice", f"Fashion-MNIST presets on {on}{for_} ({seeds})"
    else:
        key, title = "", f"Fashion-MNIST presets on the full data ({seeds})"
    if args.override:  # the table is of these runs, not of the presets as shipped
        title += f", with {' '.join(args.override)}"
        key += "-override"
    # a table of each model's candidates, of a search, of populations, or with overrides is a section of its own:
    # one replaces another only where it holds the same kind of rows
    families = sorted({name.split(":", 1)[0] for name in names})
    key += "-search" * args.search + "-population" * args.population + "".join(f"-{f}" for f in families)
    write_results(f"presets-{device}{key}", title, "\n".join(table), machine(device), args.results)


if __name__ == "__main__":
    main()
