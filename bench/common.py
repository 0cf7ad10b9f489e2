"""Shared by the benchmarks: a description of the machine, and RESULTS.md sections replaced in place."""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def results_option(parser: argparse.ArgumentParser) -> None:
    """``--results PATH``: the Markdown file a benchmark writes its section into (default: bench/RESULTS.md)."""
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file to write (default: %(default)s)")


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a timer measures it; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device) -> float:
    """Seconds that ``call()`` takes, its queued GPU work included."""
    sync(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start


def write_results(key: str, title: str, body: str, where: str, results: Path = RESULTS, so_far: bool = False) -> None:
    """Replace the section ``key`` of ``results`` (or append it), stamped with the machine and date.

    ``so_far``: a benchmark's rows while it runs, as the section ``<key>-so-far`` beside the last complete one,
    which stays: a run a time limit stops keeps what it measured and loses nothing measured before. The
    complete section replaces ``key`` and removes ``<key>-so-far``."""
    text = results.read_text() if results.exists() else "# Benchmark results\n\nWritten by the scripts in bench/.\n\n"
    if so_far:
        key, title = f"{key}-so-far", f"{title}: so far (the run is going on, or stopped before its end)"
    else:
        text = re.sub(rf"\n?{_section(f'{key}-so-far').pattern}", "", text, flags=re.S)  # with the line it added
    section = (
        f"<!-- {key} -->\n## {title}\n\nMachine: {where}. Measured {time.strftime('%Y-%m-%d')}.\n\n"
        f"{body.strip()}\n<!-- /{key} -->\n"
    )
    pattern = _section(key)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    results.write_text(text)
    if not so_far:
        print(f"wrote the '{key}' section of {results}")


def _section(key: str) -> re.Pattern:
    """A section of the results file, its markers included."""
    return re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->\n", re.S)
