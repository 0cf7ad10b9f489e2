"""Sweeps: trials per minute through two launchers, and search quality per epoch spent.

Throughput: one coarse round of 16 one-epoch trials of the default run, through Hydra's basic
launcher and through the joblib launcher (2 workers, one thread each), timed from the command's
start to its end.

Quality: the coarse-to-fine preset (10 x 1 + 5 x 3 + 2 x 10 = 45 epochs) against plain random
search with the same sampling and the same 45 epochs (15 trials of 3 epochs, the same sweeper with
one round) and against Optuna's TPE sampler (hydra-optuna-sweeper, 15 trials of 3 epochs), over
the same space (optimizer.lr and regularization.l2, log-uniform on [1e-6, 1e-1]) on the default
data. For each method and seed: the best validation accuracy and the lowest validation loss any
trial reached; the table gives the median over seeds.

    python bench/sweeps.py                 # both parts, 5 seeds
    python bench/sweeps.py --seeds 3 --skip-throughput
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, write_results  # noqa: E402

SPACE = ["optimizer.lr=tag(log, interval(1e-6, 1e-1))", "regularization.l2=tag(log, interval(1e-6, 1e-1))"]
QUIET = ["sanity.before_train=false", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def sweep(args: list[str], sweep_dir: Path, env: dict | None = None) -> float:
    """Run one `python -m expt -m ...` sweep into sweep_dir; return its wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "expt", "-m", *args, *QUIET, f"hydra.sweep.dir={sweep_dir}"],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def best_of(sweep_dir: Path) -> tuple[float, float]:
    """(best validation accuracy, lowest validation loss) over every trial of a sweep."""
    accs, losses = [], []
    for metrics in sweep_dir.glob("*/metrics.json"):
        data = json.loads(metrics.read_text())
        if data.get("best_val_acc") is not None:
            accs.append(data["best_val_acc"])
        losses += [row["val_loss"] for row in data.get("history", []) if row.get("val_loss") is not None]
    return max(accs, default=float("nan")), min(losses, default=float("nan"))


def throughput(tmp: Path, trials: int = 16) -> str:
    one_round = ["hydra/sweeper=coarse_to_fine",
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


def quality(tmp: Path, seeds: int) -> str:
    methods = {
        "coarse-to-fine preset": lambda s: ["hydra/sweeper=coarse_to_fine", f"hydra.sweeper.seed={s}"],
        "random search": lambda s: [
            "hydra/sweeper=coarse_to_fine", f"hydra.sweeper.seed={s}",
            "hydra.sweeper.rounds=[{trials:15,top_k:1,overrides:['trainer.epochs=3']}]",
        ],
        "Optuna TPE": lambda s: [
            "hydra/sweeper=optuna", "hydra.sweeper.n_trials=15", "hydra.sweeper.direction=maximize",
            f"hydra.sweeper.sampler.seed={s}", "trainer.epochs=3", *SPACE,
        ],
    }
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
    for seed in range(seeds):
        for name, args in methods.items():
            sweep_dir = tmp / f"{name.split()[0]}-{seed}"
            try:
                seconds = sweep(args(seed), sweep_dir)
            except SystemExit as exc:
                print(f"{name}: skipped ({str(exc).splitlines()[0]})")
                continue
            acc, loss = best_of(sweep_dir)
            results[name].append((acc, loss, seconds))
            print(f"seed {seed} {name:22s} best val acc {acc:.4f}  lowest val loss {loss:.4f}  {seconds:.0f} s",
                  flush=True)
    lines = ["| method (45 epochs) | median best val acc | median lowest val loss | median seconds | seeds |",
             "|---|---|---|---|---|"]
    for name, rows in results.items():
        if rows:
            acc, loss, sec = (statistics.median(col) for col in zip(*rows))
            lines.append(f"| {name} | {acc:.4f} | {loss:.4f} | {sec:.0f} | {len(rows)} |")
        else:
            lines.append(f"| {name} | not run (pip install hydra-optuna-sweeper) | | | 0 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--trials", type=int, default=16, help="trials in the throughput round (default: %(default)s)")
    results_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            write_results("sweep-throughput", f"Sweep throughput: a 1-epoch round of {args.trials} trials of the default run",
                          throughput(Path(tmp), args.trials), machine(), args.results)
        if not args.skip_quality:
            write_results("search-quality", f"Search quality at the same budget, median over {args.seeds} seeds",
                          quality(Path(tmp), args.seeds), machine(), args.results)


if __name__ == "__main__":
    main()
