"""Save/load PKDN checkpoints: ``{"model": state_dict, "config": PKDNConfig dict, "meta": {...}}``.

Writes are atomic (temp file, fsync, ``os.replace``; :mod:`pkdn_edge.atomic`); loads use
``torch.load(weights_only=True)`` and turn missing, truncated or foreign files into one clear
:class:`~pkdn_edge.errors.PKDNError`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from pkdn_edge.atomic import atomic_write_bytes
from pkdn_edge.errors import PKDNError

from .pkdn import PKDN, PKDNConfig
from .reparam import reparameterize


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`pkdn_edge.atomic.atomic_write_bytes`:
    temp file, fsync, rename; mode ``0666 & ~umask``; temp files of earlier killed saves removed).

    The checkpoint is serialized in memory first, so a full disk or a read-only folder is a plain
    ``OSError`` naming the file (one ``error:`` line through ``run_cli``), not torch's
    ``PytorchStreamWriter`` RuntimeError, and never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


def _load_failure(exc: Exception) -> str:
    """torch.load's failure in one short clause: its multi-line messages (and the hint to retry with
    ``weights_only=False``, which would run code from the file) become one line."""
    text = str(exc)
    if "weights only load failed" in text.lower():
        glob = re.search(r"unsupported GLOBAL ([\w.]+)", text)
        what = f" ({glob.group(1)})" if glob else ""
        return (f"it holds Python objects{what} a weights file does not have; pkdn-edge loads checkpoints "
                f"without running code from them")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = re.split(r"(?<=[.:])\s", first, maxsplit=1)[0].rstrip(".:")  # its first sentence
    if isinstance(exc, OSError) and exc.strerror:
        first = exc.strerror
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``); clear error when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise PKDNError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, not a torch file, ...
        raise PKDNError(f"checkpoint {path} is corrupt or not a pkdn-edge checkpoint ({_load_failure(exc)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PKDNError(f"checkpoint {path} has no 'model'/'config' entries: not a pkdn-edge checkpoint")
    return ckpt


def load_model(path: str | Path, merge: bool = True) -> tuple[PKDN, dict]:
    """Build the network described by a checkpoint and load its weights (fp32, eval mode).

    Returns ``(model, meta)``; ``meta`` is the checkpoint's free-form metadata (model card numbers).
    A ``block="rep"`` checkpoint (re-parameterized training form) comes back merged into its plain
    network (:func:`~pkdn_edge.models.reparam.reparameterize`: same function, plain MACs), which is
    what inference, evaluation and export want; ``merge=False`` keeps the training form.
    """
    ckpt = read_checkpoint(path)
    try:
        cfg = PKDNConfig.from_dict(ckpt["config"])
        model = PKDN(cfg)
        state = {k: v.float() for k, v in ckpt["model"].items()}
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise PKDNError(f"checkpoint {path} does not match the PKDN architecture: {exc}") from None
    for name, v in state.items():
        if not torch.isfinite(v).all():
            raise PKDNError(f"checkpoint {path} holds NaN/Inf weights in {name}")
    if merge:
        model = reparameterize(model)
    model.eval()
    return model, dict(ckpt.get("meta", {}))


def export_weights(model: PKDN, path: str | Path, meta: dict | None = None, half: bool = False) -> None:
    """Write the inference-only checkpoint (no optimizer); ``half`` stores weights as fp16."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    save_atomic({"model": state, "config": model.cfg.to_dict(), "meta": meta or {}}, path)
