"""What ``pkdn-bench`` measures: one :class:`BenchConfig` per model × runtime × precision × scale,
and the artifacts they need (built with :func:`pkdn_edge.export.exporter.run_export`).

CPU configurations (ids):

* ``pkdn-x{s}-torch-fp32``: our student in eager PyTorch (the naive baseline, the ``.pt`` file);
* ``pkdn-x{s}-onnxruntime-fp32``, ``pkdn-x{s}-openvino-fp32`` (f32 inference hint) and
  ``pkdn-x{s}-openvino-int8`` (NNCF INT8): exported artifacts, batch 1;
* ``pkdn-x{s}-openvino-int8-flip``: the INT8 artifact with flip test-time augmentation (each face
  and its mirror image, two batch-1 calls, outputs averaged);
* ``<name>-x{s}-<backend>-<precision>``: pruned / compressed variants given with ``--variants``
  (artifact folders, folders of artifacts, or ``.pt`` checkpoints run in eager PyTorch);
* ``fsrcnn-x4``, ``espcn-x4``, ``lapsrn-x4``, ``lapsrn-x8``: OpenCV dnn_superres peers;
* ``bicubic-x{s}``: PIL bicubic.

GPU configurations (only with CUDA): ``pkdn-x{s}-torch-fp32-cuda``, ``pkdn-x{s}-torch-fp16-cuda``,
``pkdn-x{s}-onnxruntime-fp32-cuda`` (CUDA execution provider) and, with TensorRT,
``pkdn-x{s}-tensorrt-fp16`` / ``-int8`` (engines built on this machine by the exporter).

Artifacts go to ``<artifacts>/<target>_<precision>_x<s>/`` (``pkdn-export``'s naming) and are reused
while the weights (sha256) and, for INT8, the calibration settings recorded in the manifest match
(``--rebuild`` forces a new export).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.errors import PKDNError

# (export target, precision) of our CPU configurations; target "torch" = the checkpoint itself
CPU_FORMS: tuple[tuple[str, str], ...] = (("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"),
                                         ("openvino", "int8"))
TTA_FORM = ("openvino", "int8")  # also measured with flip test-time augmentation (``...-flip``)
TARGET_BACKEND = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
BACKEND_LABEL = {"torch": "PyTorch eager", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
                 "tensorrt": "TensorRT", "opencv-dnn": "OpenCV dnn", "pil": "PIL"}


@dataclass
class BenchConfig:
    """One measured configuration (JSON-serializable: it is also the worker's spec).

    Attributes:
        id: unique slug (``pkdn-x4-openvino-int8``), what ``--configs`` patterns match.
        label: display name.
        kind: ``ours``, ``variant``, ``peer`` or ``baseline``.
        runtime: ``engine`` (:func:`pkdn_edge.engines.load_engine`), ``opencv`` (a dnn_superres
            peer) or ``bicubic``.
        backend / precision / device: what runs it (``openvino``/``int8``/``cpu``).
        path: artifact folder, ``.pt`` checkpoint or ``.pb`` graph (None for bicubic / until built).
        options: keywords for ``load_engine`` (``device``, ``precision`` hint, ``providers``).
        export: ``(target, precision)`` still to build from ``weights`` (None: nothing to build).
        size_bytes: model size on disk (all files of an artifact; the checkpoint; the graph).
    """

    id: str
    label: str
    kind: str
    scale: int
    runtime: str
    backend: str
    precision: str
    device: str = "cpu"
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    export: tuple[str, str] | None = None
    weights: str | None = None
    size_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["export"] = list(self.export) if self.export else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if known.get("export"):
            known["export"] = tuple(known["export"])
        return cls(**known)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def size_on_disk(path: str | Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size if p.exists() else 0


def select(configs: list[BenchConfig], patterns: list[str] | None) -> list[BenchConfig]:
    """Configurations whose id matches any glob pattern (all when ``patterns`` is empty)."""
    if not patterns:
        return configs
    return [c for c in configs if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]


# -- our student -------------------------------------------------------------------------------------


def our_cpu_configs(weights: dict[int, Path]) -> list[BenchConfig]:
    out = []
    for s, w in sorted(weights.items()):
        for target, prec in CPU_FORMS:
            backend = TARGET_BACKEND[target]
            hint = " (f32 hint)" if target == "openvino" and prec == "fp32" else ""
            cfg = BenchConfig(id=f"pkdn-x{s}-{backend}-{prec}", label=f"PKDN student ×{s}, {BACKEND_LABEL[backend]} "
                              f"{prec.upper()}{hint}", kind="ours", scale=s, runtime="engine", backend=backend,
                              precision=prec, weights=str(w))
            if target == "torch":
                cfg.path, cfg.size_bytes = str(w), (size_on_disk(w) if Path(w).is_file() else None)
                cfg.options = {**(cfg.options or {}), "window": 0}  # per face: the 128/s training crop
                cfg.notes.append("eager PyTorch, fp32 compute (checkpoint loaded as fp32)")
            else:
                cfg.export = (target, prec)
            out.append(cfg)
            if (target, prec) == TTA_FORM:
                flip = BenchConfig(id=f"{cfg.id}-flip", label=f"{cfg.label} + flip TTA", kind="ours", scale=s,
                                   runtime="engine", backend=backend, precision=prec, weights=str(w),
                                   options={"tta": "flip"}, export=(target, prec))
                flip.notes.append("mirror self-ensemble: the face and its mirror image (two batch-1 calls), "
                                  "outputs averaged")
                out.append(flip)
    return out


def our_gpu_configs(weights: dict[int, Path], gpu: dict[str, Any]) -> list[BenchConfig]:
    """CUDA configurations (empty without CUDA)."""
    if not gpu.get("cuda"):
        return []
    out = []
    for s, w in sorted(weights.items()):
        for prec in ("fp32", "fp16"):
            out.append(BenchConfig(id=f"pkdn-x{s}-torch-{prec}-cuda", label=f"PKDN student ×{s}, PyTorch eager "
                                   f"{prec.upper()} (CUDA)", kind="ours", scale=s, runtime="engine", backend="torch",
                                   precision=prec, device="cuda", path=str(w),
                                   size_bytes=size_on_disk(w) if w.is_file() else None,
                                   weights=str(w), options={"device": "cuda", "precision": prec}))
        if "CUDAExecutionProvider" in gpu.get("onnxruntime_providers", []):
            out.append(BenchConfig(id=f"pkdn-x{s}-onnxruntime-fp32-cuda", label=f"PKDN student ×{s}, ONNX Runtime "
                                   "FP32 (CUDA EP)", kind="ours", scale=s, runtime="engine", backend="onnxruntime",
                                   precision="fp32", device="cuda", export=("onnx", "fp32"), weights=str(w),
                                   options={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}))
        if gpu.get("tensorrt"):
            for prec in ("fp16", "int8"):
                out.append(BenchConfig(id=f"pkdn-x{s}-tensorrt-{prec}", label=f"PKDN student ×{s}, TensorRT "
                                       f"{prec.upper()}", kind="ours", scale=s, runtime="engine", backend="tensorrt",
                                       precision=prec, device="cuda", export=("tensorrt", prec), weights=str(w)))
    return out


DEPLOY_ORDER = ("openvino-int8", "openvino-fp32", "onnxruntime-fp32", "torch-fp32")


def deploy_choice(by_id: dict[str, Any], scale: int) -> Any:
    """What a CPU deployment would run at ``scale`` among ``by_id`` (id → config or result):
    ``pkdn-x{s}-openvino-int8`` first, then OpenVINO fp32, ONNX Runtime, PyTorch. None if none."""
    for suffix in DEPLOY_ORDER:
        c = by_id.get(f"pkdn-x{scale}-{suffix}")
        if c is not None:
            return c
    return None


def artifact_folder(root: Path, target: str, precision: str, scale: int) -> Path:
    return Path(root) / f"{target}_{precision}_x{scale}"


def artifact_matches(m: Any, target: str, precision: str, digest: str, calib: Any = None) -> bool:
    """Whether the artifact of manifest ``m`` is what :func:`ensure_artifact` would export: same
    target, precision, batch 1, weights (sha256), passed verification and, for INT8, the same
    calibration (face count, folder or generated faces) and NNCF settings."""
    if (m.target, m.precision, m.source.get("sha256"), m.batch, m.dynamic) != (target, precision, digest, 1, False):
        return False
    if m.verification.get("passed") is not True:
        return False
    if precision != "int8" or calib is None:
        return True
    c, q = m.extras.get("calibration", {}), m.extras.get("quantization", {})
    faces = str(c.get("faces", ""))
    st = calib.settings
    same_source = ("generated" in faces) == bool(calib.synthetic) and (
        calib.folder is None or str(Path(calib.folder)) in faces)
    return bool(same_source and c.get("n") == calib.size and q.get("preset") == st.preset
                and list(q.get("ignore", [])) == list(st.ignore) and q.get("subset_size") == st.subset_size
                and q.get("fast_bias_correction") == st.fast_bias_correction)


def ensure_artifact(target: str, precision: str, weights: Path, folder: Path, *, threads: int = 2,
                    calib: Any = None, verify_faces: Path | None = None, rebuild: bool = False,
                    log: Callable[[str], None] = print) -> Path:
    """An exported, verified artifact of ``weights`` in ``folder`` (:func:`run_export`, batch 1).

    An artifact already there is reused when :func:`artifact_matches` (so ``pkdn-export``'s own
    default artifacts, same naming ``<target>_<precision>_x<s>``, are reused too); anything else
    in ``folder`` is replaced by a new export."""
    from pkdn_edge.manifest import read_manifest, sha256_file

    digest = sha256_file(weights)
    if folder.is_dir() and not rebuild:
        try:
            m = read_manifest(folder)
            if artifact_matches(m, target, precision, digest, calib):
                log(f"reusing {folder} ({target} {precision} x{m.scale}, same weights and settings)")
                return folder
        except PKDNError:
            pass  # damaged or foreign: re-export
    from pkdn_edge.export.exporter import run_export
    from pkdn_edge.export.settings import ExportRequest

    rep = run_export(ExportRequest(target, precision, weights, out=folder, batch=1, calib=calib, threads=threads,
                                   window=0,  # per-face latency and quality on the 128/s training crop
                                   verify=True, verify_faces=verify_faces, benchmark=False, log=log))
    par = rep.parity
    delta = f" (PSNR delta {par.psnr_delta:+.3f} dB vs PyTorch)" if par else ""
    log(f"exported {folder} in {rep.seconds:.0f} s{delta}")
    return folder


def build_artifacts(configs: list[BenchConfig], root: Path, **kw: Any) -> list[str]:
    """Export what the configurations need (each (weights, target, precision) once); fills ``path``
    and ``size_bytes``. Returns notes for configurations that could not be built (they are dropped
    from ``configs`` in place)."""
    notes: list[str] = []
    built: dict[tuple, Path | None] = {}
    errors: dict[tuple, str] = {}
    for c in list(configs):
        if not c.export:
            continue
        target, prec = c.export
        key = (c.weights, target, prec)
        if key not in built:
            try:
                folder = artifact_folder(root, target, prec, c.scale)
                built[key] = ensure_artifact(target, prec, Path(c.weights), folder, **kw)
            except PKDNError as exc:
                built[key], errors[key] = None, str(exc)
        if built[key] is None:
            configs.remove(c)
            notes.append(f"{c.id}: skipped: the {target} {prec} artifact could not be built ({errors[key]})")
            continue
        c.path = str(built[key])
        c.size_bytes = size_on_disk(c.path)
        c.export = None
    return notes


# -- variants, peers, bicubic ------------------------------------------------------------------------


def _checkpoint_scale(path: Path) -> int:
    from pkdn_edge.models.checkpoint import read_checkpoint

    return int(read_checkpoint(path)["config"]["scale"])


def variant_configs(paths: list[Path], gpu: bool = False) -> tuple[list[BenchConfig], list[str]]:
    """Configurations for ``--variants``: artifact folders (with ``manifest.json``), folders holding
    artifacts and/or ``.pt`` checkpoints, or ``.pt`` files."""
    from pkdn_edge.engines.base import DEFAULT_BACKEND
    from pkdn_edge.manifest import MANIFEST_NAME, read_manifest

    items: list[Path] = []
    notes: list[str] = []
    for p in map(Path, paths):
        if (p / MANIFEST_NAME).is_file() or (p.is_file() and p.suffix == ".pt"):
            items.append(p)
        elif p.is_dir():
            kids = sorted(k for k in p.iterdir()
                          if (k / MANIFEST_NAME).is_file() or (k.is_file() and k.suffix == ".pt"))
            if not kids:
                notes.append(f"variants: {p} holds no artifact folders or .pt checkpoints")
            items.extend(kids)
        else:
            notes.append(f"variants: {p} does not exist: skipped")
    out = []
    for it in items:
        name = slug(it.stem if it.is_file() else it.name)
        try:
            if it.is_file():
                s = _checkpoint_scale(it)
                out.append(BenchConfig(id=f"{name}-x{s}-torch-fp32", label=f"{it.stem} ×{s}, PyTorch eager FP32",
                                       kind="variant", scale=s, runtime="engine", backend="torch", precision="fp32",
                                       path=str(it), size_bytes=size_on_disk(it)))
                continue
            m = read_manifest(it)
            backend = DEFAULT_BACKEND.get(m.target, "")
            if backend == "tensorrt" and not gpu:
                notes.append(f"variants: {it} is a TensorRT artifact and this machine has no GPU: skipped")
                continue
            if backend == "torch":  # a torch export artifact: its model file is a checkpoint
                path = str(m.path())
            else:
                path = str(it)
            out.append(BenchConfig(id=f"{name}-x{m.scale}-{backend}-{m.precision}",
                                   label=f"{it.name} ×{m.scale}, {BACKEND_LABEL.get(backend, backend)} "
                                         f"{m.precision.upper()}",
                                   kind="variant", scale=int(m.scale), runtime="engine", backend=backend,
                                   precision=m.precision, path=path, size_bytes=size_on_disk(it),
                                   device="cuda" if backend == "tensorrt" else "cpu",
                                   notes=[f"preset {m.preset}, {m.source.get('weights', '?')}"]))
        except PKDNError as exc:
            notes.append(f"variants: {it}: {exc}")
    seen: set[str] = set()
    for c in out:  # keep ids unique
        base, k = c.id, 2
        while c.id in seen:
            c.id = f"{base}-{k}"
            k += 1
        seen.add(c.id)
    return out, notes


def peer_configs(folder: Path | None, scales: tuple[int, ...]) -> tuple[list[BenchConfig], list[str]]:
    from .peers import find_peers

    found, notes = find_peers(folder, scales)
    out = [BenchConfig(id=f"{m.key}-x{m.scale}", label=f"{m.name} ×{m.scale} (OpenCV dnn_superres model)", kind="peer",
                       scale=m.scale, runtime="opencv", backend="opencv-dnn", precision="fp32", path=str(p),
                       size_bytes=size_on_disk(p), notes=[m.paper])
           for m, p in found]
    return out, notes


def bicubic_configs(scales: tuple[int, ...]) -> list[BenchConfig]:
    return [BenchConfig(id=f"bicubic-x{s}", label=f"bicubic ×{s} (PIL)", kind="baseline", scale=s, runtime="bicubic",
                        backend="pil", precision="uint8", size_bytes=0) for s in scales]
