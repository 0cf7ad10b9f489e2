"""Start-up: seconds from `python -m expt trainer.epochs=1` to the first training step, by phase.

Each phase is timed in a fresh interpreter (imports are only cold once): the whole command up to
the first step is measured from outside, and a breakdown script times the imports, Hydra's
composition, loading and splitting the data, and building the experiment (preprocessing fit, model,
init, optimizer). `-X importtime` on the whole command sums the import time by package.

    python bench/startup.py
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, write_results  # noqa: E402

BREAKDOWN = r"""
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import expt, expt.build, hydra
t2 = time.perf_counter()
cfg = expt.compose(["trainer.epochs=1"])
t3 = time.perf_counter()
data = expt.data.load(cfg.data)
t4 = time.perf_counter()
exp = expt.build.build(cfg, data=data)
t5 = time.perf_counter()
from expt.dashboard import Dashboard
import tempfile, pathlib
Dashboard(pathlib.Path(tempfile.mkdtemp()), exp.cfg)
t6 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
"""
PHASES = ["import torch", "import expt + hydra", "compose config", "load + split data",
          "build (preprocess, model, init, optimizer)", "TensorBoard writer"]


def first_step_seconds(tmp: Path) -> float:
    """Wall time of the CLI from launch to the end of epoch 0 set-up: it runs with epochs=0 (no step)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "expt", "trainer.epochs=0", f"hydra.run.dir={tmp}"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def imports_by_package(tmp: Path, n: int = 8) -> tuple[list[tuple[str, float]], float]:
    """Import seconds of the whole CLI run by top-level package (each module's own time, summed), and
    the cumulative import time of ``torch._dynamo``, which torch.optim's first optimizer imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "expt", "trainer.epochs=0",
                           f"hydra.run.dir={tmp}"], capture_output=True, text=True, check=True)
    own: dict[str, float] = {}
    dynamo = 0.0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if m:
            package = m.group(3).split(".")[0]
            own[package] = own.get(package, 0.0) + int(m.group(1)) / 1e6
            if m.group(3) == "torch._dynamo":
                dynamo = int(m.group(2)) / 1e6
    return sorted(own.items(), key=lambda kv: -kv[1])[:n], dynamo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh interpreters per measurement (default: %(default)s)")
    results_option(parser)
    args = parser.parse_args()
    reps = args.reps
    with tempfile.TemporaryDirectory() as tmp:
        totals = [first_step_seconds(Path(tmp) / str(i)) for i in range(reps)]
    phases = []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", BREAKDOWN], capture_output=True, text=True, check=True)
        phases.append([float(v) for v in out.stdout.split()])
    medians = [statistics.median(col) for col in zip(*phases)]
    lines = [f"`python -m expt trainer.epochs=0` (everything before the first step, then the initial "
             f"evaluation and exit): median {statistics.median(totals):.2f} s over {reps} runs.", "",
             "| phase (fresh interpreter) | seconds |", "|---|---|"]
    lines += [f"| {name} | {s:.3f} |" for name, s in zip(PHASES, medians)]
    with tempfile.TemporaryDirectory() as tmp:
        packages, dynamo = imports_by_package(Path(tmp))
    lines += ["", f"Import time of the whole command by package (each module's own time): "
              f"{sum(s for _, s in packages):.2f} s in these {len(packages)}. Of it, {dynamo:.2f} s is `torch._dynamo` "
              "and what it imports (sympy among them), which torch.optim imports when the first optimizer is made: "
              "a bare PyTorch loop pays it too.", "", "| package | seconds |", "|---|---|"]
    lines += [f"| {name} | {s:.3f} |" for name, s in packages]
    print("\n".join(lines))
    write_results("startup", "Start-up", "\n".join(lines), machine(), args.results)


if __name__ == "__main__":
    main()
