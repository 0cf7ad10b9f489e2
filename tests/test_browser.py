"""TensorBoard's pages for a run and a small sweep, opened in headless Chromium, as a student sees them.

The page ``python -m expt.board`` prints first shows the recipe's pair (accuracy and loss, train
against val, unsmoothed) under the runs' readable names; the HParams table shows status,
diagnosis and round among its ticked columns, integers as integers, the log10 column of a
log-scaled parameter, and each trial's learning curves under "Show Metrics"; the sweep pictures
are shown at their own size.

Chromium is driven through the DevTools protocol over its ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON messages), so the test needs no Python package beyond
the standard library. TensorBoard's UI nests shadow roots (Polymer dashboards inside an
Angular app), so the checks are JavaScript that searches through them, polled with a deadline.
Screenshots are saved in the test's temporary directory.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

import pytest
from test_dashboard import (PATIENCE, SWEEP_LABELS, SWEEP_LRS, BoardServer, get_json, small_run, small_sweep,
                            wait_for)

from expt import board

CHROMIUM = Path(os.environ.get("EXPT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-pipe",
)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set EXPT_CHROMIUM)"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to hand Chromium its protocol pipes"),
]

def in_page(expression: str) -> str:
    """``expression`` as a self-contained script with ``deepAll(selector)``: every element matching a
    CSS selector, through open shadow roots. Wrapped in a function, so it can run again and again."""
    return """(() => {
  const deepAll = (selector, root = document, found = []) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.matches(selector)) found.push(el);
      if (el.shadowRoot) deepAll(selector, el.shadowRoot, found);
    }
    return found;
  };
  return (%s);
})()""" % expression


SCALARS_STATE = in_page("""{
  runs: deepAll('tf-multi-checkbox').flatMap(
    box => Array.from(box.shadowRoot ? box.shadowRoot.querySelectorAll('span') : []).map(s => s.textContent.trim())),
  charts: deepAll('tf-scalar-card').map(card => card.tag || card.getAttribute('tag')),
}""")
HPARAMS_ROWS = in_page("""(() => {
  const grid = deepAll('vaadin-grid.session-group-table')[0];
  if (!grid || !grid.shadowRoot) return null;
  return Array.from(grid.shadowRoot.querySelectorAll('#items tr'))
    .filter(tr => !tr.hidden)
    .map(tr => Array.from(tr.querySelectorAll('slot')).map(
      slot => slot.assignedNodes().map(n => n.textContent.trim()).join('')))
    .filter(cells => cells.length && cells[0] !== '');
})()""")
RECIPE_STATE = in_page("""{
  charts: deepAll('tf-custom-scalar-multi-line-chart-card').map(
    card => ({title: card.title, regexes: card.tagRegexes, runs: card.runs})),
  smoothing: deepAll('tf-smoothing-input').map(input => input.weight),
}""")
HPARAMS_HEADER = in_page("""(() => {
  const grid = deepAll('vaadin-grid.session-group-table')[0];
  if (!grid || !grid.shadowRoot) return null;
  return Array.from(grid.shadowRoot.querySelectorAll('thead th slot')).map(
    slot => slot.assignedNodes().map(n => n.textContent.trim()).join(''));
})()""")
SHOW_METRICS_OF_FIRST_ROW = in_page("""(() => {
  const grid = deepAll('vaadin-grid.session-group-table')[0];
  const box = grid && Array.from(grid.querySelectorAll('paper-checkbox')).find(b => b.offsetWidth > 0);
  if (box && !box.checked) box.click();
  return Boolean(box && box.checked);
})()""")
METRIC_CARDS = in_page("deepAll('tf-scalar-card').map(card => card.tag)")
IMAGES = in_page("""deepAll('img').filter(img => img.naturalWidth > 0).map(
  img => ({natural: img.naturalWidth, shown: img.clientWidth}))""")
OPEN_PARALLEL_COORDINATES = in_page("""(() => {
  const tab = deepAll('paper-tab').find(t => t.innerText.trim().toUpperCase() === 'PARALLEL COORDINATES VIEW');
  if (tab) tab.click();
  return Boolean(tab);
})()""")
PARALLEL_LINES = in_page("""(() => {
  const plot = deepAll('tf-hparams-parallel-coords-plot')[0];
  if (!plot || !plot.offsetWidth) return 0;
  const lines = plot.shadowRoot.querySelector('g.foreground');
  return lines ? lines.querySelectorAll('path').length : 0;
})()""")


class Chromium:
    """Headless Chromium with a DevTools protocol session on one page, spoken over pipes."""

    def __init__(self, profile: Path, log_file: Path, width: int = 1400, height: int = 1000):
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4; bash puts the pipes there.
        child_in = fcntl.fcntl(commands_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(replies_w, fcntl.F_DUPFD, 10)
        os.close(commands_r)
        os.close(replies_w)
        args = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        script = f'exec "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self.log = open(log_file, "w")
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "chromium", *args],
            pass_fds=(child_in, child_out), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        os.close(child_in)
        os.close(child_out)
        self.commands = os.fdopen(commands_w, "wb", buffering=0)
        self.replies = os.fdopen(replies_r, "rb", buffering=0)
        self.answers: dict[int, dict] = {}
        self.ready = threading.Condition()
        self.last_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.session: Optional[str] = None
        try:
            # the first answer waits for Chromium to start, which a loaded machine can stretch past a minute
            target = self.send("Target.createTarget", {"url": "about:blank"}, timeout=180)["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except Exception:
            self.close()
            raise

    def _read(self) -> None:
        buffer = b""
        while chunk := self.replies.read(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self.ready:
                        self.answers[message["id"]] = message
                        self.ready.notify_all()
        with self.ready:
            self.ready.notify_all()

    def send(self, method: str, params: Optional[dict] = None, timeout: float = 30) -> dict:
        """Send one command (to the page's session once attached) and wait for its answer."""
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        self.commands.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.ready:
            while self.last_id not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or not self.reader.is_alive():
                    raise TimeoutError(f"no answer to {method} from Chromium")
                self.ready.wait(left)
            answer = self.answers.pop(self.last_id)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        self.commands.close()
        self.replies.close()
        self.log.close()


@pytest.fixture
def chromium(tmp_path):
    browser = Chromium(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


def open_recipe_view(chromium, server, runs: list[str], titles: tuple[str, ...] = ()) -> dict:
    """Open the address expt.board printed first; wait for the recipe's charts of ``runs`` (and charts whose
    titles hold each of ``titles``), drawn unsmoothed: what is read from the page is read once it is all there."""
    chromium.goto(server.printed_url(board.RECIPE_VIEW))
    state = wait_for(
        lambda: (s := chromium.evaluate(RECIPE_STATE)) and len(s["charts"]) >= 2 and s["smoothing"] == [0]
        and all(any(t in c["title"] for c in s["charts"]) for t in titles)
        and all(sorted(set(c["runs"] or []) - {"sweep_summary"}) == sorted(runs) for c in s["charts"]) and s,
        PATIENCE, f"the custom-scalars page to chart {runs}, unsmoothed",
    )
    first, second = state["charts"][:2]
    assert first["title"] == "accuracy: train vs val" and second["title"].startswith("loss: train vs val")
    assert state["smoothing"] == [0]  # the address sets TensorBoard's smoothing (0.6 by default) to none
    for run in runs:  # each chart's data, as the page fetches it: both curves, one point per epoch
        for chart, tags in ((first, {"accuracy/train", "accuracy/val"}), (second, {"loss/train_data", "loss/val"})):
            (regex,) = chart["regexes"]
            data = get_json(f"{server.url}/data/plugin/custom_scalars/scalars?"
                            + urllib.parse.urlencode({"run": run, "tag": regex}))
            assert data["regex_valid"] and set(data["tag_to_events"]) == tags, (run, data)
            assert len({len(points) for points in data["tag_to_events"].values()}) == 1
    return state


@pytest.mark.slow
def test_a_run_opens_on_the_recipes_pair(tmp_path_factory, tmp_path, chromium):
    run_dir = small_run(tmp_path_factory)
    label = "run trainer.epochs=3 data.subset=300"
    with BoardServer(run_dir, tmp_path / "board.log") as server:
        assert wait_for(lambda: get_json(f"{server.url}/data/runs") == [label], PATIENCE, "the run under its name")
        state = open_recipe_view(chromium, server, [label], titles=("update ratio",))
        assert any("update ratio" in c["title"] for c in state["charts"])
        time.sleep(1)  # let the line charts draw before the picture
        assert chromium.screenshot(tmp_path / "run.png").stat().st_size > 10_000


def test_tensorboard_shows_the_sweep_in_a_browser(tmp_path_factory, tmp_path, chromium):
    from expt.dashboard import plot_sweep
    from expt.status import read_metrics

    sweep_dir = small_sweep(tmp_path_factory)
    records = [{"round": 2, "job": job, "values": {"optimizer.lr": lr}, "status": m["status"],
                "objective": m["objective"], "val_loss": m["final_val_loss"]}
               for job, lr in enumerate(SWEEP_LRS) if (m := read_metrics(sweep_dir / str(job)))]
    plot_sweep(records, {"optimizer.lr": True}, sweep_dir, metric="val_acc", round_epochs={2: 2})
    with BoardServer(sweep_dir, tmp_path / "board.log") as server:
        wait_for(lambda: set(get_json(f"{server.url}/data/plugin/scalars/tags")) >= set(SWEEP_LABELS), PATIENCE,
                 "both runs loaded")
        open_recipe_view(chromium, server, list(SWEEP_LABELS))
        time.sleep(1)  # let the line charts draw before the picture
        shot = chromium.screenshot(tmp_path / "recipe.png")
        assert shot.stat().st_size > 10_000

        chromium.goto(f"{server.url}/#hparams")
        rows = wait_for(lambda: (r := chromium.evaluate(HPARAMS_ROWS)) and len(r) >= 2 and r,
                        PATIENCE, "one HParams table row per trial")
        header = chromium.evaluate(HPARAMS_HEADER)
        assert header[:2] == ["Trial ID", "Show Metrics"]
        ticked = header[2:7]  # TensorBoard ticks five hparams: expt's own columns and the log10 one among them
        assert ticked[:4] == ["status", "diagnosis", "sweep round", "log10(optimizer.lr)"], header
        assert [row[0] for row in rows] == list(SWEEP_LABELS)  # the trials' names, in job order
        column = {name: [row[header.index(name)] for row in rows] for name in ticked}
        assert column["status"] == ["completed", "completed"] and column["sweep round"] == ["2", "2"]
        assert all(d in ("healthy", "overfitting", "underfitting") for d in column["diagnosis"])
        numbers = [[float(cell) for cell in row[1:] if _is_number(cell)] for row in rows]
        for lr in SWEEP_LRS:
            assert sum(lr == pytest.approx(value) for row in numbers for value in row) == 1, (lr, rows)
        chromium.screenshot(tmp_path / "hparams_table.png")

        # "Show Metrics" draws the trial's learning curves: the per-epoch tags, one point per epoch
        assert wait_for(lambda: chromium.evaluate(SHOW_METRICS_OF_FIRST_ROW), PATIENCE, "the first row's Show Metrics")
        cards = wait_for(lambda: (c := chromium.evaluate(METRIC_CARDS)) and "accuracy/val" in c and c, PATIENCE,
                         "metric charts")
        assert {"hparams/best_val_acc", "accuracy/train", "loss/val"} <= set(cards)
        evals = get_json(f"{server.url}/data/plugin/hparams/metric_evals", {
            "experimentName": "", "sessionName": SWEEP_LABELS[0], "metricName": {"tag": "accuracy/val", "group": ""}})
        assert [step for _, step, _ in evals] == [1, 2]
        chromium.screenshot(tmp_path / "hparams_show_metrics.png")

        assert wait_for(lambda: chromium.evaluate(OPEN_PARALLEL_COORDINATES), PATIENCE, "the parallel coordinates tab")
        assert wait_for(lambda: chromium.evaluate(PARALLEL_LINES) >= 2, PATIENCE, "one line per trial") is True
        chromium.screenshot(tmp_path / "hparams_parallel_coordinates.png")

        # the sweep pictures are drawn at the width TensorBoard shows them: nothing shrinks their text
        chromium.goto(f"{server.url}/#images")
        images = wait_for(lambda: (i := [x for x in chromium.evaluate(IMAGES) or [] if x["natural"] >= 300])
                          and len(i) == 2 and all(abs(x["shown"] - x["natural"]) <= 2 for x in i) and i or None,
                          PATIENCE, "both sweep pictures at their own width")
        assert len(images) == 2 and all(abs(x["shown"] - x["natural"]) <= 2 for x in images), images
        chromium.screenshot(tmp_path / "images.png")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
