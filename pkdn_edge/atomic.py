"""Atomic file writes: the one "temporary file, fsync, rename" helper of the project (no torch, no cv2).

:func:`atomic_write_bytes` (and the :func:`atomic_writer` context manager behind it) write into a
hidden temporary file **in the target's folder** named ``.<name>.<pid>.<random>.tmp``, flush and
``fsync`` it, give it the usual permissions (``0666 & ~umask``, i.e. ``0644`` with the common umask;
``mkstemp`` alone would leave ``0600``), then ``os.replace`` it onto the target and ``fsync`` the
folder. A reader sees the old file or the new one, never a partial one; a failure removes the
temporary file and raises ``OSError``.

A process killed mid-write (SIGKILL, power loss) can still leave its temporary file behind.
:func:`remove_stale_temps` deletes the ones whose writer is gone (the pid in the name is not a
live process); checkpoint, manifest and engine writes call it first, so debris never accumulates.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_write_bytes", "atomic_writer", "file_mode", "pid_alive", "remove_stale_temps", "temp_name_pattern"]

PathLike = Union[str, "os.PathLike[str]"]
_UMASK: int | None = None


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set and restore."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("Umask:"):
                        _UMASK = int(line.split()[1], 8)
                        break
        except (OSError, ValueError):
            pass
        if _UMASK is None:
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def file_mode() -> int:
    """Permissions of a newly created regular file: ``0o666 & ~umask`` (``0o644`` for umask 022)."""
    return 0o666 & ~_umask()


def temp_name_pattern(name: str) -> re.Pattern:
    """Regex of the temporary names :func:`atomic_writer` uses for a target called ``name``
    (group 1: the writer's pid)."""
    return re.compile(r"^\." + re.escape(name) + r"\.(\d+)\.[^.]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (ours, or another user's: True when we may not signal it)."""
    if pid == os.getpid() or os.name != "posix":  # Windows: os.kill(pid, 0) would send a Ctrl-C event
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_stale_temps(path: PathLike, legacy_older_than_s: float = 600.0) -> list[Path]:
    """Delete leftover temporary files of earlier, killed writes of ``path``; returns what was removed.

    Removed: ``.<name>.<pid>.*.tmp`` whose pid is not a live process, and the older naming
    ``<name>.*.tmp`` (no pid; used by checkpoint saves before this helper) when untouched for
    ``legacy_older_than_s`` seconds. Errors (a read-only folder) are ignored: cleaning is best effort.
    """
    p = Path(path)
    folder, name = p.parent, p.name
    pat = temp_name_pattern(name)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = pat.match(e.name)
        stale = False
        if m:
            stale = not pid_alive(int(m.group(1)))
        elif e.name.startswith(name + ".") and e.name.endswith(".tmp"):
            try:
                stale = now - e.stat().st_mtime > legacy_older_than_s
            except OSError:
                continue
        if stale and e.is_file():
            try:
                e.unlink()
                removed.append(e)
            except OSError:
                pass
    return removed


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: PathLike, mode: str = "wb", fsync: bool = True, clean: bool = True) -> Iterator[IO]:
    """``with atomic_writer(p) as f: f.write(...)``: the data appears at ``p`` only when the block
    ends without an exception (see the module docstring). ``mode``: ``"wb"`` or ``"w"`` (UTF-8).
    ``fsync=False`` / ``clean=False`` (no fsync, no scan of the folder for stale temporary files)
    suit writers of thousands of small files into one folder (image crops, video frames)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    p = Path(path)
    if clean:
        remove_stale_temps(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{os.getpid()}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), file_mode())
            else:  # Windows
                os.chmod(tmp, file_mode())
        os.replace(tmp, p)
        tmp = None
        if fsync:
            _fsync_dir(p.parent)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = True, clean: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring and :func:`atomic_writer`).
    Raises ``OSError``."""
    with atomic_writer(path, "wb", fsync=fsync, clean=clean) as f:
        f.write(data)
