"""expt's trainer against a bare PyTorch loop: same model, data, batch size, optimizer and epochs.

Both sides get the same preprocessed tensors on the same device and a model built and initialised
the same way; the bare loop is what a user following the recipe would write by hand: the loss at
init, a permutation per epoch, index slices, Adam, per epoch the validation loss/accuracy plus the
training accuracy on a 1,000-sample subsample, and the test accuracy once at the end (what expt
measures). expt's side is the whole `Trainer.fit`: TensorBoard events, checkpoints (at the default
interval, and after every epoch as a third variant), the divergence check.

Each repetition times one run of each side back to back (bare first in even repetitions, expt
first in odd ones) and takes their ratio; the table reports the median seconds per epoch of each
side, the median of those paired ratios and the middle half of them. Pairing matters on a shared
or throttled machine, where the speed of the same loop drifts by 10-20% over seconds: each ratio
compares two runs a second apart.

    python bench/overhead.py                  # CPU cases
    python bench/overhead.py --device cuda    # the same on a GPU
    python bench/overhead.py --quick          # fewer repetitions and epochs
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, sync, write_results  # noqa: E402

import expt  # noqa: E402
from expt.dashboard import Dashboard  # noqa: E402
from expt.trainer import Trainer, build, build_model, evaluate  # noqa: E402

CASES = {  # name -> (overrides, epochs a run, repetitions): the 1.7 s epochs of the deep ConvNet need fewer
    "convnet / digits": (["model=convnet", "data=digits"], 10, 15),
    "mlp / synthetic 3x16x16": (["model=mlp", "data=synthetic", "data.num_samples=4000"], 10, 15),
    "deep_convnet / synthetic 3x32x32": (
        ["model=deep_convnet", "data=synthetic", "data.shape=[3,32,32]", "data.num_samples=2000"], 3, 5,
    ),
}
# The same arithmetic on both sides: no penalty, constant learning rate.
COMMON = ["regularization=none", "schedule=constant", "trainer.batch_size=64", "sanity.before_train=false"]
DIAGNOSTICS_OFF = ["dashboard.update_ratio=false", "dashboard.histograms=false", "dashboard.filters=false",
                   "dashboard.graph=false"]
VARIANTS = {  # label -> overrides on top of the case
    "defaults": [],
    "diagnostics off": DIAGNOSTICS_OFF,
    "diagnostics off, checkpoint every epoch": [*DIAGNOSTICS_OFF, "trainer.checkpoint_interval=0"],
}


def bare_loop(cfg, data, epochs: int) -> float:
    """Seconds per epoch of a hand-written loop over the same tensors."""
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, data.input_shape, data.num_classes).to(data.x_train.device, data.x_train.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    x, y, bs = data.x_train, data.y_train, cfg.trainer.batch_size
    gen = torch.Generator(device=x.device).manual_seed(0)
    sub = torch.randperm(len(x), device=x.device, generator=gen)[:1000]
    sync(x.device)
    start = time.perf_counter()
    x_sub, y_sub = x[sub], y[sub]  # the training-accuracy subsample, gathered once
    evaluate(model, x_sub, y_sub)  # loss at init
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), device=x.device, generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        evaluate(model, data.x_val, data.y_val)
        evaluate(model, x_sub, y_sub)
    evaluate(model, data.x_test, data.y_test)
    sync(x.device)
    return (time.perf_counter() - start) / epochs


def expt_loop(cfg, data, epochs: int) -> tuple[float, dict[str, float]]:
    """Seconds per epoch of expt's Trainer.fit, events and checkpoints included, and of each diagnostic in it."""
    exp = build(cfg, data=data)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(exp, Path(tmp))
        dashboard = Dashboard(Path(tmp), exp.cfg)
        sync(exp.device)
        start = time.perf_counter()
        trainer.fit(dashboard)
        sync(exp.device)
        seconds = (time.perf_counter() - start) / epochs
        dashboard.close()
    return seconds, {name: spent / epochs for name, spent in dashboard.seconds.items()}


