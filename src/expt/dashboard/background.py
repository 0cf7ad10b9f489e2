"""The dashboard's host-side work on a thread of its own, off the training loop's critical path.

A diagnostic is computed where the model is (the device) without reading anything back; its numbers
are then copied to host memory without waiting (``non_blocking``, into pinned memory on a GPU), a
CUDA event marks the copy, and the training loop goes on. The work that needs the numbers on the
host (building TensorBoard's records, encoding a PNG, tracing the graph of a CPU copy, writing the
event file) runs on the dashboard's thread once the copy is complete.

The thread never calls CUDA: a CUDA graph being captured on the training thread forbids work on
the device from other threads. The training thread hands an item over once its event has completed:
at the loop's logging steps, which read the step losses back and so have finished every earlier
copy (:meth:`Background.poll`), and in :meth:`Background.drain`, which waits for the device.

Items are written in the order they were submitted. A failing item is logged once (by its name)
and the others go on: a diagnostic never stops a run. An item the disk refused (a full disk, a file
size limit, a directory removed: an ``OSError``) is kept as :attr:`Background.failure` instead, and the
items after it are not run; the dashboard raises it on the training thread, where the run stops as it
does for a checkpoint the disk cannot take.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from expt.errors import os_error_in

log = logging.getLogger(__name__)


@dataclass
class _Item:
    owner: "Background"
    name: str
    work: Callable[..., None]
    tensors: list[torch.Tensor]
    ready: Optional[torch.cuda.Event]  # None: the host copies are complete already


class _Thread:
    """The one thread of a process that runs every dashboard's items (a population has one dashboard a member)."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.thread: Optional[threading.Thread] = None
        self.pid: Optional[int] = None

    def put(self, item: _Item) -> None:
        if self.thread is None or self.pid != os.getpid():  # none yet, or this process was forked from its owner
            self.queue = queue.Queue()
            self.thread = threading.Thread(target=self._run, name="expt-dashboard", daemon=True)
            self.pid = os.getpid()
            self.thread.start()
        self.queue.put(item)

    def join(self) -> None:
        """Wait until every item put so far has run."""
        if self.thread is not None and self.pid == os.getpid():
            self.queue.join()

    def _run(self) -> None:
        work = self.queue
        while True:
            item = work.get()
            try:
                item.owner.run(item)
            finally:
                work.task_done()


_THREAD = _Thread()


class Background:
    """A dashboard's host-side work, run on the process's dashboard thread in submission order."""

    def __init__(self) -> None:
        self._waiting: deque[_Item] = deque()  # submitted; their device copies may still be in flight
        self._failed: set[str] = set()
        # the first item the disk refused; set on the thread, read on the training thread
        self.failure: Optional[BaseException] = None

    def submit(self, name: str, work: Callable[..., None], tensors: Sequence[torch.Tensor] = ()) -> None:
        """Run ``work(*host_copies)`` on the thread once ``tensors`` (their values now) are on the host.

        Tensors on a GPU are copied without waiting; tensors on the CPU are cloned, since training
        changes its weights in place.
        """
        copies, ready = _host_copies(tensors)
        self._waiting.append(_Item(self, name, work, copies, ready))
        self.poll()

    def poll(self) -> None:
        """Hand over, in order, every submitted item whose copies are complete; never waits."""
        while self._waiting and (self._waiting[0].ready is None or self._waiting[0].ready.query()):
            _THREAD.put(self._waiting.popleft())

    def drain(self) -> None:
        """Wait until every submitted item has run (the device copies, then the thread's work)."""
        while self._waiting:
            item = self._waiting.popleft()
            if item.ready is not None:
                item.ready.synchronize()
            _THREAD.put(item)
        _THREAD.join()

    def run(self, item: _Item) -> None:
        """Run one item (on the thread); a failure is logged once by its name, one of the disk's kept as
        :attr:`failure`, after which no item runs (the event file's writer then fails every write, each time
        raising its stored error again)."""
        if self.failure is not None:
            return
        try:
            item.work(*item.tensors)
        except Exception as exc:  # a diagnostic that fails is left out; training goes on
            if os_error_in(exc) is not None:
                self.failure = exc
                return
            if item.name not in self._failed:
                self._failed.add(item.name)
                log.warning("Dashboard: %s was not written (%s: %s); later ones are tried again, "
                            "this warning is not repeated.", item.name, type(exc).__name__, exc)


def _host_copies(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], Optional[torch.cuda.Event]]:
    """Host copies of ``tensors`` as they are now, and the event that marks them complete (None: complete)."""
    copies: list[torch.Tensor] = []
    on_gpu = False
    for t in tensors:
        t = t.detach()
        if t.device.type == "cuda":
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            host.copy_(t, non_blocking=True)
            copies.append(host)
            on_gpu = True
        elif t.device.type == "cpu":
            copies.append(t.clone())
        else:  # another accelerator: a plain (waiting) copy
            copies.append(t.to("cpu"))
    if not on_gpu:
        return copies, None
    ready = torch.cuda.Event()
    ready.record()
    return copies, ready

