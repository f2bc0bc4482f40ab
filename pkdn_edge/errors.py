"""User-facing errors.

Every CLI catches :class:`PKDNError` at its entry point and prints ``error: <message>`` on one line
(exit code 2) instead of a stack trace. Raise it (or a subclass) for user mistakes: bad paths,
unreadable files, wrong sizes, missing optional dependencies. Bugs stay ordinary exceptions.
"""

from __future__ import annotations

import argparse
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


def run_cli(main: Callable[[], int | None]) -> int:
    """Run a CLI body; turn :class:`PKDNError` and Ctrl-C into one line and an exit code."""
    try:
        return int(main() or 0)
    except PKDNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class CLIParser(argparse.ArgumentParser):
    """argparse whose usage errors are one :class:`PKDNError` line (``run_cli`` prints it, exit 2)
    instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PKDNError(f"{message} (see {self.prog} --help)")
