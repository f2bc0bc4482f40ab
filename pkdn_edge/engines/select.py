"""Model selection for the webcam loop: which SR engine runs a scale. The rule is written once, in
:data:`MODEL_SELECTION` (also the epilog of ``pkdn-webcam --help``); :func:`build_engine` follows it.

Runs without torch (``--backend torch`` aside), and never exports: a missing model is an error that
names the ``pkdn-export`` command to run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pkdn_edge.engines.base import BACKENDS as _BACKEND_TABLE
from pkdn_edge.engines.base import module_available
from pkdn_edge.engines.bicubic import BicubicEngine
from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.manifest import MANIFEST_NAME, sha256_file
from pkdn_edge.pretrained import WEIGHTS_DIR, pretrained_path

__all__ = ["BACKENDS", "MODEL_SELECTION", "build_engine", "default_artifacts", "model_candidates", "stale_export_note"]

BACKENDS = ("auto", "openvino", "onnxruntime", "tensorrt", "torch", "bicubic", "bicubic-face")
# artifact folder target names and precisions per backend, in order of preference: read off the one
# backend table (pkdn_edge.engines.base.BACKENDS, which export/formats.py agrees with)
_TARGETS = {name: info.search or info.targets[:1] for name, info in _BACKEND_TABLE.items()}
_PRECISIONS = {name: info.precisions for name, info in _BACKEND_TABLE.items()}
MODEL_SELECTION = """\
model selection (--backend auto, no --artifact), per scale s (4, 8; both for --scale auto):
  1. an exported artifact <target>_<precision>_x<s>/ (pkdn-export output: model + manifest.json) in
     $PKDN_EXPORTS, ./exports or the source checkout's exports/, trying the installed backends in the
     order tensorrt, openvino, onnxruntime (--precision narrows the search);
  2. the model shipped in the package: pkdn_edge/weights/onnx_fp32_x<s>/ (model.onnx +
     manifest.json, the ONNX export of pkdn_edge/weights/pkdn_edge_x<s>.pt), run by openvino when
     installed, else onnxruntime (a runtime dependency: works without torch).
  Otherwise: an error naming the pkdn-export command that makes the missing model (the webcam loop
  never exports by itself). --backend X restricts 1-2 to backend X (--backend torch runs
  pkdn_edge_x<s>.pt directly); --backend bicubic needs no model (the baseline: the whole frame
  upscaled, no face path)."""


def _export_roots() -> list[Path]:
    """Where user exports are looked for: $PKDN_EXPORTS, ./exports, the source checkout's exports/."""
    roots = []
    env = os.environ.get("PKDN_EXPORTS")
    if env:
        roots.append(Path(env))
    roots.append(Path.cwd() / "exports")
    proj = Path(__file__).resolve().parents[2] / "exports"  # editable install / source checkout
    if proj not in roots:
        roots.append(proj)
    return roots


def _shipped_roots() -> list[Path]:
    """Where the models shipped inside the package are: pkdn_edge/weights/."""
    return [WEIGHTS_DIR]


def _backend_available(backend: str) -> bool:
    return module_available(_BACKEND_TABLE[backend].package)


def _auto_backends() -> list[str]:
    order = ["tensorrt", "openvino", "onnxruntime"]
    return [b for b in order if _backend_available(b)] or ["onnxruntime"]


def default_artifacts(backend: str, scale: int, precision: str | None, roots: list[Path] | None = None) -> list[Path]:
    """Candidate artifact folders (first existing wins): ``<root>/<target>_<precision>_x<scale>`` for
    the backend's targets and precisions, under ``roots`` (default: the export folders,
    :func:`_export_roots`)."""
    out = []
    precs = (precision,) if precision else _PRECISIONS[backend]
    for root in (_export_roots() if roots is None else roots):
        for target in _TARGETS[backend]:
            for p in precs:
                out.append(root / f"{target}_{p}_x{scale}")
    return out


def model_candidates(backends: list[str], scale: int, precision: str | None) -> list[tuple[Path, str]]:
    """``(artifact folder, backend)`` in order of preference: the user's exports for each backend
    in turn, then the shipped models (``pkdn_edge/weights/onnx_fp32_x<scale>/``) for each backend."""
    return [(cand, b) for roots in (_export_roots(), _shipped_roots()) for b in backends
            for cand in default_artifacts(b, scale, precision, roots)]


