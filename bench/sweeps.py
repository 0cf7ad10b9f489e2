"""Sweeps: trials per minute through two launchers, and search quality per epoch spent.

Throughput: one coarse round of 16 one-epoch trials of the default run, through Hydra's basic
launcher and through the joblib launcher (2 workers, one thread each), timed from the command's
start to its end.

Quality, on the default data at about the same number of epochs (close to 100): the staged preset
(pinpoint, then lr/decay/L2, then width/dropout), also without early stopping and with exact ties
only; the previous preset's rounds over its space (optimizer.lr and regularization.l2 on [1e-6, 1e-1]) with twice its
trials (20 x 1 + 10 x 3 + 4 x 10 = 90 epochs); plain random search and Optuna's TPE sampler
(hydra-optuna-sweeper) with 10 trials of 10 epochs over the staged preset's space; and no search at
all (the default config, one run per seed). For each method and seed: the chosen trial (the
coarse-to-fine sweeper's own choice; for the others the best validation accuracy, ties to the lower
validation loss), its validation loss and test accuracy, the epochs and trials spent; the table
gives the median over seeds and the range.

Overhead: the seconds a 1-epoch trial costs beyond its epoch, from two rounds of 2 and 10 trials
(see ``overhead``), optionally against another source tree (``--before old-checkout/src``); on a GPU with
``--device cuda`` (its own section), for some kinds of trial only with ``--only``.

    python bench/sweeps.py                 # throughput and quality, 5 seeds
    python bench/sweeps.py --seeds 3 --skip-throughput
    python bench/sweeps.py --overhead --before /path/to/old/checkout/src
    python bench/sweeps.py --overhead --device cuda --only population --repeats 1 --rounds 4 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, write_results  # noqa: E402

# the staged preset's space, for the samplers that search it all at once
SPACE = ["optimizer.lr=tag(log, interval(1e-5, 1e-1))", "schedule.gamma=interval(0.1, 1.0)",
         "regularization.l2=tag(log, interval(1e-6, 1e-2))", "model.num_filters=tag(log, int(interval(16, 128)))",
         "model.hidden_dim=tag(log, int(interval(32, 512)))", "regularization.dropout=interval(0.0, 0.6)"]
OLD_SPACE = ["optimizer.lr=tag(log, interval(1e-6, 1e-1))", "regularization.l2=tag(log, interval(1e-6, 1e-1))"]
TRAIN_SAMPLES = 1149  # the digits' training split
QUIET = ["sanity.before_train=false", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
GUARDED = QUIET[1:]  # a sweep's default: the loss-at-init check before every trial


def sweep(args: list[str], sweep_dir: Path, env: dict | None = None, log: list[str] | None = None,
          quiet: list[str] = QUIET) -> float:
    """Run one `python -m expt -m ...` sweep into sweep_dir, with ``quiet``'s overrides; return its wall seconds.

    With ``log`` (a list), the sweep keeps Hydra's own log (the launcher's lines), appended there.
    """
    quiet = quiet if log is None else [q for q in quiet if not q.startswith("hydra/hydra_logging")]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "expt", "-m", *args, *quiet, f"hydra.sweep.dir={sweep_dir}"],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    if log is not None:
        log.append(proc.stdout + proc.stderr)
    return seconds


def chosen(sweep_dir: Path) -> dict[str, float]:
    """The trial the sweep chose, and what the sweep spent.

    The coarse-to-fine sweeper's own choice (``search_summary.yaml``: the best validation score,
    ties to the lower validation loss); for other sweepers the best validation accuracy, exact
    ties to the lower validation loss. Epochs trained count a pinpoint trial's epochs on its
    100-sample subset as the fraction of a full epoch they are.
    """
    rows, epochs = {}, 0.0
    for metrics_file in sweep_dir.glob("*/metrics.json"):
        data = json.loads(metrics_file.read_text())
        overrides = (metrics_file.parent / ".hydra" / "overrides.yaml").read_text()
        fraction = 100 / TRAIN_SAMPLES if "data.subset=100" in overrides else 1.0
        epochs += fraction * (data.get("epochs_completed") or 0)
        if data.get("best_val_acc") is not None and fraction == 1.0:
            rows[metrics_file.parent.name] = data
    summary = sweep_dir / "search_summary.yaml"
    if summary.exists():
        pick = rows[str(yaml.safe_load(summary.read_text())["best"]["job"])]
    else:
        pick = max(rows.values(), key=lambda d: (d["best_val_acc"], -(d.get("best_val_loss") or float("inf"))))
    return {"val_acc": pick["best_val_acc"], "val_loss": pick["best_val_loss"], "test_acc": pick["test_acc"],
            "epochs": epochs, "trials": len(list(sweep_dir.glob("*/metrics.json")))}


def throughput(tmp: Path, trials: int = 16) -> str:
    one_round = ["hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false",
                 f"hydra.sweeper.rounds=[{{trials:{trials},top_k:3,overrides:['trainer.epochs=1']}}]"]
    rows = []
    for name, extra, env in (
        ("basic", [], None),
        ("joblib, 2 workers", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], {"OMP_NUM_THREADS": "1"}),
    ):
        seconds = sweep([*one_round, *extra], tmp / f"throughput-{len(rows)}", env)
        rows.append(f"| {name} | {seconds:.1f} | {trials / seconds * 60:.1f} |")
        print(rows[-1], flush=True)
    return "\n".join([f"| launcher | seconds for {trials} trials | trials per minute |", "|---|---|---|", *rows])


POPULATION = "hydra/launcher=population"
# The preset's space less its shape and dropout parameters: trials that differ only in the learning rate and
# L2, values a population's member may have of its own (a parameter no stage names is searched in the first)
LR_L2 = ["hydra.sweeper.params={schedule.gamma:null,model.num_filters:null,model.hidden_dim:null,"
         "regularization.dropout:null}"]


def overhead(tmp: Path, env: dict | None, extra: list[str], few: int, many: int,
             device: str = "cpu") -> dict[str, float]:
    """Seconds a trial costs beyond its own epoch.

    Two 1-epoch rounds of the default run, ``few`` and ``many`` trials: the difference of their
    wall times per extra trial, less what an extra trial adds to training, is what a trial costs
    besides training (composition, job directory, building, the loss at init and its sanity check as a
    sweep has them by default, the event file, checkpoints, test evaluation, metrics.json). Process
    start-up cancels out. The search varies only the learning rate and L2 (``LR_L2``). With the basic
    launcher an extra trial adds its own epoch (the mean the trials measured); under
    ``hydra/launcher=population`` the round's trials train as one population, and an extra trial adds to
    the population's epoch the difference of the two rounds' epochs per extra member. The trials train on
    ``device``.
    """
    together = POPULATION in extra

    def round_of(n: int) -> list[str]:
        return ["hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false", f"trainer.device={device}",
                *extra, *LR_L2,
                f"hydra.sweeper.rounds=[{{trials:{n},top_k:1,overrides:['trainer.epochs=1']}}]"]

    def epochs(n: int) -> list[float]:
        return [row["seconds"] for m in (tmp / f"overhead-{stamp}-{n}").glob("*/metrics.json")
                for row in json.loads(m.read_text())["history"]]

    stamp, logs = time.monotonic_ns(), []
    walls = {n: sweep(round_of(n), tmp / f"overhead-{stamp}-{n}", env, logs if together else None, GUARDED)
             for n in (few, many)}
    per_trial = (walls[many] - walls[few]) / (many - few)
    if together:  # every member reports the population's epoch
        for n, log in zip((few, many), logs):  # the launcher says how it grouped the round
            if f"population of {n}: jobs" not in log:
                raise SystemExit(f"the {n} trials did not train as one population; the launcher said:\n{log[-3000:]}")
        epoch = (statistics.mean(epochs(many)) - statistics.mean(epochs(few))) / (many - few)
    else:
        epoch = statistics.mean(epochs(many))
    return {"per_trial": per_trial, "epoch": epoch, "overhead": per_trial - epoch}


OVERHEAD_VARIANTS: list[tuple[str, list[str]]] = [  # a kind of trial -> the overrides that make it
    ("a last-round trial (every diagnostic)", []),
    ("an earlier round's trial (no heavy diagnostics)", ["dashboard.sweep_diagnostics=none"]),
    ("an earlier round's trial, hydra/launcher=population", ["dashboard.sweep_diagnostics=none", POPULATION]),
]


def overhead_table(tmp: Path, before: Path | None, repeats: int, few: int, many: int,
                   device: str = "cpu", only: list[str] | None = None) -> str:
    """The overhead of this tree (and of ``before``, another source tree, when given), median of ``repeats``,
    from rounds of ``few`` and ``many`` trials on ``device`` (:func:`overhead`), for the variants whose names hold
    one of ``only`` (all by default).

    A one-round sweep is its own last round, whose trials write every diagnostic; the trials of
    the rounds before the last write what ``dashboard.sweep_diagnostics=none`` leaves. With ``before``
    each variant is measured on both trees in turn, repeat by repeat, so both see the same machine.
    """
    variants = [(name, extra) for name, extra in OVERHEAD_VARIANTS if not only or any(o in name for o in only)]
    trees: list[tuple[str, dict | None]] = [("this version", None)]
    if before is not None:
        trees.insert(0, (f"before ({before})", {"PYTHONPATH": str(before)}))
    lines = ["| version | trial | seconds per 1-epoch trial | of which the epoch | overhead per trial "
             "| trials per minute |", "|---|---|---|---|---|---|"]
    for name, extra in variants:
        rows: dict[str, list[dict[str, float]]] = {tree: [] for tree, _ in trees}
        for _ in range(repeats):
            for tree, env in trees:
                rows[tree].append(overhead(tmp, env, extra, few, many, device))
        for tree, _ in trees:
            med = {k: statistics.median(r[k] for r in rows[tree]) for k in rows[tree][0]}
            lines.append(f"| {tree} | {name} | {med['per_trial']:.3f} | {med['epoch']:.3f} | {med['overhead']:.3f} "
                         f"| {60 / med['per_trial']:.1f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


TINY_STAGES = ("hydra.sweeper.stages=[{name:lr,params:[optimizer.lr],rounds:[{trials:2,overrides:['trainer.epochs=1']}]},"
               "{name:rest,rounds:[{trials:1,overrides:['trainer.epochs=1']}]}]")


def methods(tiny: bool = False) -> dict[str, Callable[[int], list[str]]]:
    """Each compared method's overrides for a sweep seed; ``tiny``: the smallest sweep of each, to test the script."""
    pins = ["schedule.gamma=0.5", "model.num_filters=64", "model.hidden_dim=100", "regularization.dropout=0"]
    one_stage = ["hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false",
                 "hydra.sweeper.pruning.enabled=false"]
    small = ["data.subset=200", "trainer.epochs=1"] if tiny else []
    staged = ["hydra.sweeper.pinpoint.num=2", TINY_STAGES] if tiny else []
    previous = ("[{trials:2,top_k:1,overrides:['trainer.epochs=1']},{trials:1,top_k:1,overrides:['trainer.epochs=1']}]"
                if tiny else "[{trials:20,top_k:3,overrides:['trainer.epochs=1']},{trials:10,top_k:2,overrides:"
                "['trainer.epochs=3']},{trials:4,top_k:1,overrides:['trainer.epochs=10']}]")
    trials, epochs = (2, 1) if tiny else (10, 10)
    return {
        "staged preset": lambda s: ["hydra/sweeper=coarse_to_fine", f"hydra.sweeper.seed={s}", *staged, *small],
        "staged preset, no early stopping": lambda s: [
            "hydra/sweeper=coarse_to_fine", f"hydra.sweeper.seed={s}", "hydra.sweeper.pruning.enabled=false",
            *staged, *small],
        "staged preset, exact ties only (tie_samples=0)": lambda s: [
            "hydra/sweeper=coarse_to_fine", f"hydra.sweeper.seed={s}", "hydra.sweeper.tie_samples=0",
            *staged, *small],
        "previous preset (lr, l2; 20x1 + 10x3 + 4x10)": lambda s: [
            *one_stage, f"hydra.sweeper.seed={s}", "hydra.sweeper.tie_samples=0", *pins, *OLD_SPACE,
            f"hydra.sweeper.rounds={previous}", *small],
        f"random search ({trials} x {epochs} epochs)": lambda s: [
            *one_stage, f"hydra.sweeper.seed={s}",
            f"hydra.sweeper.rounds=[{{trials:{trials},top_k:1,overrides:['trainer.epochs={epochs}']}}]", *small],
        f"Optuna TPE ({trials} x {epochs} epochs)": lambda s: [
            "hydra/sweeper=optuna", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.direction=maximize",
            f"hydra.sweeper.sampler.seed={s}", f"trainer.epochs={epochs}", *SPACE, *small],
        "no search: the default config (trainer.seed)": lambda s: [f"trainer.seed={s}", *small],
    }


