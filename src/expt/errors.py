"""The error every bad input becomes: one paragraph naming the key, the value and what is allowed; and the
other ways a run stops (a full disk, SIGTERM).

It lives in a module of its own, importing nothing of expt, so that every module can raise them without
importing the config machinery (and without import cycles).
"""

import contextlib
import difflib
import signal
import threading
from typing import Iterator, Optional, Sequence


class ConfigError(ValueError):
    """A config value that cannot run. The message names the key, the value and what is allowed."""


CONFIG_PREFIX = "Error in the config: "  # how a bad config's paragraph starts, wherever it is printed


def written(value: object) -> str:
    """A config value as the command line and the YAML files write it: ``null``, ``true``, ``false``; any other value
    as Python's repr (strings quoted, so that an empty one shows)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def reason(error: BaseException) -> str:
    """An error's message as a clause of ours: its first line, without a final full stop (``no message`` where it
    has none)."""
    return (str(error).strip().splitlines() or ["no message"])[0].rstrip(".")


def sentence(text: str) -> str:
    """``text`` ending as a sentence: a full stop added unless it ends with one (or with ``?`` or ``!``)."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def not_allowed(key: str, value: object, allowed: str) -> ConfigError:
    """The error for ``key=value``: ``<key>=<value> is not allowed: <allowed>.``, the value as :func:`written` gives it."""
    return ConfigError(f"{key}={written(value)} is not allowed: {allowed.rstrip('.')}.")


def not_an_option(setting: str, group: str, name: str, available: "Sequence[str]") -> str:
    """What to say of ``setting`` (as written: ``activation=rleu``, ``regularization=[l2,dropuot]``, a sweep, a
    ``choice()``), which names ``name``, not one of the ``available`` options of ``group``: those, and the nearest."""
    near = nearest(name, available)
    told = setting if setting == f"{group}={name}" else f"{setting} is not allowed: {name}"
    return (f"{told} is not an option of {group}{f' (did you mean {near}?)' if near else ''}; its options are: "
            f"{', '.join(available)}.")


def nearest(word: str, choices: "Sequence[str]", cutoff: float = 0.6) -> Optional[str]:
    """The choice that ``word`` most likely misspells: one it is with two neighbouring letters swapped (``modle``:
    model, which difflib counts as two edits and ranks below ``mode``), else difflib's closest of those at least
    ``cutoff`` alike; None where none is."""
    for choice in choices:
        swapped = [i for i, (a, b) in enumerate(zip(word, choice)) if a != b]
        if len(choice) == len(word) and len(swapped) == 2 and swapped[1] == swapped[0] + 1 and \
                word[swapped[0]] == choice[swapped[1]] and word[swapped[1]] == choice[swapped[0]]:
            return choice
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


class StorageError(OSError):
    """A file the run must keep could not be written (a full disk, a read-only or vanished directory, a file size
    limit). The message names the file, the system's reason and, from the run, what it kept."""


def not_written(path: object, error: BaseException) -> StorageError:
    """The :class:`StorageError` for ``path``, which the system refused to write for ``error``: the file and the
    system's reason (of the ``OSError`` that ``error`` is or holds, :func:`os_error_in`)."""
    cause = os_error_in(error) or error
    return StorageError(f"{path} could not be written ({getattr(cause, 'strerror', None) or cause})")


def os_error_in(error: BaseException) -> "OSError | None":
    """The OSError that ``error`` is, or that it was raised from or while handling (torch's writer reports a full
    disk as a RuntimeError raised while handling the OSError); None where there is none."""
    current: "BaseException | None" = error
    for _ in range(3):  # the error, and what it was raised from or while handling, not a whole history
        if current is None:
            return None
        if isinstance(current, OSError):
            return current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit): the command stops a run as Ctrl-C does, keeping what the
    finished epochs measured and its last checkpoint."""


_termination_pending = False  # a SIGTERM came, and the command has not yet stopped for it


def on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM's handler (``python -m expt`` installs it): raise :class:`Terminated` where the program is, as Ctrl-C
    raises KeyboardInterrupt; a second SIGTERM kills at once. The stop also stays pending until the command has
    stopped (:func:`termination_handled`): where the exception was swallowed (a library's bare ``except:``, a
    finalizer running when the signal came), the training loop raises it again (:func:`raise_pending_termination`),
    so that a scheduler's one SIGTERM before its SIGKILL is never lost."""
    global _termination_pending
    signal.signal(signum, signal.SIG_DFL)
    _termination_pending = True
    raise Terminated()


def raise_pending_termination() -> None:
    """Raise :class:`Terminated` if a SIGTERM came and its exception did not stop the command."""
    if _termination_pending:
        raise Terminated()


def termination_handled() -> None:
    """The command has stopped for its SIGTERM (or, in a process that goes on, such as a test's, it may train again)."""
    global _termination_pending
    _termination_pending = False


@contextlib.contextmanager
def interrupts_after() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM held back while the ``with`` body runs and delivered, once, when it ends: around
    the first import of PyTorch (a second or two). A KeyboardInterrupt raised inside that import leaves torch half
    initialised in ``sys.modules``, so that the stop's own clean-up fails on it with a traceback, or torch's C++ side
    aborts the process. The handlers in place before the body (Python's, :func:`on_sigterm`) take the signal after
    it. Signals reach Python's handlers in the main thread only: in another thread the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {signum: signal.getsignal(signum) for signum in held}
    for signum in held:
        signal.signal(signum, lambda number, _frame: came.append(number))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if came:
            signal.raise_signal(came[0])  # to the handler restored above, as if it came now


def described(error: BaseException) -> str:
    """An error that stops a run, as expt prints it, one sentence or more: bad input as ``Error in the config:
    <message>``, a file the run could not write as ``Error: <message>``, any other as ``<its type>: <message>``."""
    if isinstance(error, ConfigError):
        head = "" if str(error).startswith(CONFIG_PREFIX) else CONFIG_PREFIX
    elif isinstance(error, StorageError):
        head = "Error: "
    else:
        head = f"{type(error).__name__}: "
    return sentence(f"{head}{error}")