def stale_export_note(artifact: Path, scale: int) -> str | None:
    """A warning when ``artifact`` was exported from the shipped ``pkdn_edge_x<scale>.pt`` but that
    checkpoint has changed since (e.g. a newer pkdn-edge shipped better weights): the old export
    still runs, but it is not the model this install ships. ``None`` when current or unknown."""
    ckpt = WEIGHTS_DIR / f"pkdn_edge_x{scale}.pt"
    try:
        manifest = json.loads((artifact / MANIFEST_NAME).read_text())
        source = manifest.get("source") or {}
    except (OSError, ValueError, AttributeError):
        return None  # load_engine reports unreadable manifests itself
    if source.get("weights") != ckpt.name or not source.get("sha256") or not ckpt.is_file():
        return None
    if source["sha256"] == sha256_file(ckpt):
        return None
    target, precision = manifest.get("target", "onnx"), manifest.get("precision", "fp32")
    return (f"warning: {artifact} was exported from an older {ckpt.name} (sha256 {source['sha256'][:12]}, shipped "
            f"now {sha256_file(ckpt)[:12]}); it still runs, but re-export it for the shipped model: "
            f"`{' '.join(_export_command(target, precision, scale))} --out {artifact}`")


def _export_command(target: str, precision: str, scale: int) -> list[str]:
    """The pkdn-export call for a missing model: dynamic batch, so all faces of a frame run in one call."""
    return ["pkdn-export", "--target", target, "--precision", precision, "--scale", str(scale), "--dynamic"]


def _load_engine(path: Path, backend: str | None, threads: int, precision: str | None, tta: str = "none") -> Any:
    from pkdn_edge.engines import load_engine

    return load_engine(path, backend=backend, threads=threads, precision=precision, tta=tta)


def build_engine(backend: str, scale: int, precision: str | None = None, artifact: str | None = None,
                 threads: int = 2, log=print, tta: str = "none") -> Any:
    """One SR engine for ``scale``, chosen by :data:`MODEL_SELECTION` (``artifact``: that folder instead;
    ``bicubic``/``bicubic-face``: :class:`~pkdn_edge.engines.bicubic.BicubicEngine`). ``tta`` is the
    engines' test-time augmentation (``load_engine``; bicubic has none)."""
    if backend in ("bicubic", "bicubic-face"):  # the plain baseline (the loop skips the face path) / the diagnostic
        return BicubicEngine(scale)
    if artifact:
        p = Path(artifact)
        if not p.exists():
            raise PKDNError(f"--artifact {p} does not exist")
        return _load_engine(p, None if backend == "auto" else backend, threads, precision, tta)
    backends = _auto_backends() if backend == "auto" else [backend]
    if backend != "auto" and not _backend_available(backend):
        if backend == "tensorrt":
            raise PKDNError("TensorRT is not installed (it comes with JetPack / NVIDIA's installers)")
        raise MissingDependencyError(backend, _BACKEND_TABLE[backend].extra, f"--backend {backend}")
    for cand, b in model_candidates(backends, scale, precision):
        if (cand / MANIFEST_NAME).is_file():
            log(f"engine x{scale}: {cand} ({b})")
            stale = stale_export_note(cand, scale)
            if stale:
                log(stale)
            return _load_engine(cand, b, threads, precision, tta)
    if backend == "torch":  # torch runs the shipped checkpoint itself: no export needed
        ckpt = pretrained_path(scale)
        log(f"engine x{scale}: {ckpt} (torch)")
        return _load_engine(ckpt, "torch", threads, precision, tta)
    raise _no_model_error(backend, backends, scale, precision)


def _no_model_error(backend: str, backends: list[str], scale: int, precision: str | None) -> PKDNError:
    """Nothing found: one line naming the pkdn-export command that makes the model (never run from here)."""
    b = "onnxruntime" if backend == "auto" else backends[0]  # auto: the plain ONNX model
    cmd = " ".join(_export_command(_TARGETS[b][0], precision or _PRECISIONS[b][0], scale))
    exports = ", ".join(dict.fromkeys(str(r) for r in _export_roots()))
    shipped = " or ".join(str(r / f"onnx_fp32_x{scale}") for r in _shipped_roots())
    names = "/".join(dict.fromkeys(t for x in backends for t in _TARGETS[x]))
    return PKDNError(
        f"no x{scale} model for {'backend ' + b if backend != 'auto' else 'the installed backends'}: no exported "
        f"{names}_<precision>_x{scale}/ in {exports}, no shipped {shipped}/. Export one with `{cmd}` "
        f"(needs pip install 'pkdn-edge[export]' and pkdn_edge/weights/pkdn_edge_x{scale}.pt), pass --artifact DIR, "
        f"or run the comparison baseline with --backend bicubic")
