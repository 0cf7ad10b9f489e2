"""Cost of each batch augmentation, as a share of a training step, and expt's augmented step against a bare loop.

For 3x32x32 images at batch 512 (the CIFAR-10 preset's shape) and the ConvNet, eager and with
``trainer.amp=bf16``: the seconds one augmentation takes on a batch (on the device, drawing from a
generator, as the trainer calls it), the seconds of one training step (forward, backward, Adam),
and their ratio. Then an epoch of expt's Trainer with ``augmentation=[translate,hflip]`` against a
bare loop that draws the same augmentations and steps the same model, their epochs alternating;
the table gives the median ratio.

    python bench/augment.py                   # CPU
    python bench/augment.py --device cuda     # the GPU table
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, timed, write_results  # noqa: E402

import expt  # noqa: E402
from expt import augment  # noqa: E402
from expt.build import build, build_model  # noqa: E402
from expt.dashboard import Dashboard  # noqa: E402
from expt.trainer import Trainer  # noqa: E402

AUGMENTATIONS = {"translate (pad 4)": augment.Translate(pad=4, mode="zeros"), "hflip": augment.HorizontalFlip(),
                 "cutout (8x8)": augment.Cutout(size=8)}
QUIET = ["dashboard.update_ratio=false", "dashboard.histograms=false", "dashboard.filters=false",
         "dashboard.graph=false", "sanity.before_train=false", "regularization=none", "schedule=constant"]


def median_seconds(call, device, reps: int) -> float:
    call()  # warm-up
    return statistics.median(timed(call, device) for _ in range(reps))


def step_costs(device: torch.device, amp: bool, batch: int, reps: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model = build_model(expt.compose(["model=convnet"]), (3, 32, 32), 10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(10, (batch,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = median_seconds(step, device, reps)
    return [(name, median_seconds(lambda a=a: a(x, gen), device, reps), step_s) for name, a in AUGMENTATIONS.items()]


def epoch_ratio(device: torch.device, samples: int, epochs: int) -> tuple[float, float, float]:
    """Median seconds per epoch of expt (translate + hflip) and of a bare loop doing the same; their paired ratio."""
    cfg = expt.compose(["data=synthetic", "data.shape=[3,32,32]", f"data.num_samples={samples}",
                        "augmentation=[translate,hflip]", "augmentation.translate.pad=4", "trainer.batch_size=512",
                        f"trainer.device={device}", "trainer.label_smoothing=0", *QUIET])
    exp = build(cfg)
    run_dir = Path(tempfile.mkdtemp())
    dashboard = Dashboard(run_dir, cfg)
    trainer = Trainer.single(exp, run_dir, dashboard)
    trainer.begin()
    torch.manual_seed(0)
    model = build_model(cfg, exp.data.input_shape, exp.data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    x, y = exp.data.x_train, exp.data.y_train
    gen, aug = torch.Generator(device=device).manual_seed(0), torch.Generator(device=device).manual_seed(2)
    shifts = [augment.Translate(pad=4), augment.HorizontalFlip()]

    def bare_epoch() -> None:
        model.train()
        perm = torch.randperm(len(x), device=device, generator=gen)
        for i in range(0, len(x), 512):
            xb = x[perm[i:i + 512]]
            for a in shifts:
                xb = a(xb, aug)
            loss = F.cross_entropy(model(xb), y[perm[i:i + 512]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ours, bare = [], []
    bare_epoch()
    for _ in range(epochs):
        ours.append(timed(trainer.train_steps, device))
        bare.append(timed(bare_epoch, device))
    dashboard.close()
    return statistics.median(ours), statistics.median(bare), statistics.median(o / b for o, b in zip(ours, bare))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 1,024 samples, 2 epochs")
    results_option(parser)
    args = parser.parse_args()
    if args.quick:
        args.reps, args.samples, args.epochs = 3, 1024, 2
    device = torch.device(args.device)
    lines = ["| precision | augmentation | ms per batch of 512 | training step (ms) | share of the step |",
             "|---|---|---|---|---|"]
    for amp in (False, True):
        for name, aug_s, step_s in step_costs(device, amp, 512, args.reps):
            lines.append(f"| {'bf16' if amp else 'float32'} | {name} | {aug_s * 1e3:.2f} | {step_s * 1e3:.1f} "
                         f"| {aug_s / step_s:.1%} |")
    ours, bare, ratio = epoch_ratio(device, args.samples, args.epochs)
    lines += ["", "| epoch with translate + hflip | expt (s) | bare loop (s) | expt / bare (median of pairs) |",
              "|---|---|---|---|", f"| convnet, {args.samples} images 3x32x32, batch 512 | {ours:.3f} | {bare:.3f} "
              f"| {ratio:.3f} |"]
    print("\n".join(lines))
    write_results(f"augment-{device.type}", f"Augmentation cost on {device.type}", "\n".join(lines),
                  machine(args.device), args.results)


if __name__ == "__main__":
    main()
