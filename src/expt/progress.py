"""How far one long piece of work has gone, for a user waiting on it: a bar at a terminal, a line now and then in a log.

A lone run's epoch (:mod:`expt.trainer.loop`) and an evaluation of finished runs (:mod:`expt.evaluate`) count
the images they have gone through in a :class:`Progress`. At a terminal it draws tqdm's bar once the work has
run ``delay`` seconds (short work shows none) and takes it off the screen at the end. Elsewhere (a log file, a
cluster job's output, where a bar's carriage returns would pile up) :meth:`Progress.line_due` tells the caller
when a minute has passed, and the caller writes its own line.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Optional

# Outside a terminal, the seconds between two progress lines.
LINE_SECONDS = 60.0


class Progress(contextlib.AbstractContextManager):
    """``done`` of ``total`` units (images), with a bar when ``bar`` (a terminal) and else a line every
    :data:`LINE_SECONDS`; used as a context manager, which closes the bar."""

    def __init__(self, total: int, desc: str, bar: bool, delay: float, unit: str = "img"):
        self.done, self.total = 0, total
        self.started = self.last_line = time.perf_counter()
        self.bar: Optional[Any] = None
        if bar:
            from tqdm.auto import tqdm  # only where a bar is drawn

            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, delay=delay, leave=False,
                            dynamic_ncols=True)

    def advance(self, n: int) -> None:
        """``n`` more units done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def note(self, **values: str) -> None:
        """``values`` (such as the running loss) beside the bar, from its next update on."""
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def line_due(self) -> bool:
        """Without a bar, whether :data:`LINE_SECONDS` have passed since the work began or since the last line
        (then the caller writes one, and the next is due a minute later); with a bar, never."""
        now = time.perf_counter()
        if self.bar is not None or now - self.last_line < LINE_SECONDS:
            return False
        self.last_line = now
        return True

    def rate(self) -> float:
        """Units a second so far."""
        return self.done / max(time.perf_counter() - self.started, 1e-9)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
