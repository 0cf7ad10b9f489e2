"""An earlier process's event files, cut back to a checkpoint.

A run resumed from its own ``last.pt`` trains again the steps its first process took after that checkpoint
(a kill in the middle of an epoch, or between an epoch's events and its checkpoint). Those steps' events are
already in the first process's event file, so each curve would run back on itself where the two meet.
TensorBoard's own answer, a ``SessionLog.START`` event at the restart's step, drops every tag's events past
one step number; a run's tags count on two axes (the training step and the epoch), so :func:`cut_after`
rewrites the file itself, leaving out the events past the checkpoint on each axis.

An event file is a sequence of TFRecords: a little-endian uint64 length, the masked CRC-32C of those 8
bytes, the serialized ``Event``, and the masked CRC-32C of the data. A record cut short or damaged by the
kill ends the file; everything before it is kept as it was.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from google.protobuf.message import DecodeError
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer import record_writer

from expt.files import replacing


def records(data: bytes) -> Iterator[bytes]:
    """The serialized events of an event file's bytes, up to the first record cut short or damaged (either
    checksum wrong)."""
    offset = 0
    while offset + 12 <= len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        end = offset + 12 + length + 4
        if crc != record_writer.masked_crc32c(header) or end > len(data):
            return
        payload = data[offset + 12:end - 4]
        if struct.unpack("<I", data[end - 4:end])[0] != record_writer.masked_crc32c(payload):
            return
        yield payload
        offset = end


def cut_after(path: Path, epoch: int, step: int, per_step: Callable[[str], bool],
              written_again: Callable[[str], bool] = lambda tag: False) -> int:
    """Rewrite the event file ``path`` without its events past the checkpoint: a summary whose tags count
    training steps (``per_step(tag)``) is kept up to training step ``step``, one whose tags the resumed run writes
    again at the checkpoint's epoch (``written_again(tag)``: the header, the final metrics of a stop) before
    ``epoch``, any other summary up to ``epoch``; events without a summary (the file's version, the graph) are
    kept. Returns how many events went; the file is left untouched when none did, and replaced in one rename
    when some did."""
    kept: list[bytes] = []
    removed = 0
    for raw in records(path.read_bytes()):
        try:
            event = Event.FromString(raw)
        except DecodeError:  # a record whose checksums hold but whose bytes are no event: the file ends there
            break
        tags = [value.tag for value in event.summary.value] if event.HasField("summary") else []
        limit = (step if tags and all(per_step(tag) for tag in tags) else
                 epoch - 1 if tags and all(written_again(tag) for tag in tags) else epoch)
        if tags and event.step > limit:
            removed += 1
        else:
            kept.append(raw)
    if removed:
        with replacing(path) as f:
            writer = record_writer.RecordWriter(f)
            for raw in kept:
                writer.write(raw)
    return removed


def created_second(path: Path) -> int:
    """The second an event file was created in, as its name says (``events.out.tfevents.<second>.<host>.<pid>...``);
    -1 for a name that does not say."""
    parts = path.name.split(".")
    return int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else -1


def wait_to_sort_after(earlier: Iterable[Path]) -> None:
    """Wait, at most a second, until an event file created now sorts after ``earlier``'s. TensorBoard reads a run's
    files in name order, and a name gives the second first, then the host and the process id: a run killed and
    resumed within one second would have its resumed file read first (by process id), the resumed steps before
    the earlier ones, so every curve ran back on itself."""
    latest = max((created_second(path) for path in earlier), default=-1)
    if latest > time.time() + 1:  # a file from a clock ahead of this one: no wait would be short enough
        return
    while int(time.time()) <= latest:
        time.sleep(max(0.01, latest + 1 - time.time()))

