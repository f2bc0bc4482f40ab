"""One small timer for the loop's per-stage times (ms): the numbers of the overlay and ``--stats-json``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator

__all__ = ["StageTimer"]


class StageTimer:
    """Wall time per named stage, in ms, in :attr:`ms` (every name of ``stages`` starts at 0.0).

        tm = StageTimer(("sr", "paste", "total"))
        with tm.stage("sr"):
            ...
        tm.stop("total")          # time since the timer was made (or since ``start``, a perf_counter time)

    A stage timed twice adds up. ``time.perf_counter`` throughout.
    """

    def __init__(self, stages: Iterable[str] = (), start: float | None = None) -> None:
        self.ms: dict[str, float] = dict.fromkeys(stages, 0.0)
        self.start = time.perf_counter() if start is None else float(start)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t) * 1e3

    def stop(self, name: str = "total") -> dict[str, float]:
        """Book the time since the start under ``name``; returns :attr:`ms`."""
        self.ms[name] = (time.perf_counter() - self.start) * 1e3
        return self.ms
