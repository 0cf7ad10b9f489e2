"""Population training against the basic launcher: trials per minute, and memory per member.

For each model and population size N, N trials that differ in learning rate and seed are trained
two ways, each in a fresh process: one after another with ``expt.train`` (what the basic launcher
runs for each job, without its per-job Hydra overhead, so the basic side is if anything flattered),
and together with ``expt.population.train_population`` (what ``hydra/launcher=population`` runs
for a group; a group of one it trains alone, as the basic launcher would, and so does this benchmark). Both include their processes' one-time costs after the imports (data loading, the
first calls), and both write every run directory (events, checkpoints, metrics.json); the
TensorBoard diagnostics (histograms, filters, graph) are off on both sides, since they cost the
same per trial either way. The basic side's rate does not depend on N (its trials run one at a
time), so it is measured once per model on ``--basic-trials`` trials.

Each measurement runs in a fresh process with one CPU thread by default (``--threads``), after an
untimed warm-up of the path it times (one short trial for the basic side and a group of one, a population of
two otherwise), so the first calls' costs are not counted: a CUDA step captured as a graph has first calls of
its own, which a population's warm-up does not make.

A population's seconds are also given split in two, per member: building the members (``Population(...)``:
each one's config checked, model, optimizer, schedule and dashboard made) and the rest (training, testing
and writing each run directory), which shows how much of a member's cost is the host's work before the
first step.

Memory: the peak resident set of the process (CPU) or the peak CUDA allocation (GPU), divided by N.

    python bench/population.py                       # CPU, sizes 1, 4, 16
    python bench/population.py --device cuda --sizes 1 4 16 64
    python bench/population.py --quick               # 1 epoch, sizes 1 and 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, write_results  # noqa: E402

CASES = {  # name -> overrides
    "convnet / digits 1x8x8": ["model=convnet", "data=digits"],
    "convnet / synthetic 3x32x32": ["model=convnet", "data=synthetic", "data.shape=[3,32,32]",
                                    "data.num_samples=2000"],
}
COMMON = ["dashboard.histograms=false", "dashboard.filters=false", "dashboard.graph=false",
          "sanity.before_train=false"]


def configs(case: str, n: int, epochs: int, device: str):
    import expt

    rates = [10 ** (-3.5 + 1.5 * i / max(1, n - 1)) for i in range(n)]
    return [expt.compose([*CASES[case], *COMMON, f"trainer.epochs={epochs}", f"trainer.device={device}",
                          f"optimizer.lr={lr:.4g}", f"trainer.seed={i}"]) for i, lr in enumerate(rates)]


def worker(mode: str, case: str, n: int, epochs: int, device: str) -> dict:
    import torch

    import expt
    from expt.population import Population, train_population

    cfgs = configs(case, n, epochs, device)
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    alone = mode == "basic" or n == 1  # the launcher trains a group of one alone
    with tempfile.TemporaryDirectory() as tmp:  # the first calls of the path timed below, untimed on both sides
        warm = configs(case, 2, 1, device)
        if alone:
            expt.train(warm[0], run_dir=Path(tmp) / "warm")
        else:
            train_population(warm, [Path(tmp) / "w0", Path(tmp) / "w1"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / str(i) for i in range(n)]
        start = time.perf_counter()
        built = None  # seconds the population took to build its members
        if alone:
            metrics = [expt.train(cfg, run_dir=d) for cfg, d in zip(cfgs, dirs)]
        else:
            population = Population(cfgs, dirs)  # what train_population does, its two parts timed
            if cuda:
                torch.cuda.synchronize()
            built = time.perf_counter() - start
            metrics = population.fit()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "built": built, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "completed": sum(m["status"] == "completed" for m in metrics)}


def measure(mode: str, case: str, n: int, epochs: int, device: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--worker", mode, case, str(n), str(epochs), device],
                          capture_output=True, text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--basic-trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads per process (default 1)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--quick", action="store_true", help="1 epoch, sizes 1 and 2, 1 basic trial")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    results_option(parser)
    args = parser.parse_args()
    if args.worker:
        mode, case, n, epochs, device = args.worker
        print(json.dumps(worker(mode, case, int(n), int(epochs), device)))
        return
    if args.quick:
        args.epochs, args.sizes, args.basic_trials = 1, [1, 2], 1
    rows = ["| model | N | basic: trials/min | population: trials/min | speed-up | population: ms a member building "
            "/ training and ending | memory per member (MiB) | added per member (MiB) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    memory = "cuda_mib" if args.device.startswith("cuda") else "rss_mib"
    planned = len(args.cases) * len(args.sizes)
    for case in args.cases:
        basic = measure("basic", case, args.basic_trials, args.epochs, args.device, args.threads)
        basic_rate = 60 * args.basic_trials / basic["seconds"]
        print(f"{case}: basic {basic_rate:.1f} trials/min", flush=True)
        smallest = None  # (N, memory) of the smallest population: what each further member adds
        for n in sorted(args.sizes):
            pop = measure("population", case, n, args.epochs, args.device, args.threads)
            rate = 60 * n / pop["seconds"]
            per_member = pop[memory] / n
            smallest = smallest or (n, pop[memory])
            added = (pop[memory] - smallest[1]) / (n - smallest[0]) if n > smallest[0] else None
            print(f"{case}: N={n} population {rate:.1f} trials/min ({rate / basic_rate:.2f}x), "
                  f"{per_member:.0f} MiB per member", flush=True)
            split = "-" if pop["built"] is None else \
                f"{1000 * pop['built'] / n:.1f} / {1000 * (pop['seconds'] - pop['built']) / n:.1f}"
            rows.append(f"| {case} | {n} | {basic_rate:.1f} | {rate:.1f} | {rate / basic_rate:.2f}x | {split} "
                        f"| {per_member:.0f} | {'-' if added is None else f'{added:.1f}'} |")
            write_table(rows, planned, memory, args)  # while rows are to come, beside the last complete table


def write_table(rows: list[str], planned: int, memory: str, args: argparse.Namespace) -> None:
    """The section of the results file: the header and the rows measured (two header lines first); while rows are
    still to come, the section beside it of what is measured so far."""
    kind = "GPU: peak CUDA allocation" if memory == "cuda_mib" else "CPU: peak resident set of the process"
    body = (f"`python bench/population.py --device {args.device} --sizes {' '.join(map(str, args.sizes))} "
            f"--epochs {args.epochs} --threads {args.threads}`: trials of {args.epochs} epochs (batch 64, Adam, "
            f"the default regularization l2 + batch norm), differing in learning rate and seed. A population's "
            f"seconds split into building its members and the rest (training, testing, writing each run), per "
            f"member; a group of one trains alone. Memory per member: "
            f"{kind} divided by N (the process's own baseline included, so it falls with N), and what each member "
            f"adds over the smallest population.\n\n" + "\n".join(rows))
    so_far = len(rows) - 2 < planned
    body += f"\n\n{len(rows) - 2} of {planned} measured." * so_far
    write_results(f"population-{'gpu' if memory == 'cuda_mib' else 'cpu'}", f"Population training ({args.device})",
                  body, machine(args.device), args.results, so_far=so_far)


if __name__ == "__main__":
    main()
