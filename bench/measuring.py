"""Seconds to measure a split (the validation accuracy every epoch, an evaluation's views): batch sizes compared.

expt runs a model over a split in batches of ``expt.predict.eval_batch(device)`` samples. For each
shipped model on its dataset's image shape, this times ``expt.predict.logits`` over the same tensor at
expt's batch and at fixed batches from 32 to 2048, the sizes alternating (which goes first rotates
every repetition), and gives the median seconds of each and expt's batch against the fastest and
against 2048, the batch every device used before.

    python bench/measuring.py                  # CPU
    python bench/measuring.py --device cuda    # the GPU table
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, results_option, timed, write_results  # noqa: E402

import expt  # noqa: E402
from expt.build import build_model  # noqa: E402
from expt.predict import eval_batch, logits  # noqa: E402

CASES = {  # name: (overrides, image shape)
    "digits MLP": (["model=mlp"], (1, 8, 8)),
    "digits ConvNet": (["model=convnet"], (1, 8, 8)),
    "Fashion-MNIST ConvNet preset": (["experiment=fashion_mnist_convnet"], (1, 28, 28)),
    "Fashion-MNIST ResNet preset": (["experiment=fashion_mnist_resnet"], (1, 28, 28)),
    "CIFAR-10 ResNet-20 preset": (["experiment=cifar10_resnet"], (3, 32, 32)),
}
BATCHES = (2048, 512, 128, 64, 32)


def measure(overrides: list[str], shape: tuple[int, ...], device: torch.device, samples: int,
            reps: int) -> dict[int, float]:
    """Median seconds of ``logits`` over ``samples`` random images at each batch size (expt's included)."""
    torch.manual_seed(0)
    model = build_model(expt.compose(overrides), shape, 10).to(device).eval()
    x = torch.randn(samples, *shape, device=device)
    sizes = sorted({*BATCHES, eval_batch(device)}, reverse=True)
    for b in sizes:  # warm-up: the allocator's pools, oneDNN's or cuDNN's choice of kernels
        logits(model, x, b)
    seconds: dict[int, list[float]] = {b: [] for b in sizes}
    for rep in range(reps):
        for b in sizes[rep % len(sizes):] + sizes[:rep % len(sizes)]:
            seconds[b].append(timed(lambda: logits(model, x, b), device))
    return {b: statistics.median(s) for b, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=5000, help="images measured (default: 5,000, a validation split)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 256 images")
    results_option(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    samples, reps = (256, 1) if args.quick else (args.samples, args.reps)
    ours = eval_batch(device)
    lines = [f"{samples:,} images a pass, median of {reps} passes a batch size; expt measures in batches of {ours} "
             f"on {device.type}.", "",
             "| model | " + " | ".join(f"batch {b} (ms)" for b in BATCHES) + " | fastest | expt / fastest | expt / 2048 |",
             "|---|" + "---:|" * (len(BATCHES) + 3)]
    for name, (overrides, shape) in CASES.items():
        times = measure(overrides, shape, device, samples, reps)
        fastest = min(times, key=times.get)
        lines.append(f"| {name} | " + " | ".join(f"{1000 * times[b]:.1f}" for b in BATCHES)
                     + f" | {fastest} | {times[ours] / times[fastest]:.2f} | {times[ours] / times[2048]:.2f} |")
        print(lines[-1], flush=True)
    write_results(f"measuring-{device.type}", f"Measuring a split on {device.type}: seconds by batch size",
                  "\n".join(lines), machine(args.device), args.results)


if __name__ == "__main__":
    main()
