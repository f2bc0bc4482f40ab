"""``manifest.json``: what an exported artifact is, how to feed it, and proof that its files are intact.

Every ``pkdn-export`` artifact folder holds its model file(s) plus one ``manifest.json``::

    exports/openvino_int8_x4/
        model.xml, model.bin      the model (``model_file`` names the one a runtime opens)
        manifest.json             this file: model, preset, scale, input/output, normalization,
                                  precision, sha256 of every file, tool versions, verification

Runtimes (:mod:`pkdn_edge.engines`) read the manifest, never guess: input name and shape
``(N,3,h,w)``, layout ``NCHW``, colour ``RGB``, ``x = (pixel/255 - mean) / std`` and the output
``(N,3,s·h,s·w)`` RGB in the same normalization (clamp to ``range`` before converting to pixels).

:func:`read_manifest` is the one typed loader: every field is checked (types, ranges, finite
numbers, sizes before anything is allocated) and every file a runtime opens must be listed and
hashed (``model_file``, an OpenVINO ``.xml``'s ``.bin``, a registered ``engine_file``); it re-hashes
every listed file and raises one :class:`PKDNError` line on a missing, changed or corrupt file, so a
half-copied or hand-edited artifact never runs. No torch needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .atomic import atomic_write_bytes
from .errors import PKDNError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_NORMALIZATION: dict[str, list[float]] = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "range": [0.0, 1.0]}
PRECISIONS = ("fp32", "fp16", "int8")
MAX_SCALE = 16        # super-resolution factors pkdn-edge can run (the students are x4 and x8)
MAX_LR_SIDE = 512     # input face side in px (the students take 16 or 32): larger shapes are refused
MAX_BATCH = 1024      # a fixed batch larger than this is refused before any buffer is allocated
_TEXT_FIELDS = ("target", "model_file", "model", "preset", "role", "input_name", "layout", "color", "dtype",
                "output_name", "created")
_DICT_FIELDS = ("source", "tools", "verification", "extras")


@dataclass
class Manifest:
    """One exported artifact (see the module docstring for the folder layout).

    Attributes:
        target: export target (``onnx``, ``openvino``, ``tensorrt``, ``torch``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        scale: super-resolution factor; the output is ``scale`` × the input on both axes.
        model_file: the file a runtime opens (``model.onnx``, ``model.xml``, ``model.pt``); for
            TensorRT the Q/DQ or fp32 ONNX the engine is built from.
        files: every file of the artifact (relative name → sha256 hex), ``model_file`` included.
        input_shape / output_shape: ``[N, 3, h, w]``; ``N`` is an int for a fixed batch or the
            string ``"batch"`` when ``dynamic`` is true.
        batch: the fixed batch size, or ``None`` with ``dynamic`` true.
        engine_file: a serialized TensorRT engine built on the device (``None`` until built).
        verification: parity numbers of the export (max abs diff, PSNR delta, faces, backend).
        tools: versions of the tools that made the artifact.
        extras: target-specific facts (quantization settings, build commands, ...).
    """

    target: str
    precision: str
    scale: int
    model_file: str
    files: dict[str, str] = field(default_factory=dict)
    model: str = "pkdn"
    preset: str = "edge"
    role: str = "student"
    input_name: str = "lr"
    input_shape: list[Any] = field(default_factory=lambda: [1, 3, 32, 32])
    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    normalization: dict[str, list[float]] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_NORMALIZATION)))
    output_name: str = "sr"
    output_shape: list[Any] = field(default_factory=lambda: [1, 3, 128, 128])
    batch: int | None = 1
    dynamic: bool = False
    engine_file: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    root: Path | None = field(default=None, compare=False, repr=False)

    # -- derived -------------------------------------------------------------------------------
    @property
    def lr_size(self) -> tuple[int, int]:
        """(h, w) of one input face."""
        return int(self.input_shape[2]), int(self.input_shape[3])

    @property
    def hr_size(self) -> tuple[int, int]:
        """(s·h, s·w) of one output face."""
        return int(self.output_shape[2]), int(self.output_shape[3])

    def path(self, name: str | None = None) -> Path:
        """Absolute path of a file of the artifact (default: ``model_file``). A name that leads out of
        the artifact folder (``../x``, an absolute path, a symlink pointing elsewhere) is a
        :class:`PKDNError`: an artifact only ever opens its own files."""
        if self.root is None:
            raise PKDNError("this manifest was not read from a folder; its files have no location")
        name = name or self.model_file
        _check_file_name(name, f" in {self.root / MANIFEST_NAME}")
        p = self.root / name
        root = self.root.resolve()
        if root != p.resolve() and root not in p.resolve().parents:
            raise PKDNError(f"{p} leads outside the artifact folder {self.root} (a symlink?); an artifact may only "
                            f"use files inside its folder: re-export it")
        return p

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path | None = None) -> "Manifest":
        known = {f.name for f in fields(cls)} - {"root"}
        missing = [k for k in ("target", "precision", "scale", "model_file") if k not in d]
        if missing:
            raise PKDNError(f"manifest{_where(root)} lacks {', '.join(missing)}; re-export the artifact")
        _check_fields(d, _where(root))
        m = cls(**{k: v for k, v in d.items() if k in known})
        m.root = root
        _validate(m)
        return m


def _where(root: Path | None) -> str:
    return f" in {Path(root) / MANIFEST_NAME}" if root is not None else ""


def _bad(field_name: str, value: Any, where: str, want: str) -> PKDNError:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return PKDNError(f"manifest field {field_name} = {text}{where} is not valid: {want}; re-export the artifact")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite_list(d: dict, key: str, n: int, where: str) -> list:
    v = d.get(key)
    if not isinstance(v, list) or len(v) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        raise _bad(f"normalization.{key}", v, where, f"must be a list of {n} finite numbers")
    return [float(x) for x in v]


def _check_shape(key: str, shape: Any, dynamic: bool, side_limit: int, where: str) -> None:
    if not isinstance(shape, list) or len(shape) != 4:
        raise _bad(key, shape, where, "must be a list [N, 3, h, w]")
    n, c, h, w = shape
    if not (_is_int(n) and 1 <= n <= MAX_BATCH) and not (dynamic and isinstance(n, str) and n):
        raise _bad(key, shape, where, f"N must be an int in [1, {MAX_BATCH}] (or a name with dynamic: true)")
    if c != 3 or not _is_int(c):
        raise _bad(key, shape, where, "must have 3 (RGB) channels: [N, 3, h, w]")
    if not all(_is_int(v) and 1 <= v <= side_limit for v in (h, w)):
        raise _bad(key, shape, where, f"h and w must be ints in [1, {side_limit}]")


def _check_fields(d: dict, where: str) -> None:
    """Types and ranges of every known field of a manifest dict (one :class:`PKDNError` line each),
    before anything is built from it: a hand-edited or damaged manifest never reaches a runtime."""
    fv = d.get("format_version", FORMAT_VERSION)
    if not _is_int(fv) or fv < 1:
        raise _bad("format_version", fv, where, f"must be an int >= 1 (this pkdn-edge writes {FORMAT_VERSION})")
    if fv > FORMAT_VERSION:
        raise PKDNError(f"manifest format {fv}{where} is newer than this pkdn-edge understands "
                        f"({FORMAT_VERSION}); upgrade pkdn-edge")
    for k in _TEXT_FIELDS:
        if k in d and not isinstance(d[k], str):
            raise _bad(k, d[k], where, "must be a string")
    if d["precision"] not in PRECISIONS:
        raise PKDNError(f"manifest precision {d['precision']!r}{where} is not one of {PRECISIONS}")
    s = d["scale"]
    if not _is_int(s) or not 1 <= s <= MAX_SCALE:
        raise _bad("scale", s, where, f"must be an int in [1, {MAX_SCALE}]")
    files = d.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in files.items()):
        raise _bad("files", files, where, "must be a mapping {file name: sha256 hex}")
    for k in _DICT_FIELDS:
        if k in d and not isinstance(d[k], dict):
            raise _bad(k, d[k], where, "must be a mapping")
    dynamic = d.get("dynamic", False)
    if not isinstance(dynamic, bool):
        raise _bad("dynamic", dynamic, where, "must be true or false")
    b = d.get("batch", 1)
    if b is not None and not (_is_int(b) and 1 <= b <= MAX_BATCH):
        raise _bad("batch", b, where, f"must be null or an int in [1, {MAX_BATCH}]")
    if "input_shape" in d:
        _check_shape("input_shape", d["input_shape"], dynamic, MAX_LR_SIDE, where)
    if "output_shape" in d:
        _check_shape("output_shape", d["output_shape"], dynamic, MAX_LR_SIDE * MAX_SCALE, where)
    if not dynamic and "input_shape" in d and b is not None and d["input_shape"][0] != b:
        raise _bad("batch", b, where, f"must equal the input batch {d['input_shape'][0]} of a fixed-batch artifact")
    if d.get("engine_file") is not None and not isinstance(d["engine_file"], str):
        raise _bad("engine_file", d["engine_file"], where, "must be null or a file name")
    norm = d.get("normalization", DEFAULT_NORMALIZATION)
    if not isinstance(norm, dict):
        raise _bad("normalization", norm, where, "must be a mapping {mean, std, range}")
    full = {**DEFAULT_NORMALIZATION, **norm}
    _finite_list(full, "mean", 3, where)
    if any(v == 0 for v in _finite_list(full, "std", 3, where)):
        raise _bad("normalization.std", full["std"], where, "must be nonzero (it divides every pixel)")
    lo, hi = _finite_list(full, "range", 2, where)
    if not lo < hi:
        raise _bad("normalization.range", full["range"], where, "must be [lo, hi] with lo < hi")


def required_files(m: Manifest) -> list[str]:
    """The files a runtime opens: ``model_file``, an OpenVINO ``.xml``'s weights (the ``.bin`` of the
    same name) and a registered ``engine_file``; each must be listed (and so hashed) in ``files``."""
    names = [m.model_file]
    if m.model_file.lower().endswith(".xml"):
        names.append(m.model_file[:-4] + ".bin")
    if m.engine_file:
        names.append(m.engine_file)
    return names


def _validate(m: Manifest) -> None:
    where = _where(m.root)
    _check_fields(m.to_dict(), where)
    if int(m.format_version) > FORMAT_VERSION:
        raise PKDNError(f"manifest format {m.format_version}{where} is newer than this pkdn-edge understands "
                        f"({FORMAT_VERSION}); upgrade pkdn-edge")
    if m.precision not in PRECISIONS:
        raise PKDNError(f"manifest precision {m.precision!r}{where} is not one of {PRECISIONS}")
    if m.layout != "NCHW" or m.color != "RGB":
        raise PKDNError(f"manifest layout/color {m.layout}/{m.color}{where}: only NCHW/RGB artifacts are supported")
    if len(m.input_shape) != 4 or len(m.output_shape) != 4 or int(m.input_shape[1]) != 3:
        raise PKDNError(f"manifest shapes {m.input_shape} -> {m.output_shape}{where} are not (N,3,h,w)")
    h, w = m.lr_size
    if (h * m.scale, w * m.scale) != m.hr_size:
        raise PKDNError(f"manifest scale x{m.scale}{where} does not match shapes {m.input_shape} -> {m.output_shape}")
    for name in [m.model_file, *m.files, *([m.engine_file] if m.engine_file else [])]:
        _check_file_name(name, where)
    if m.model_file not in m.files:
        raise PKDNError(f"manifest model_file {m.model_file!r}{where} is not listed in its files")
    unlisted = [n for n in required_files(m) if n not in m.files]
    if unlisted:
        raise PKDNError(f"manifest{where} does not list {', '.join(unlisted)}, which the runtime loads: its "
                        f"bytes would be used unchecked (every file of an artifact is listed and hashed); "
                        f"re-export the artifact")


def _check_file_name(name: Any, where: str) -> None:
    """A manifest file name must be a relative path inside the artifact folder (no ``..``, not absolute)."""
    if not isinstance(name, str) or not name:
        raise PKDNError(f"manifest file name {name!r}{where} is not a file name; re-export the artifact")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
        raise PKDNError(f"manifest file {name!r}{where} points outside the artifact folder; an artifact may only "
                        f"name files inside its folder (a tampered or hand-edited manifest?): re-export it")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(folder: str | Path, names: list[str] | None = None) -> dict[str, str]:
    """``{name: sha256}`` for ``names`` (default: every regular file under ``folder`` except the
    manifest itself), names relative to ``folder`` with ``/`` separators, sorted."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".tmp")
                       and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    return {n: sha256_file(folder / n) for n in sorted(names)}


