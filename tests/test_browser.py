"""TensorBoard's pages for a small sweep, opened in headless Chromium: the scalars and the HParams tab render.

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
from pathlib import Path
from typing import Any, Optional

import pytest
from test_dashboard import SWEEP_LRS, BoardServer, get_json, small_sweep, wait_for

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


def test_tensorboard_shows_the_sweep_in_a_browser(tmp_path_factory, tmp_path, chromium):
    sweep_dir = small_sweep(tmp_path_factory)
    with BoardServer(sweep_dir, tmp_path / "board.log") as server:
        wait_for(lambda: set(get_json(f"{server.url}/data/plugin/scalars/tags")) == {"0", "1"}, 60, "both runs loaded")

        chromium.goto(f"{server.url}/#scalars")
        state = wait_for(
            lambda: (s := chromium.evaluate(SCALARS_STATE)) and {"0", "1"} <= set(s["runs"])
            and "accuracy/val" in s["charts"] and s,
            60, "the scalars dashboard to list both runs and the accuracy/val chart",
        )
        assert "accuracy/train" in state["charts"]
        time.sleep(1)  # let the line charts draw before the picture
        shot = chromium.screenshot(tmp_path / "scalars.png")
        assert shot.stat().st_size > 10_000

        chromium.goto(f"{server.url}/#hparams")
        rows = wait_for(lambda: (r := chromium.evaluate(HPARAMS_ROWS)) and len(r) >= 2 and r,
                        60, "one HParams table row per trial")
        assert sorted(row[0] for row in rows) == ["0", "1"]  # the trial ids
        numbers = [[float(cell) for cell in row[1:] if _is_number(cell)] for row in rows]
        for lr in SWEEP_LRS:
            assert sum(lr == pytest.approx(value) for row in numbers for value in row) == 1, (lr, rows)
        chromium.screenshot(tmp_path / "hparams_table.png")

        assert wait_for(lambda: chromium.evaluate(OPEN_PARALLEL_COORDINATES), 20, "the parallel coordinates tab")
        assert wait_for(lambda: chromium.evaluate(PARALLEL_LINES) >= 2, 30, "one line per trial") is True
        chromium.screenshot(tmp_path / "hparams_parallel_coordinates.png")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
