"""pytest-benchmark suite (``make bench``; not part of ``make test``: pytest's testpaths is ``tests``).

Runs on the artifacts ``pkdn-bench`` built and listed in ``<artifacts>/index.json`` (default
``exports/bench``; set ``PKDN_BENCH_ARTIFACTS`` for another folder), so run ``pkdn-bench`` first
(``make bench`` does). Without the index every benchmark is skipped with that reason.

    python -m pytest benchmarks --benchmark-enable                  # all
    python -m pytest benchmarks --benchmark-enable -k openvino      # a subset
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ARTIFACTS = Path(os.environ.get("PKDN_BENCH_ARTIFACTS", "exports/bench"))
INDEX = ARTIFACTS / "index.json"
NUM_FACES = 16
SKIP_REASON = f"no {INDEX}: run pkdn-bench first (make bench does), or set PKDN_BENCH_ARTIFACTS"


def load_index() -> dict[str, Any] | None:
    try:
        return json.loads(INDEX.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def sr_configs() -> list[Any]:
    """Every configuration of the index (GPU ones only when CUDA is here), as pytest params."""
    index = load_index()
    if index is None:
        return [pytest.param(None, id="no-index", marks=pytest.mark.skip(reason=SKIP_REASON))]
    cuda = _has_cuda()
    out = []
    for c in index["configs"]:
        marks = []
        if c.get("device", "cpu") == "cuda" and not cuda:
            marks.append(pytest.mark.skip(reason="CUDA is not available"))
        out.append(pytest.param(c, id=c["id"], marks=marks))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sr_config" in metafunc.fixturenames:
        metafunc.parametrize("sr_config", sr_configs())


@pytest.fixture(scope="session")
def index() -> dict[str, Any]:
    idx = load_index()
    if idx is None:
        pytest.skip(SKIP_REASON)
    return idx


@pytest.fixture(scope="session")
def threads(index: dict[str, Any]) -> int:
    return int(index.get("threads", 2))


@pytest.fixture(scope="session")
def lr_faces(index: dict[str, Any]) -> dict[int, list[np.ndarray]]:
    """``{scale: [LR face (h,w,3) uint8 BGR]}``: protocol LR of the first evaluation faces."""
    from pkdn_edge.export.bench.quality import load_faces, make_lr

    hr, _ = load_faces(index["faces"], NUM_FACES)
    return {s: [np.ascontiguousarray(x[..., ::-1]) for x in make_lr(hr, s)] for s in (4, 8)}


@pytest.fixture(scope="session")
def runners(threads: int):
    """Opens each configuration once per session: ``runners(config) -> (runner, sync)``."""
    from pkdn_edge.export.bench.worker import device_sync, open_runner

    cache: dict[str, Any] = {}

    def get(cfg: dict[str, Any]) -> tuple[Any, Any]:
        if cfg["id"] not in cache:
            cache[cfg["id"]] = (open_runner(cfg, threads)[0], device_sync(cfg))
        return cache[cfg["id"]]

    yield get
    for runner, _ in cache.values():
        close = getattr(runner, "close", None)
        if close is not None:
            close()
