"""Regenerate the README's dashboard screenshots: ``python scripts/dashboard_screenshots.py``.

Trains a default run and the coarse-to-fine preset sweep (or reuses finished ones: ``--run DIR``,
``--sweep DIR``), serves each with ``python -m expt.board``, opens the addresses it prints in
headless Chromium (driven as the browser test drives it, ``tests/test_browser.py``) and writes
small PNGs to ``docs/``:

- ``dashboard_run.png``: a run's first page, the recipe's pair of charts;
- ``dashboard_sweep.png``: the same page for the sweep, every trial under its name;
- ``dashboard_sweep_hparams.png``: the sweep's HParams table;
- ``dashboard_sweep_history.png``: the sweep's optimization-history picture, as the sweeper drew it.

Screenshots are reduced to a 64-colour palette (Pillow) to stay small. Needs Chromium
(``EXPT_CHROMIUM`` or /usr/bin/chromium), pytest (the browser test's helpers) and Pillow.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_browser import HPARAMS_ROWS, RECIPE_STATE, Chromium, in_page  # noqa: E402
from test_dashboard import BoardServer, wait_for  # noqa: E402

from expt import board  # noqa: E402

COLOURS = 64
# charts of the first category (the recipe's pair) still waiting for their data
SPINNING = in_page("""deepAll('tf-custom-scalar-multi-line-chart-card').slice(0, 2).filter(
  card => Array.from(card.shadowRoot ? card.shadowRoot.querySelectorAll('paper-spinner-lite') : [])
    .some(s => s.active)).length""")


def train(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "expt", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"python -m expt {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def small_png(source: Path, target: Path, crop: tuple[int, int] | None = None) -> None:
    """``source`` as a palette PNG (and cropped to ``crop`` = (width, height) from the top left)."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    if crop:
        image = image.crop((0, 0, min(crop[0], image.width), min(crop[1], image.height)))
    image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    print(f"{target}: {image.width}x{image.height}, {target.stat().st_size / 1024:.0f} KB")


def shoot(logdir: Path, work: Path, pages: list[tuple[str, Path, tuple[int, int] | None]]) -> None:
    """Serve ``logdir`` with expt.board and photograph each (address fragment, PNG, crop) of ``pages``."""
    with BoardServer(logdir, work / f"board-{logdir.name}.log") as server:
        browser = Chromium(work / f"profile-{logdir.name}", work / "chromium.log", width=1280, height=820)
        try:
            for fragment, target, crop in pages:
                if fragment == board.RECIPE_VIEW:
                    browser.goto(server.printed_url(fragment))
                    wait_for(lambda: (s := browser.evaluate(RECIPE_STATE)) and len(s["charts"]) >= 2
                             and all(c["runs"] for c in s["charts"]), 120, "the recipe's charts")
                    deadline = time.monotonic() + 180
                    while browser.evaluate(SPINNING) and time.monotonic() < deadline:
                        time.sleep(0.5)
                else:
                    browser.goto(server.url + "/" + fragment)
                    wait_for(lambda: browser.evaluate(HPARAMS_ROWS), 120, "the HParams table")
                time.sleep(3)  # the charts draw after their data arrive
                raw = browser.screenshot(work / target.name)
                small_png(raw, target, crop)
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run directory (default: train one)")
    parser.add_argument("--sweep", type=Path, help="a finished coarse-to-fine sweep directory (default: run the preset)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="expt-screenshots-"))  # kept if anything fails, with the runs it made
    run = args.run
    if run is None:
        run = work / "outputs" / "10-00-00"
        train([f"hydra.run.dir={run}"], work)
    sweep = args.sweep
    if sweep is None:
        sweep = work / "multirun"
        train(["--multirun", "hydra/sweeper=coarse_to_fine", f"hydra.sweep.dir={sweep}"], work)
    shoot(run, work, [(board.RECIPE_VIEW, args.out / "dashboard_run.png", (1280, 560))])
    shoot(sweep, work, [
        (board.RECIPE_VIEW, args.out / "dashboard_sweep.png", (1280, 560)),
        (board.HPARAMS_VIEW, args.out / "dashboard_sweep_hparams.png", None),
    ])
    history = sweep / "sweep_history.png"
    if history.is_file():
        target = args.out / "dashboard_sweep_history.png"
        shutil.copyfile(history, work / history.name)
        small_png(work / history.name, target)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