def write_manifest(manifest: Manifest, folder: str | Path | None = None, rehash: bool = True) -> Path:
    """Write ``manifest.json`` into ``folder`` (default ``manifest.root``) atomically.

    ``rehash`` recomputes ``files`` from the folder's current contents (all files but the
    manifest). Returns the manifest path and sets ``manifest.root``.
    """
    folder = Path(folder) if folder is not None else manifest.root
    if folder is None:
        raise ValueError("write_manifest needs a folder")
    if rehash:
        manifest.files = hash_files(folder)
    manifest.root = folder
    _validate(manifest)
    path = folder / MANIFEST_NAME
    atomic_write_bytes(path, _dumps(manifest.to_dict()).encode("utf-8"))
    return path


def _dumps(d: dict[str, Any]) -> str:
    """Indented JSON with short lists of scalars kept on one line (shapes, mean/std)."""
    text = json.dumps(d, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text) + "\n"


def manifest_path(path: str | Path) -> Path:
    """``manifest.json`` of an artifact given as its folder or the manifest file itself."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | Path, verify: bool = True) -> Manifest:
    """Read an artifact's manifest (``path``: the folder or its ``manifest.json``).

    With ``verify`` (default) every listed file must exist and match its sha256. Any problem is
    one :class:`PKDNError` line naming the file and the fix (re-export).
    """
    p = manifest_path(path)
    if not p.is_file():
        raise PKDNError(f"no {MANIFEST_NAME} at {p}: not a pkdn-export artifact (export one with pkdn-export)")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PKDNError(f"{p} is not valid JSON ({exc}); re-export the artifact") from None
    if not isinstance(data, dict):
        raise PKDNError(f"{p} is not a manifest object; re-export the artifact")
    try:
        m = Manifest.from_dict(data, root=p.parent)
    except TypeError as exc:
        raise PKDNError(f"{p} has malformed fields ({exc}); re-export the artifact") from None
    if verify:
        verify_files(m)
    return m


def verify_files(m: Manifest) -> None:
    """Check every file of ``m`` against its sha256 (one :class:`PKDNError` line on the first problem)."""
    for name, digest in m.files.items():
        f = m.path(name)
        if not f.is_file():
            raise PKDNError(f"artifact file {f} listed in {MANIFEST_NAME} is missing; "
                            "re-export or copy the whole folder")
        got = sha256_file(f)
        if got != digest:
            raise PKDNError(f"artifact file {f} does not match its sha256 in {MANIFEST_NAME} "
                            f"(expected {digest[:12]}…, got {got[:12]}…): it was modified or truncated; re-export it")


def add_file(artifact: str | Path, name: str, **updates: Any) -> Manifest:
    """Record a new file (e.g. a TensorRT engine built on the device) in an artifact's manifest.

    ``updates`` set manifest fields at the same time (``engine_file="model.plan"``). The other
    files are verified first, so a damaged artifact is not re-blessed.
    """
    m = read_manifest(artifact)
    if not m.path(name).is_file():
        raise PKDNError(f"{m.path(name)} does not exist")
    for k, v in updates.items():
        if not hasattr(m, k) or k == "root":
            raise PKDNError(f"unknown manifest field {k!r}")
        setattr(m, k, v)
    m.files = dict(sorted({**m.files, name: sha256_file(m.path(name))}.items()))
    write_manifest(m, rehash=False)
    return m
