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
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, write_results  # noqa: E402

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


def run(overrides: list[str], seed: int, run_dir: Path, extra: list[str], deadline: float, stop: float) -> dict:
    if time.time() > deadline:
        print(f"  not started (past --deadline): {run_dir}", flush=True)
        return {"_status": "not started"}
    command = [sys.executable, "-m", "expt", *overrides, f"trainer.seed={seed}", *extra,
               f"hydra.run.dir={run_dir}", "hydra.job.chdir=false"]
    try:
        left = None if stop == float("inf") else max(1.0, stop - time.time())
        proc = subprocess.run(command, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        print(f"  stopped (past --stop-after): {run_dir}", flush=True)
        return {"_status": "stopped before its end"}
    metrics_file = run_dir / "metrics.json"
    if proc.returncode != 0 or not metrics_file.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  FAILED {run_dir}: {' | '.join(tail)}", flush=True)
        return {"_status": "failed"}
    m = json.loads(metrics_file.read_text())
    print(f"  {run_dir.parent.name} seed {seed}: test {100 * (m['test_acc'] or 0):.2f}%  "
          f"val {100 * (m['best_val_acc'] or 0):.2f}%  {m['seconds']:.0f} s", flush=True)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=3, help="runs at once (default: %(default)s)")
    parser.add_argument("--only", action="append", help="candidates whose name contains this (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("outputs/presets"), help="where the runs go")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds after which no further run starts (the table keeps what finished)")
    parser.add_argument("--stop-after", type=float, default=float("inf"),
                        help="seconds after which runs still going are stopped (the table keeps what finished)")
    results_option(parser)
    args = parser.parse_args()
    extra = ["data.subset=2000", "trainer.epochs=1"] if args.quick else []
    names = [n for n in CANDIDATES if not args.only or any(o in n for o in args.only)]
    jobs = [(n, s) for n in names for s in args.seeds]
    start = time.time()
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda job: run(CANDIDATES[job[0]], job[1],
                                             args.out / f"{names.index(job[0]):02d}" / str(job[1]), extra,
                                             start + args.deadline, start + args.stop_after), jobs))
    results: dict[str, list[dict]] = {n: [] for n in names}
    unfinished: dict[str, list[str]] = {n: [] for n in names}
    for (name, _), metrics in zip(jobs, done):
        if "_status" in metrics:
            unfinished[name].append(metrics["_status"])
        else:
            results[name].append(metrics)
    table = ["| candidate | seeds | test accuracy, median (min - max) | val accuracy, median | seconds a run, median "
             "| epochs |", "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        if not runs:
            table.append(f"| {name} | 0 | {', '.join(sorted(set(unfinished[name])))} | | | |")
            continue
        test = [100 * r["test_acc"] for r in runs]
        val = [100 * r["best_val_acc"] for r in runs]
        table.append(f"| {name} | {len(runs)} | {statistics.median(test):.2f}% ({min(test):.2f} - {max(test):.2f}) "
                     f"| {statistics.median(val):.2f}% | {statistics.median(r['seconds'] for r in runs):.0f} "
                     f"| {runs[0]['epochs_completed']} |")
    print("\n".join(table))
    print(f"{len(jobs)} runs in {time.time() - start:.0f} s")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    write_results(f"presets-{device}{'-quick' if args.quick else ''}",
                  f"Fashion-MNIST presets on the full data ({len(args.seeds)} seeds, {args.parallel} runs at once)"
                  if not args.quick else "Fashion-MNIST presets, quick check (1 epoch, 2,000 images)",
                  "\n".join(table), machine(device), args.results)


if __name__ == "__main__":
    main()
