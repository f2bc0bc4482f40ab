"""User-facing errors.

Every CLI catches :class:`PKDNError` at its entry point and prints ``error: <message>`` on one line
(exit code 2) instead of a stack trace. Raise it (or a subclass) for user mistakes: bad paths,
unreadable files, wrong sizes, missing optional dependencies. Bugs stay ordinary exceptions.
``run_cli`` also turns an ``OSError`` (read-only folder, full disk, permission denied) into one
``error:`` line naming the file and what to do, since those are the machine's state, not bugs.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable


class PKDNError(Exception):
    """A user-facing error whose message says what went wrong and how to fix it."""


class ImageReadError(PKDNError):
    """An image file is missing, unreadable, truncated or in an unsupported format."""


class NoFaceError(PKDNError):
    """No face was found where one was required."""


class MissingDependencyError(PKDNError):
    """An optional dependency (backend, extra) is not installed."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f"pip install 'pkdn-edge[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{what}: {hint}")
        self.package = package
        self.extra = extra


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or choose a folder on another disk, then run again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its permissions",
    errno.ENOENT: "no such file or folder",
}
if hasattr(errno, "EDQUOT"):
    _OS_HINTS[errno.EDQUOT] = "the disk quota is exhausted: free space or choose another folder, then run again"


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: the file(s), the system's reason and what to do
    (``out/x.pt: No space left on device; the disk is full: free space ...``)."""
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno or -1, "")
    if hint and hint.lower() == reason.lower():
        hint = ""
    return (f"{files}: " if files else "") + reason + (f"; {hint}" if hint else "")


def run_cli(main: Callable[[], int | None]) -> int:
    """Run a CLI body; turn :class:`PKDNError`, operating-system errors (a read-only folder, a full
    disk, a missing file: ``OSError``) and Ctrl-C into one line and an exit code (2, 2, 130)."""
    try:
        return int(main() or 0)
    except PKDNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def sigterm_as_interrupt() -> None:
    """Make SIGTERM (a service stop, ``kill``, a killed session) unwind like Ctrl-C, so ``finally``
    blocks run: temporary files and work folders are removed and a CLI exits through ``run_cli``
    with "interrupted" (130) instead of dying mid-write. Call it from a CLI's main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class CLIParser(argparse.ArgumentParser):
    """argparse whose usage errors are one :class:`PKDNError` line (``run_cli`` prints it, exit 2)
    instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PKDNError(f"{message} (see {self.prog} --help)")