def run_case(name: str, label: str, device: str, epochs: int, reps: int) -> dict:
    """One case in this process: per-epoch seconds of each side, their paired ratios, peak host and GPU memory."""
    overrides = CASES[name][0]
    cfg = expt.compose([*overrides, *COMMON, *VARIANTS[label], f"trainer.device={device}", f"trainer.epochs={epochs}"])
    data = expt.data.load(cfg.data)
    bare_loop(cfg, build(cfg, data=data).data, 1)  # warm-up: allocator, kernels
    expt_loop(cfg, data, 1)
    bare, ours, ratios, diagnostics = [], [], [], {}
    for rep in range(reps):
        first_bare = rep % 2 == 0
        if first_bare:
            bare.append(bare_loop(cfg, build(cfg, data=data).data, epochs))
        seconds, spent = expt_loop(cfg, data, epochs)
        ours.append(seconds)
        if not first_bare:
            bare.append(bare_loop(cfg, build(cfg, data=data).data, epochs))
        ratios.append(ours[-1] / bare[-1])
        for key, value in spent.items():
            diagnostics.setdefault(key, []).append(value)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"bare": statistics.median(bare), "expt": statistics.median(ours), "ratio": statistics.median(ratios),
            "ratio_q1": quartiles[0], "ratio_q3": quartiles[2], "reps": reps, "epochs": epochs,
            "rss_mib": rss, "gpu_mib": gpu,
            "diagnostics": {key: statistics.median(values) for key, values in diagnostics.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, help="epochs a run (default: each case's own, 10 or 3)")
    parser.add_argument("--reps", type=int, help="repetitions (default: each case's own, 15 or 5)")
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 2 epochs")
    parser.add_argument("--only", action="append", choices=list(CASES), help="run this case only (repeatable)")
    results_option(parser)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # run one case here and print its JSON
    parser.add_argument("--label", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.epochs = 3, 2
    if args.case:
        _, epochs, reps = CASES[args.case]
        print(json.dumps(run_case(args.case, args.label, args.device, args.epochs or epochs, args.reps or reps)))
        return

    rows = []
    for name in args.only or CASES:
        for label in VARIANTS:
            # each case in a fresh process, so its peak memory is its own
            command = [sys.executable, __file__, "--case", name, "--label", label, "--device", args.device]
            command += [f"--epochs={args.epochs}"] * bool(args.epochs) + [f"--reps={args.reps}"] * bool(args.reps)
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            rows.append((name, label, r))
            gpu = f"   GPU {r['gpu_mib']:.0f} MiB" if r["gpu_mib"] is not None else ""
            print(f"{name:34s} {label:40s} bare {r['bare'] * 1e3:8.1f} ms/epoch   expt {r['expt'] * 1e3:8.1f} "
                  f"ms/epoch   ratio {r['ratio']:5.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})   "
                  f"peak RSS {r['rss_mib']:.0f} MiB{gpu}", flush=True)

    table = ["| case | dashboards | runs | bare loop (ms/epoch) | expt (ms/epoch) | ratio | middle half of the ratios "
             "| peak RSS (MiB) | GPU max allocated (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for n, lab, r in rows:
        gpu = f"{r['gpu_mib']:.0f}" if r["gpu_mib"] is not None else "-"
        table.append(f"| {n} | {lab} | {r['reps']} x {r['epochs']} epochs | {r['bare'] * 1e3:.1f} | {r['expt'] * 1e3:.1f} "
                     f"| {r['ratio']:.3f} | {r['ratio_q1']:.3f} - {r['ratio_q3']:.3f} | {r['rss_mib']:.0f} | {gpu} |")
    names = ("histograms", "filters", "update_ratio", "graph", "summary")
    table += ["", "Time in each diagnostic, ms per epoch of the default dashboards (`Dashboard.seconds`; graph and "
              "summary are written once per run, spread here over its epochs):", "",
              "| case | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for n, lab, r in rows:
        if lab == "defaults":
            table.append(f"| {n} | " + " | ".join(f"{r['diagnostics'].get(k, 0) * 1e3:.2f}" for k in names) + " |")
    write_results(
        f"overhead-{torch.device(args.device).type}",
        f"Trainer overhead on {args.device} (paired runs, median)",
        "\n".join(table), machine(args.device), args.results,
    )


if __name__ == "__main__":
    main()