def quality(tmp: Path, seeds: int, tiny: bool = False) -> str:
    methods_by_name = methods(tiny)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in methods_by_name}
    for seed in range(seeds):
        for name, args in methods_by_name.items():
            sweep_dir = tmp / f"{len(results[name])}-{abs(hash(name)) % 10**6}-{seed}"
            try:
                seconds = sweep(args(seed), sweep_dir)
            except SystemExit as exc:
                print(f"{name}: skipped ({str(exc).splitlines()[0]})")
                continue
            row = {**chosen(sweep_dir), "seconds": seconds}
            results[name].append(row)
            print(f"seed {seed} {name:46s} " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    lines = ["| method | chosen trial's val acc | its val loss | its test acc | epochs | trials | seconds | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        if not rows:
            lines.append(f"| {name} | not run (pip install hydra-optuna-sweeper) | | | | | | 0 |")
            continue

        def cell(key: str, digits: int = 4, percent: bool = False) -> str:
            values = [r[key] for r in rows]
            med, lo, hi = statistics.median(values), min(values), max(values)
            if percent:
                return f"{100 * med:.2f}% ({100 * lo:.2f}-{100 * hi:.2f})"
            return f"{med:.{digits}g} ({lo:.{digits}g}-{hi:.{digits}g})"

        lines.append(f"| {name} | {cell('val_acc', percent=True)} | {cell('val_loss', 3)} | "
                     f"{cell('test_acc', percent=True)} | {cell('epochs', 3)} | {cell('trials', 3)} | "
                     f"{cell('seconds', 3)} | {len(rows)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the smallest sweep of each method (to test the script)")
    parser.add_argument("--overhead", action="store_true", help="only measure the seconds a trial costs beyond its epoch")
    parser.add_argument("--before", type=Path, help="with --overhead: another source tree (its src/) to compare with")
    parser.add_argument("--repeats", type=int, default=3, help="with --overhead: repeats, median taken")
    parser.add_argument("--rounds", type=int, nargs=2, default=(2, 10), metavar=("FEW", "MANY"),
                        help="with --overhead: the trials of the two rounds whose difference is measured "
                             "(default: %(default)s; more trials, less noise)")
    parser.add_argument("--device", default="cpu", help="with --overhead: where the trials train (cpu, cuda; default cpu)")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="with --overhead: only the kinds of trial whose names hold TEXT (repeatable), of: "
                             + "; ".join(name for name, _ in OVERHEAD_VARIANTS))
    parser.add_argument("--trials", type=int, default=16, help="trials in the throughput round (default: %(default)s)")
    results_option(parser)
    args = parser.parse_args()
    if not 2 <= args.rounds[0] < args.rounds[1]:  # a round of one trial would train alone under the population launcher
        parser.error(f"--rounds {args.rounds[0]} {args.rounds[1]}: FEW must be at least 2 and less than MANY")
    unknown = [o for o in args.only or [] if not any(o in name for name, _ in OVERHEAD_VARIANTS)]
    if unknown:
        parser.error(f"--only {unknown[0]!r} is in no kind of trial's name: "
                     + "; ".join(name for name, _ in OVERHEAD_VARIANTS))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    with tempfile.TemporaryDirectory() as tmp:
        if args.overhead:
            gpu = args.device.startswith("cuda")
            write_results(f"trial-overhead{'-gpu' if gpu else ''}",
                          f"Seconds a sweep trial costs beyond its epoch (basic and population launchers, {args.device})",
                          overhead_table(Path(tmp), args.before, args.repeats, *args.rounds, args.device, args.only),
                          machine(args.device), args.results)
            return
        if not args.skip_throughput:
            write_results("sweep-throughput", f"Sweep throughput: a 1-epoch round of {args.trials} trials of the default run",
                          throughput(Path(tmp), args.trials), machine(), args.results)
        if not args.skip_quality:
            write_results("search-quality", f"Search quality at about 100 epochs, median over {args.seeds} sweep seeds",
                          quality(Path(tmp), args.seeds, args.tiny), machine(), args.results)


if __name__ == "__main__":
    main()
