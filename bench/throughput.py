"""Training throughput (images/second) of expt's step loop and of a bare loop, eager / compiled / amp.

The convnet and the deep convnet on synthetic 3x32x32 data at batch 64 and 512. Both sides run
only training steps over the same tensors on the device (no evaluation). Each first runs one
warm-up epoch, which holds torch.compile's compilation (expt's from cold caches); then their
epochs alternate, and the table gives the median images per second of each. The compile warm-up
is the one expt measures (`compile_warmup_seconds` in metrics.json: the compiling steps, left out
of its epoch times); the first compiled configuration also pays torch.compile's once-per-process
start.

    python bench/throughput.py --device cuda          # the GPU table
    python bench/throughput.py --device cpu --quick   # a smoke run of the same code on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch._dynamo
import torch.nn.functional as F
from torch._inductor.utils import fresh_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, timed, write_results  # noqa: E402

import expt  # noqa: E402
from expt.dashboard import Dashboard  # noqa: E402
from expt.build import build, build_model  # noqa: E402
from expt.trainer import Trainer  # noqa: E402

MODELS = {"convnet": ["model=convnet"], "deep_convnet": ["model=deep_convnet"]}
MODES = {  # expt captures its step as a CUDA graph by default on CUDA (trainer.cuda_graph=auto)
    "eager": [],
    "eager, not captured": ["trainer.cuda_graph=false"],
    "compiled": ["trainer.compile=true"],
    "channels last": ["trainer.channels_last=true"],  # float32: the memory format's own share of amp bf16's gain
    "amp bf16": ["trainer.amp=bf16", "trainer.channels_last=true"],
    "compiled + amp bf16": ["trainer.compile=true", "trainer.amp=bf16", "trainer.channels_last=true"],
}


def bare_side(cfg, data) -> Callable[[], None]:
    """A hand-written loop's epoch over the tensors, returned after one warm-up epoch (the compilation)."""
    torch.manual_seed(0)
    device = data.x_train.device
    model = build_model(cfg, data.input_shape, data.num_classes).to(device)
    x, y, bs = data.x_train, data.y_train, cfg.trainer.batch_size
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.trainer.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    amp = cfg.trainer.amp == "bf16"
    gen = torch.Generator(device=device).manual_seed(0)
    smoothing = cfg.trainer.label_smoothing

    def epoch() -> None:
        perm = torch.randperm(len(x), device=device, generator=gen)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            with torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                loss = F.cross_entropy(step_model(x[idx]).float(), y[idx], label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()
    return epoch


def expt_side(cfg, data, run_dir: Path) -> tuple[Callable[[], None], float, Callable[[], None]]:
    """expt's step loop (Trainer.train_steps, events included), after one warm-up epoch.

    Returns the epoch, the compile warm-up that expt measured and leaves out of its epoch times,
    and the call that closes its event file.
    """
    exp = build(cfg, data=data)
    dashboard = Dashboard(run_dir, exp.cfg)
    trainer = Trainer.single(exp, run_dir, dashboard)
    dashboard.start(exp, trainer.record.train_eval_idx[: cfg.trainer.batch_size])
    timed(trainer.train_steps, exp.device)
    return trainer.train_steps, trainer.engine.warmup_seconds, dashboard.close


def images_per_second(cfg, data, epochs: int) -> dict[str, float]:
    """Both sides set up and warmed up, then their epochs alternate; median images per second of each."""
    device = torch.device(cfg.trainer.device)
    with tempfile.TemporaryDirectory() as tmp:
        # expt compiles from empty caches: dynamo's (whose guards would let the same architecture
        # reuse an earlier configuration's graphs) and inductor's, in memory and on disk. What is
        # compiled stays loaded for the timed epochs; the bare loop may reuse it.
        torch._dynamo.reset()
        with fresh_cache():
            ours, warmup, close = expt_side(cfg, data, Path(tmp))
            bare = bare_side(cfg, build(cfg, data=data).data)
        times: dict[str, list[float]] = {"expt": [], "bare": []}
        for i in range(epochs):
            order = (("bare", bare), ("expt", ours)) if i % 2 == 0 else (("expt", ours), ("bare", bare))
            for side, epoch in order:
                times[side].append(timed(epoch, device))
        close()
    n = len(data.y_train)
    return {"expt": n / statistics.median(times["expt"]), "bare": n / statistics.median(times["bare"]), "warmup": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,024 samples, eager and amp only, batch 64")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="these modes only (default: all)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="these models only (default: all)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    results_option(parser)
    args = parser.parse_args()
    modes, batches = MODES, tuple(args.batches)
    if args.modes:
        modes = {k: MODES[k] for k in args.modes}
    if args.quick:
        args.samples, args.epochs = 1024, 2
        modes, batches = {k: MODES[k] for k in ("eager", "amp bf16")}, (64,)
    if torch.device(args.device).type != "cuda":  # nothing is captured off CUDA
        modes = {k: v for k, v in modes.items() if "trainer.cuda_graph=false" not in v}

    rows = []
    for model, model_overrides in MODELS.items():
        if args.models and model not in args.models:
            continue
        for batch in batches:
            for mode, mode_overrides in modes.items():
                cfg = expt.compose([
                    *model_overrides, *mode_overrides, "data=synthetic", "data.shape=[3,32,32]",
                    f"data.num_samples={args.samples}", f"trainer.batch_size={batch}", "regularization=none",
                    f"trainer.device={args.device}", "sanity.before_train=false",
                    # the step loop alone: per-epoch diagnostics are measured in overhead.py
                    "dashboard.update_ratio=false", "dashboard.histograms=false", "dashboard.filters=false",
                    "dashboard.graph=false",
                ])
                data = expt.data.load(cfg.data)
                r = images_per_second(cfg, data, args.epochs)
                ours, bare = r["expt"], r["bare"]
                compiled = f"{r['warmup']:.1f}" if cfg.trainer.compile or r["warmup"] else "-"
                rows.append((model, batch, mode, bare, ours, compiled))
                print(f"{model:13s} batch {batch:4d} {mode:20s} bare {bare:10.0f} img/s   expt {ours:10.0f} img/s"
                      f"   expt/bare {ours / bare:5.3f}   warm-up (s) {compiled}", flush=True)

    table = ["| model | batch | mode | bare loop (img/s) | expt (img/s) | expt / bare | compile or capture (s) |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {m} | {b} | {mode} | {bare:.0f} | {ours:.0f} | {ours / bare:.3f} | {compiled} |"
              for m, b, mode, bare, ours, compiled in rows]
    write_results(f"throughput-{torch.device(args.device).type}",
                  f"Training throughput on {args.device} ({args.samples} samples, median of {args.epochs} "
                  "alternating epochs a side)",
                  "\n".join(table), machine(args.device), args.results)


if __name__ == "__main__":
    main()
