"""NNCF's PyTorch fake-quantizers without the JIT-built C++ extension (and its lock file).

NNCF runs the fake-quantize op of a PyTorch model through a C++ extension that it compiles with
torch's JIT builder on first use, in torch's extension cache (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions/<py>_<cpu|cuXXX>/nncf/quantized_functions_cpu/<torch version>/``).
The build takes minutes on a small CPU and needs a C++ compiler. Worse, torch guards it with a
``lock`` file that only the builder removes: a build killed by SIGTERM/SIGKILL leaves the lock, and
from then on every NNCF PyTorch quantization (``pkdn-export --precision int8``, ``pkdn-compress``)
waits on it silently, forever (NNCF's own timeout was raised to 15 min by this project, since a
real first build on 2 busy cores needs several).

:func:`use_reference_quantizers` points NNCF at its pure-PyTorch reference implementation of the
same op (``nncf.torch.quantization.reference``: the same formula, run by ordinary torch ops; not
``torch.compile``d), so the export never builds, loads or waits for the extension. The quantized
models are the same (the tests have always quantized this way); only large QAT runs would be a
little slower.

:func:`check_stale_lock` still looks for a lock left by an interrupted build (other NNCF tools on
the machine would hang on it): with no live process holding it open (torch's builder keeps the
lock file open while it builds), it is removed and a line says so.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Callable

EXTENSION = "quantized_functions_cpu"
_checked = False  # the lock is looked at once per process


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lock_path() -> Path | None:
    """Where torch's builder keeps the lock of NNCF's CPU extension (None when torch is absent)."""
    try:
        import torch
        from torch.utils.cpp_extension import _get_build_directory
    except ImportError:
        return None
    try:
        return Path(_get_build_directory(f"nncf/{EXTENSION}", verbose=False)) / torch.__version__ / "lock"
    except Exception:  # a private torch helper: never let it break an export
        return None


def lock_holders(lock: Path) -> list[int] | None:
    """Pids of local processes that hold ``lock`` open (torch's builder does while it builds);
    None when this system has no ``/proc`` to tell."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    target = os.path.realpath(lock)
    pids = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fds = list((d / "fd").iterdir())
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    pids.append(int(d.name))
                    break
            except OSError:
                continue
    return pids


def check_stale_lock(log: Callable[[str], None] = _stderr, lock: Path | None = None) -> str:
    """Remove a stale lock of NNCF's extension build. Returns ``"none"`` (no lock), ``"removed"``,
    ``"held"`` (a live build holds it) or ``"unknown"`` (no /proc: a line says what to do)."""
    lock = lock or lock_path()
    if lock is None or not lock.exists():
        return "none"
    holders = lock_holders(lock)
    if holders:
        log(f"note: process {', '.join(map(str, holders))} is building NNCF's C++ extension ({lock}); "
            f"pkdn-edge does not need it")
        return "held"
    if holders is None:
        log(f"warning: {lock} may be left by an interrupted NNCF extension build; pkdn-edge does not need it, but "
            f"other NNCF tools wait on it forever: delete it when no NNCF build is running")
        return "unknown"
    try:
        lock.unlink()
    except OSError as exc:
        log(f"warning: cannot remove the stale lock {lock} of an interrupted NNCF extension build "
            f"({exc.strerror or exc}): delete it by hand, other NNCF tools wait on it forever")
        return "unknown"
    log(f"note: removed {lock}, left by an interrupted build of NNCF's C++ extension (no process held it)")
    return "removed"


def use_reference_quantizers(log: Callable[[str], None] = _stderr) -> str:
    """Make NNCF's PyTorch fake-quantizers use the reference functions (see the module docstring).

    Returns ``"reference"`` (set now or already), ``"extension"`` (the extension was already loaded
    in this process; nothing to wait for) or ``"unavailable"`` (an NNCF without these internals:
    the extension is used, after :func:`check_stale_lock`)."""
    global _checked
    if not _checked:
        _checked = True
        check_stale_lock(log)
    try:
        from nncf.torch.quantization import reference
        from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
    except ImportError:
        return "unavailable"
    executor = getattr(reference, "torch_executor", None)
    if executor is None or not hasattr(QuantizedFunctionsCPU, "_loaded_namespace"):
        return "unavailable"
    loaded = QuantizedFunctionsCPU._loaded_namespace
    if loaded is None:
        QuantizedFunctionsCPU._loaded_namespace = types.SimpleNamespace(
            Quantize_forward=executor.forward, Quantize_backward=executor.backward, pkdn_reference=True)
        return "reference"
    return "reference" if getattr(loaded, "pkdn_reference", False) or loaded is getattr(
        reference, "ReferenceQuantizedFunctions", None) else "extension"
