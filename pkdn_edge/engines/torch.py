"""PyTorch backend: runs a ``.pt`` checkpoint directly, or a ``torch`` export artifact.

Needs the ``train`` extra (``pip install 'pkdn-edge[train]'``). ``threads`` sets
``torch.set_num_threads``; ``device`` (keyword) picks ``cpu``/``cuda`` (default: cuda when
available). fp16 computes in fp16 on CUDA only; on CPU an fp16 artifact runs its fp16-rounded
weights with fp32 arithmetic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import Manifest, sha256_file

from .base import Engine, check_precision


def checkpoint_manifest(path: Path, model: Any, precision: str = "fp32", window: int | None = None) -> Manifest:
    """A manifest describing a bare checkpoint (not written anywhere); input window ``window``, by default
    the serving one (:func:`pkdn_edge.pretrained.serve_window`), as an export would have; 0 = the 128/s crop."""
    from pkdn_edge.pretrained import serve_window

    cfg = model.cfg
    n = serve_window(cfg.scale) if window is None else (int(window) or 128 // cfg.scale)
    return Manifest(target="torch", precision=precision, scale=cfg.scale, model_file=path.name,
                    files={path.name: sha256_file(path)}, preset=str(getattr(model, "preset", "edge")),
                    role=cfg.role, input_shape=["batch", 3, n, n],
                    output_shape=["batch", 3, n * cfg.scale, n * cfg.scale],
                    batch=None, dynamic=True, root=path.parent)


class TorchEngine(Engine):
    """A PKDN checkpoint in eager PyTorch."""

    backend = "torch"

    def __init__(self, source: Manifest | Path, threads: int = 2, precision: str | None = None,
                 device: str | None = None, window: int | None = None) -> None:
        import torch

        from pkdn_edge.models.checkpoint import load_model

        path = source.path() if isinstance(source, Manifest) else Path(source)
        model, meta = load_model(path)
        manifest = source if isinstance(source, Manifest) else checkpoint_manifest(path, model, window=window)
        if not isinstance(source, Manifest) and meta.get("preset"):
            manifest.preset = str(meta["preset"])
        super().__init__(manifest, threads, precision)
        check_precision(manifest, precision, self.backend, allowed_hints=("fp32", "fp16"))
        torch.set_num_threads(max(1, self.threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        want = precision or manifest.precision
        # fp16 computes in fp16 on CUDA; on CPU (slow/missing half kernels) an fp16 artifact's
        # weights (already rounded to fp16) run with fp32 arithmetic, and fp16 on fp32 weights is refused.
        if want == "fp16" and self.device.type != "cuda" and manifest.precision != "fp16":
            raise PKDNError("torch backend: fp16 compute needs a CUDA device; use precision fp32 on CPU")
        self.dtype = torch.float16 if want == "fp16" and self.device.type == "cuda" else torch.float32
        self.precision = want if want in ("fp16", "fp32") else "fp32"
        self.model = model.to(self.device, self.dtype).eval()
        self._torch = torch

    def _infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x).to(self.device, self.dtype))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return y.float().cpu().numpy()


def open_engine(source: Manifest | Path, threads: int = 2, precision: str | None = None, **options: Any) -> TorchEngine:
    """Backend entry point used by :func:`pkdn_edge.engines.load_engine`."""
    return TorchEngine(source, threads, precision, **options)
