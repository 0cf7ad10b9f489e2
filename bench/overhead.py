"""expt's trainer against a bare PyTorch loop: same model, data, batch size, optimizer and epochs.

Both sides get the same preprocessed tensors on the same device and a model built and initialised
the same way; the bare loop is what a user following the recipe would write by hand: the loss at
init, a permutation per epoch, index slices, Adam, per epoch the validation loss/accuracy plus the
training accuracy on a 1,000-sample subsample (gathered once), and the test accuracy once at the
end (what expt measures). expt's side is its own `Trainer.fit` taken apart into the calls `fit`
makes, `begin`, `train_epoch` per epoch and `end`: TensorBoard events, checkpoints (at the
default interval, and after every epoch as a third variant), the best-model copy, the divergence
check, the log line.

The two sides run side by side in one process and alternate epoch by epoch (which goes first
swaps every epoch), several runs of each. On a shared or throttled machine the speed of the same
loop drifts by 10-20% over seconds; epochs a few milliseconds apart see the same machine. The table
reports the median seconds per epoch of each side, the median of the paired per-epoch ratios with
their middle half, what expt adds once per run (begin and end: the Trainer and the event file, the
loss at init, the dashboard's start, the last checkpoint, the test evaluation, against the bare
loop's loss at init and test evaluation), the ratio of whole runs, the largest relative difference
between the two sides' validation losses, and the peak memory of the process that ran both sides.

    python bench/overhead.py                  # CPU cases
    python bench/overhead.py --device cuda    # the same on a GPU
    python bench/overhead.py --quick          # fewer runs and epochs
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, timed, write_results  # noqa: E402

import expt  # noqa: E402
from expt import augment  # noqa: E402
from expt.dashboard import Dashboard  # noqa: E402
from expt.build import build, build_model  # noqa: E402
from expt.predict import loss_and_accuracy  # noqa: E402
from expt.trainer import Trainer  # noqa: E402

CASES = {  # name -> (overrides, epochs a run, runs): the 1.5 s epochs of the deep ConvNet need fewer
    "convnet / digits": (["model=convnet", "data=digits"], 20, 7),
    "mlp / synthetic 3x16x16": (["model=mlp", "data=synthetic", "data.num_samples=4000"], 20, 7),
    "deep_convnet / synthetic 3x32x32": (
        ["model=deep_convnet", "data=synthetic", "data.shape=[3,32,32]", "data.num_samples=2000"], 3, 3,
    ),
    # the Fashion-MNIST preset's model, batch, flips and 2-pixel shifts, on a 10,000-image slice
    "fashion_mnist preset / 10k slice": (
        ["experiment=fashion_mnist_convnet", "data.subset=10000", "trainer.ema=0", "regularization=[batchnorm]",
         "optimizer.lr=1e-3"], 5, 3,  # constant 1e-3: the preset's peak 3e-3 is safe only after its warm-up
    ),
}
NEEDS_FASHION_MNIST = {"fashion_mnist preset / 10k slice"}
# The same arithmetic on both sides: no penalty, constant learning rate.
COMMON = ["regularization=none", "schedule=constant", "trainer.batch_size=64", "sanity.before_train=false"]
DIAGNOSTICS_OFF = ["dashboard.update_ratio=false", "dashboard.histograms=false", "dashboard.filters=false",
                   "dashboard.graph=false"]
VARIANTS = {  # label -> overrides on top of the case
    "defaults": [],
    "diagnostics off": DIAGNOSTICS_OFF,
    "diagnostics off, checkpoint every epoch": [*DIAGNOSTICS_OFF, "trainer.checkpoint_interval=0"],
}


class BareLoop:
    """A hand-written loop over the same tensors, in the three parts of a run.

    It draws the batch order and the training-accuracy subsample from the same seeds as expt's
    Trainer and evaluates in the same order, so both sides compute the same numbers the same way
    (the benchmark checks the validation losses): the timings then compare the same arithmetic,
    down to data-dependent kernel speeds.
    """

    def __init__(self, cfg, data):
        device, seed = data.x_train.device, cfg.trainer.seed
        torch.manual_seed(seed)
        self.model = build_model(cfg, data.input_shape, data.num_classes).to(device, data.x_train.dtype)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.lr)
        self.data, self.bs, self.smoothing = data, cfg.trainer.batch_size, cfg.trainer.label_smoothing
        self.gen = torch.Generator(device=device).manual_seed(seed)
        # the preset's augmentations, drawn from the stream expt seeds the same way
        self.augmentations = augment.build(cfg.get("augmentation"))
        self.augment_gen = torch.Generator(device=device).manual_seed(seed + 2)
        picker = torch.Generator().manual_seed(seed + 1)
        self.sub = torch.randperm(len(data.x_train), generator=picker)[: cfg.trainer.train_eval_samples].to(device)
        self.val_loss = float("nan")

    def begin(self) -> None:
        self.x_sub, self.y_sub = self.data.x_train[self.sub], self.data.y_train[self.sub]
        loss_and_accuracy(self.model, self.x_sub, self.y_sub)  # loss at init

    def epoch(self) -> None:
        x, y, bs, model, opt = self.data.x_train, self.data.y_train, self.bs, self.model, self.opt
        model.train()
        perm = torch.randperm(len(x), device=x.device, generator=self.gen)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            xb = x[idx]
            for transform in self.augmentations:
                xb = transform(xb, self.augment_gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=self.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        # in expt's order: how an epoch ends changes the speed of the next one, here the other side's
        # (evaluating the subsample last made the epochs after it 2-3% slower on the digits ConvNet)
        loss_and_accuracy(model, self.x_sub, self.y_sub)
        self.val_loss, _ = loss_and_accuracy(model, self.data.x_val, self.data.y_val)

    def end(self) -> None:
        loss_and_accuracy(self.model, self.data.x_test, self.data.y_test)


class ExptRun:
    """expt's Trainer over the same tensors: the calls Trainer.fit makes, one at a time.

    Building the experiment (data on the device, model, optimizer) is left out, as the bare loop's
    model and optimizer are; making the Trainer and the Dashboard (the event file and its writer
    thread) counts in expt's per-run cost.
    """

    def __init__(self, cfg, data, run_dir: Path):
        self.exp, self.run_dir = build(cfg, data=data), run_dir

    def begin(self) -> None:
        self.dashboard = Dashboard(self.run_dir, self.exp.cfg)
        self.trainer = Trainer.single(self.exp, self.run_dir, self.dashboard)
        self.trainer.begin()

    def epoch(self) -> None:
        assert self.trainer.train_epoch(), "the benchmark's run diverged"

    def end(self) -> None:
        self.trainer.end()
        self.dashboard.close()


def fashion_mnist_found() -> bool:
    try:
        expt.data.load(expt.compose(["data=fashion_mnist", "data.download=false"]).data)
    except Exception:  # noqa: BLE001 - any reason the files cannot be read: the case is skipped
        return False
    return True


def run_pair(cfg, data, epochs: int, run_dir: Path, bare_first: bool) -> tuple[dict[str, list[float]], dict, float]:
    """One run of each side, alternating: both begin, then epoch by epoch (who goes first swaps), then both end.

    Returns the seconds of each side's epochs and of its begin and end, expt's time in each diagnostic,
    and the largest relative difference between the two sides' validation losses.
    """
    device = torch.device(cfg.trainer.device)
    bare, ours = BareLoop(cfg, build(cfg, data=data).data), ExptRun(cfg, data, run_dir)
    times: dict[str, list[float]] = {"bare_epochs": [], "expt_epochs": [], "bare_fixed": [], "expt_fixed": []}
    sides = [("bare", bare), ("expt", ours)]
    deviation = 0.0
    for part in ("begin", "epochs", "end"):
        for i in range(epochs if part == "epochs" else 1):
            first = bare_first == (i % 2 == 0)
            for side, loop in sides if first else sides[::-1]:
                call = loop.epoch if part == "epochs" else getattr(loop, part)
                seconds = timed(call, device)
                times[f"{side}_{'epochs' if part == 'epochs' else 'fixed'}"].append(seconds)
            if part == "epochs":
                theirs = ours.trainer.record.history[-1]["val_loss"]
                deviation = max(deviation, abs(theirs - bare.val_loss) / abs(bare.val_loss))
    return times, dict(ours.dashboard.seconds), deviation


def run_case(name: str, label: str, device: str, epochs: int, reps: int) -> dict:
    """One case in this process: per-epoch and per-run seconds of each side, their ratios, peak host and GPU memory."""
    overrides = CASES[name][0]
    common = COMMON
    if name in NEEDS_FASHION_MNIST:  # the preset's own batch size and batch norm (still no penalty)
        common = [c for c in COMMON if not c.startswith(("regularization=", "trainer.batch_size="))]
    cfg = expt.compose([*overrides, *common, *VARIANTS[label], f"trainer.device={device}",
                        f"trainer.epochs={epochs}"])
    data = expt.data.load(cfg.data)
    runs, spent, deviations = [], [], []
    for rep in range(reps + 1):  # the first is a warm-up (allocator, kernels, lazy imports)
        with tempfile.TemporaryDirectory() as tmp:
            times, in_diagnostics, deviation = run_pair(cfg, data, epochs, Path(tmp), bare_first=rep % 2 == 0)
        if rep:
            runs.append(times)
            spent.append(in_diagnostics)
            deviations.append(deviation)
    per_epoch = [e / b for r in runs for b, e in zip(r["bare_epochs"], r["expt_epochs"])]
    per_run = [(sum(r["expt_epochs"]) + sum(r["expt_fixed"])) / (sum(r["bare_epochs"]) + sum(r["bare_fixed"]))
               for r in runs]
    quartiles = statistics.quantiles(per_epoch, n=4) if len(per_epoch) > 1 else per_epoch * 3
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    diagnostics = {key: statistics.median(d.get(key, 0.0) / epochs for d in spent) for key in spent[0]}
    return {
        "bare": statistics.median(t for r in runs for t in r["bare_epochs"]),
        "expt": statistics.median(t for r in runs for t in r["expt_epochs"]),
        "ratio": statistics.median(per_epoch), "ratio_q1": quartiles[0], "ratio_q3": quartiles[2],
        "extra_per_run": statistics.median(sum(r["expt_fixed"]) - sum(r["bare_fixed"]) for r in runs),
        "run_ratio": statistics.median(per_run), "reps": reps, "epochs": epochs,
        "deviation": max(deviations),
        "rss_mib": rss, "gpu_mib": gpu, "diagnostics": diagnostics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, help="epochs a run (default: each case's own, 20 or 3)")
    parser.add_argument("--reps", type=int, help="runs of each side (default: each case's own, 7 or 3)")
    parser.add_argument("--quick", action="store_true", help="2 runs of 3 epochs")
    parser.add_argument("--only", action="append", choices=list(CASES), help="run this case only (repeatable)")
    results_option(parser)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # run one case here and print its JSON
    parser.add_argument("--label", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.epochs = 2, 3
    if args.case:
        _, epochs, reps = CASES[args.case]
        print(json.dumps(run_case(args.case, args.label, args.device, args.epochs or epochs, args.reps or reps)))
        return

    names = [n for n in args.only or CASES if n not in NEEDS_FASHION_MNIST or fashion_mnist_found()]
    for name in [n for n in args.only or CASES if n not in names]:
        print(f"{name}: skipped, the Fashion-MNIST files are not installed (see the README's data section)")
    rows: list[tuple[str, str, dict]] = []
    failed: list[str] = []
    planned = len(names) * len(VARIANTS)
    for name in names:
        for label in VARIANTS:
            # each case in a fresh process, so its peak memory is its own
            command = [sys.executable, __file__, "--case", name, "--label", label, "--device", args.device]
            command += [f"--epochs={args.epochs}"] * bool(args.epochs) + [f"--reps={args.reps}"] * bool(args.reps)
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:  # say why, and measure the other cases
                why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                failed.append(f"{name}, {label}: {why[0]}")
                print(f"{name:34s} {label:40s} FAILED: {why[0]}", flush=True)
            else:
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append((name, label, r))
                gpu = f"   GPU {r['gpu_mib']:.0f} MiB" if r["gpu_mib"] is not None else ""
                print(f"{name:34s} {label:40s} bare {r['bare'] * 1e3:8.1f} ms/epoch   expt {r['expt'] * 1e3:8.1f} "
                      f"ms/epoch   ratio {r['ratio']:5.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})   "
                      f"per run +{r['extra_per_run'] * 1e3:.1f} ms, whole runs {r['run_ratio']:.3f}   "
                      f"val loss deviation {r['deviation']:.1e}   "
                      f"peak RSS {r['rss_mib']:.0f} MiB{gpu}", flush=True)
            if len(rows) + len(failed) < planned:  # a run a time limit stops keeps what it measured
                write_table(rows, failed, planned, args)
    write_table(rows, failed, planned, args)
    if failed:
        raise SystemExit(1)


def write_table(rows: list[tuple[str, str, dict]], failed: list[str], planned: int, args: argparse.Namespace) -> None:
    """The section of the results file: a row per measured case and variant, the diagnostics' times, and a line
    for each that failed; while cases are still to come, the section beside it of what is measured so far."""
    table = ["| case | dashboards | runs | bare loop (ms/epoch) | expt (ms/epoch) | ratio per epoch | middle half "
             "| expt's extra per run (ms) | ratio of whole runs | val loss deviation | peak RSS, both sides (MiB) "
             "| GPU max allocated, both sides (MiB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, lab, r in rows:
        gpu = f"{r['gpu_mib']:.0f}" if r["gpu_mib"] is not None else "-"
        table.append(f"| {n} | {lab} | {r['reps']} x {r['epochs']} epochs | {r['bare'] * 1e3:.1f} | {r['expt'] * 1e3:.1f} "
                     f"| {r['ratio']:.3f} | {r['ratio_q1']:.3f} - {r['ratio_q3']:.3f} | {r['extra_per_run'] * 1e3:.1f} "
                     f"| {r['run_ratio']:.3f} | {r['deviation']:.1e} | {r['rss_mib']:.0f} | {gpu} |")
    names = ("histograms", "filters", "update_ratio", "graph", "summary")
    table += ["", "Time in each diagnostic, ms per epoch of the default dashboards (`Dashboard.seconds`; graph and "
              "summary are written once per run, spread here over its epochs):", "",
              "| case | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for n, lab, r in rows:
        if lab == "defaults":
            table.append(f"| {n} | " + " | ".join(f"{r['diagnostics'].get(k, 0) * 1e3:.2f}" for k in names) + " |")
    table += [""] * bool(failed) + [f"- failed: {f}" for f in failed]
    so_far = len(rows) + len(failed) < planned
    table += ["", f"{len(rows) + len(failed)} of {planned} measured."] * so_far
    write_results(
        f"overhead-{torch.device(args.device).type}",
        f"Trainer overhead on {args.device} (epochs alternating with a bare loop's, median)",
        "\n".join(table), machine(args.device), args.results, so_far=so_far,
    )


if __name__ == "__main__":
    main()
