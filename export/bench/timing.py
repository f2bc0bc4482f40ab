"""Latency statistics and peak-memory measurement.

* :func:`time_calls`: ``warmup`` untimed calls, then ``runs`` calls each timed with
  ``time.perf_counter`` (one sample per call; ``sync`` is called inside the timed region, e.g.
  ``torch.cuda.synchronize`` for GPU work, so asynchronous launches are not under-counted).
* :func:`latency_stats`: p50/p90/p99 (``numpy.percentile``, linear interpolation), mean, std, min,
  max and the sequential throughput ``fps = runs / sum(samples)``.
* :class:`PeakRSS`: peak **resident set size** growth of this process over a region, from
  ``/proc/self/status`` (``VmRSS`` at the start, ``VmHWM`` at the end after resetting it with
  ``/proc/self/clear_refs``). It counts native allocations (ONNX Runtime, OpenVINO, oneDNN, OpenCV)
  that ``tracemalloc`` cannot see. Off Linux it falls back to ``ru_maxrss`` (not resettable: a
  process-lifetime peak).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int, runs: int,
               sync: Callable[[], None] | None = None) -> np.ndarray:
    """Call ``fn`` on ``inputs`` (cycled) ``warmup`` times untimed, then ``runs`` times timed.
    Returns the ``runs`` latencies in milliseconds (float64)."""
    if not len(inputs):
        raise ValueError("time_calls needs at least one input")
    n = len(inputs)
    for i in range(max(0, int(warmup))):
        fn(inputs[i % n])
        if sync is not None:
            sync()
    out = np.empty(max(1, int(runs)), np.float64)
    clock = time.perf_counter
    for i in range(len(out)):
        x = inputs[i % n]
        t = clock()
        fn(x)
        if sync is not None:
            sync()
        out[i] = clock() - t
    return out * 1e3


def latency_stats(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{"p50", "p90", "p99", "mean", "std", "min", "max", "fps", "runs"}`` of latencies in ms."""
    v = np.asarray(samples_ms, np.float64)
    if v.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    total = float(v.sum())
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(v.mean()),
            "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "fps": float(v.size / total * 1e3) if total > 0 else float("inf"), "runs": int(v.size)}


def _status_kb(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_kb() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r / 1024) if sys.platform == "darwin" else int(r)  # macOS: bytes, Linux: KiB


class PeakRSS:
    """Peak resident-memory growth over a region: ``start()`` … ``stop()`` → MiB (see module doc).

    ``method`` says how it was measured (the report prints it).
    """

    def __init__(self) -> None:
        self.base_kb = 0
        self.method = ""
        self._reset = False

    def start(self) -> "PeakRSS":
        rss = _status_kb("VmRSS")
        self._reset = False
        if rss is not None:
            try:
                CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
                self._reset = True
            except OSError:
                pass
        if rss is not None and self._reset:
            self.base_kb = rss
            self.method = "RSS: /proc/self/status VmHWM (reset via clear_refs) minus VmRSS at start"
        else:
            self.base_kb = _status_kb("VmRSS") or _maxrss_kb()
            self.method = "RSS: ru_maxrss (process-lifetime peak, not resettable) minus RSS at start"
        return self

    def stop(self) -> dict[str, float | str]:
        peak = _status_kb("VmHWM") if self._reset else _maxrss_kb()
        peak = peak if peak is not None else _maxrss_kb()
        return {"base_mb": round(self.base_kb / 1024, 2), "peak_mb": round(peak / 1024, 2),
                "peak_delta_mb": round(max(0, peak - self.base_kb) / 1024, 2), "method": self.method}
