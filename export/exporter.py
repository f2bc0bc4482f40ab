"""One export, start to finish: :func:`run_export` (the Python API behind ``pkdn-export``).

The request is an :class:`~.settings.ExportRequest` (torch-free, like everything ``pkdn-export --help``
needs).

1. check the target/precision against :data:`.formats.FORMATS` and the tools installed;
2. load the checkpoint (the shipped student for the scale by default);
3. write everything into a temporary folder **beside** the output folder;
4. the target module writes its files (``<module>.export(ctx)``);
5. ``manifest.json`` (sha256 of every file, shapes, normalization, tools);
6. on a machine with a TensorRT engine builder (``--builder``, :mod:`.targets.tensorrt_builders`), build and
   register the engine;
7. verification: load the artifact through :func:`pkdn_edge.engines.load_engine` (so the
   manifest path is exercised too) and compare with PyTorch (:mod:`.verify`); every other model
   file the target lists (``TargetResult.also_verify``) gets the same check; past tolerance →
   :class:`PKDNError`;
8. move the new files into the output folder (:func:`_install`): over an older artifact, only the
   files that export wrote are replaced; the user's files and every TensorRT engine stay, and the
   summary says what was kept.

Any failure (or Ctrl-C / SIGTERM) removes the temporary folder: an output folder is either the
previous artifact or a complete, verified new one. Work folders of a killed export
(``.<out>.tmp-<pid>-*``) are removed by the next export into the same place.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pkdn_edge.atomic import pid_alive
from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import MANIFEST_NAME, Manifest, add_file, read_manifest, sha256_file, write_manifest
from pkdn_edge.models import PRESETS
from pkdn_edge.models.checkpoint import load_model

from .context import CalibOptions, ExportContext, TargetResult
from .formats import ExportFormat, get_format
from .settings import ExportRequest
from .verify import Parity

TOOLS = ("pkdn-edge", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt")


@dataclass
class ExportReport:
    """What :func:`run_export` made."""

    target: str
    precision: str
    scale: int
    out: Path
    model_file: str
    size_bytes: int
    seconds: float
    parity: Parity | None
    latency_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    files: list[FileRow] = field(default_factory=list)


@dataclass
class FileRow:
    """One model file of an artifact with several (the tensorrt target): its own size and parity."""

    name: str
    size_bytes: int
    parity: Parity | None
    latency_ms: float | None = None


def default_out(target: str, precision: str, scale: int) -> Path:
    """``exports/<target>_<precision>_x<scale>`` (relative to the working directory)."""
    return Path("exports") / f"{target}_{precision}_x{scale}"


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def preset_name(cfg: Any, meta: dict[str, Any]) -> str:
    """The preset a config was built from (``custom`` when none matches, e.g. a pruned student)."""
    if meta.get("preset"):
        return str(meta["preset"])
    for name, p in PRESETS.items():
        if (p.widths, p.depth, p.bottleneck_depth, p.refine_width) == (cfg.widths, cfg.depth, cfg.bottleneck_depth,
                                                                         cfg.refine_width) and cfg.mid_ratio == 1.0:
            return name
    return "custom"


def _prepare_out(out: Path) -> Path:
    """Validate the output folder; returns its (created) parent. Nothing is written into ``out``."""
    if out.exists() and not out.is_dir():
        raise PKDNError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise PKDNError(f"--out {out} is a non-empty folder that is not a pkdn-export artifact; choose another --out")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PKDNError(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PKDNError(f"output folder {parent} is not writable")
    return parent


def _publish_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries: give them the usual umask permissions."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for f in folder.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)


ENGINE_SUFFIXES = (".plan", ".engine", ".trt")  # TensorRT engines: built on a device, never deleted here
_TEMP_DIR = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")
_LEGACY_TEMP_DIR = re.compile(r"^\.(?P<name>.+)\.tmp-[a-z0-9_]{8}$")  # before pids were in the name
LEGACY_STALE_S = 6 * 3600


def remove_stale_workdirs(out: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Delete the hidden ``.<out>.tmp-<pid>-*`` / ``.<out>.old-<pid>-*`` folders beside ``out`` left
    by exports that were killed (SIGKILL, power loss) while their pid is gone, and the older
    ``.<out>.tmp-<random>`` ones (no pid; earlier versions) untouched for 6 hours. They only ever
    hold files pkdn-export wrote (user files never move into them)."""
    removed = []
    try:
        entries = list(out.parent.iterdir()) if out.parent.is_dir() else []
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_DIR.match(e.name)
        if m and m.group("name") == out.name and e.is_dir() and not pid_alive(int(m.group("pid"))):
            shutil.rmtree(e, ignore_errors=True)
            removed.append(e)
            continue
        m = _LEGACY_TEMP_DIR.match(e.name)
        try:
            old = m is not None and m.group("name") == out.name and e.is_dir() and \
                time.time() - e.stat().st_mtime > LEGACY_STALE_S
        except OSError:
            old = False
        if old:
            shutil.rmtree(e, ignore_errors=True)
            removed.append(e)
    if removed:
        log(f"removed {len(removed)} work folder(s) of an interrupted export beside {out}: "
            + ", ".join(p.name for p in removed))
    return removed


def _old_manifest(out: Path) -> dict[str, Any]:
    """The previous artifact's manifest as raw JSON ({} when unreadable: then every file counts as the user's)."""
    try:
        d = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _kept_name(out: Path, name: str) -> str:
    """``model_trt10.plan`` → ``model_trt10.previous.plan`` (``.previous2`` ... when taken)."""
    p = Path(name)
    for i in range(1, 1000):
        cand = p.with_name(f"{p.stem}.previous{'' if i == 1 else i}{p.suffix}").as_posix()
        if not (out / cand).exists():
            return cand
    raise PKDNError(f"too many kept copies of {name} in {out}; clean the folder up")


def _install(tmp: Path, out: Path, manifest: Manifest) -> list[str]:
    """Put the finished artifact in ``tmp`` into ``out``; returns notes on what was kept.

    Into an existing artifact folder, only files the **previous export** wrote (those its manifest
    lists) are replaced or removed. Every other file stays: the user's own files and, always,
    TensorRT engines (``*.plan``, ``*.engine``, ``*.trt`` and the registered ``engine_file``). A
    kept file in the way of a new file of the same name is renamed ``<stem>.previous<suffix>``. An
    engine that was built from exactly the ONNX the new export wrote stays registered; otherwise
    it is kept unregistered and a note says to rebuild it. The new ``manifest.json`` is moved in
    last, so an interrupted install never leaves a manifest that describes the wrong files; on an
    error everything is moved back.
    """
    if not out.exists():
        os.replace(tmp, out)
        return []
    old = _old_manifest(out)
    old_files = old.get("files") if isinstance(old.get("files"), dict) else {}
    old_engine = old.get("engine_file") if isinstance(old.get("engine_file"), str) else None

    def is_engine(name: str) -> bool:
        return name == old_engine or name.lower().endswith(ENGINE_SUFFIXES)

    root = out.resolve()
    ours_before = [n for n in [*old_files, MANIFEST_NAME] if isinstance(n, str) and n and not is_engine(n)
                   and root in (out / n).resolve().parents and (out / n).is_file() and not (out / n).is_symlink()]
    new_names = sorted((p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()),
                       key=lambda n: (n == MANIFEST_NAME, n))  # manifest last
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    moved_old: list[str] = []
    renamed: list[tuple[str, str]] = []
    moved_new: list[str] = []
    try:
        for n in ours_before:
            (backup / n).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / n, backup / n)
            moved_old.append(n)
        for n in new_names:
            if (out / n).exists():
                keep = _kept_name(out, n)
                os.replace(out / n, out / keep)
                renamed.append((n, keep))
        for n in new_names:
            (out / n).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / n, out / n)
            moved_new.append(n)
    except BaseException:
        for n in reversed(moved_new):
            _quiet(os.replace, out / n, tmp / n)
        for n, keep in reversed(renamed):
            _quiet(os.replace, out / keep, out / n)
        for n in moved_old:
            _quiet(os.replace, backup / n, out / n)
        _quiet(shutil.rmtree, backup)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return _kept_notes(out, manifest, old, old_files, old_engine, set(new_names), renamed)


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _kept_notes(out: Path, manifest: Manifest, old: dict[str, Any], old_files: dict[str, Any], old_engine: str | None,
                new_names: set[str], renamed: list[tuple[str, str]]) -> list[str]:
    """Say what stayed in ``out``; re-register the previous engine when the ONNX it was built from is unchanged."""
    notes = [f"kept the previous {a} as {b} (the new export writes a file of that name)" for a, b in renamed]
    moved = dict(renamed)
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and p.relative_to(out).as_posix() not in new_names)
    old_engine_now = moved.get(old_engine, old_engine) if old_engine else None
    engines = [n for n in kept if n == old_engine_now or n.lower().endswith(ENGINE_SUFFIXES)]
    others = [n for n in kept if n not in engines and n not in moved.values()]
    if others:
        notes.append(f"kept {len(others)} file(s) in {out} that pkdn-export did not write: {', '.join(others[:8])}"
                     + (" ..." if len(others) > 8 else ""))
    new_onnx = {n: h for n, h in manifest.files.items() if n.endswith(".onnx")}
    onnx_same = bool(new_onnx) and all(old_files.get(n) == h for n, h in new_onnx.items())
    for e in engines:
        if e == old_engine and onnx_same and manifest.target == "tensorrt" and not manifest.engine_file:
            old_engine_facts = (old.get("extras") or {}).get("engine", {})
            add_file(out, e, engine_file=e, extras={**manifest.extras, "engine": old_engine_facts})
            notes.append(f"kept TensorRT engine {e}, still registered: it was built from the same ONNX")
        else:
            notes.append(f"kept TensorRT engine {e}; it is not registered in the new manifest (built from an earlier "
                         f"export): rebuild it on the device (BUILD.md) and register it, or delete it")
    return notes


def _load(weights: Path | None, scale: int | None) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    if weights is None:
        from pkdn_edge.pretrained import pretrained_path

        weights = pretrained_path(scale or 4)
    model, meta = load_model(weights)
    cfg = model.cfg
    if cfg.role != "student":
        raise PKDNError(f"{weights} is a teacher (it needs a parsing prior at run time); export a student")
    if scale is not None and cfg.scale != scale:
        raise PKDNError(f"{weights} is a x{cfg.scale} model but --scale {scale} was given")
    return model, meta, Path(weights)


class Heartbeat:
    """A ``log`` wrapper for long exports: while no line was logged for ``every`` seconds, a
    background thread prints ``... still <the last step> (<time> so far)``, so an INT8 calibration
    or a TensorRT build never runs minutes without a word. ``start()`` / ``stop()`` (or ``with``)."""

    def __init__(self, log: Callable[[str], None], every: float = 30.0) -> None:
        self._log, self.every = log, every
        self._step, self._since = "exporting", time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pkdn-export-heartbeat", daemon=True)

    def __call__(self, msg: str) -> None:
        self._step, self._since = msg.strip().rstrip(" ."), time.monotonic()
        self._log(msg)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(min(self.every, 5.0)):
            now = time.monotonic()
            if now - max(self._since, last) >= self.every:
                last = now
                self._log(f"  ... still {self._step} ({_duration(now - self._since)} so far)")

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


def _benchmark(engine: Any, runs: int = 30) -> float:
    """Median ms of one batch-1 call (after a warm-up)."""
    x = np.random.default_rng(0).random((engine.batch or 1, 3, *engine.lr_size), dtype=np.float32)
    engine.warmup(3)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.run_tensor(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def run_export(request: ExportRequest | str, *args: Any, **options: Any) -> ExportReport:
    """Export a PKDN checkpoint (see the module docstring) as an :class:`~.settings.ExportRequest`.

    A target name instead of a request is shorthand for ``ExportRequest(target, *args, **options)``
    (``run_export("onnx", "fp32", "w.pt", out=..., batch=None)``; ``batch=None``: dynamic batch).
    ``int8_model``: for ``precision="int8"`` on the ``onnx``/``openvino``/``tensorrt`` targets, ship
    this already-quantized model of the checkpoint (e.g. after QAT) instead of calibrating anew;
    the checkpoint stays the fp32 reference of the verification."""
    if isinstance(request, str):
        if len(args) > 2:
            raise TypeError("run_export(target, precision, weights, **options): pass the rest by keyword")
        request = ExportRequest(request, *args, **options)
    elif args or options:
        raise TypeError("run_export(ExportRequest) takes no further arguments")
    return _run(request)


def _check_request(req: ExportRequest) -> tuple[ExportFormat, str]:
    """The format row and the precision; refuses what cannot run here before anything is loaded."""
    fmt: ExportFormat = get_format(req.target)
    precision = req.precision or fmt.precisions[0]
    if precision not in fmt.precisions:
        raise PKDNError(f"target {req.target} supports precisions {', '.join(fmt.precisions)}, not {precision}")
    fmt.require(precision)
    req.check()
    return fmt, precision


def _window(window: int | None, scale: int) -> int:
    """The LR input side: ``window``, the serving default (None) or the 128/s training crop (0); refused
    unless >= 128/s, <= 4x that and a multiple of 4 (the encoder halves the grid twice)."""
    from pkdn_edge.pretrained import serve_window

    m = 128 // scale
    n = serve_window(scale) if window is None else (m if int(window) == 0 else int(window))
    if n < m or n > 4 * m or n % 4:
        raise PKDNError(f"--window must be a multiple of 4 in [{m}, {4 * m}] at x{scale}, got {n}")
    return n


def _run(req: ExportRequest) -> ExportReport:
    t0 = time.perf_counter()
    fmt, precision = _check_request(req)
    calib = req.calib or CalibOptions()
    model, meta, weights = _load(Path(req.weights) if req.weights else None, req.scale)
    scale = model.cfg.scale
    out = Path(req.out) if req.out else default_out(req.target, precision, scale)
    parent = _prepare_out(out)
    remove_stale_workdirs(out, req.log)
    torch.set_num_threads(max(1, req.threads))
    n = _window(req.window, scale)
    tmp = scratch = heartbeat = None
    try:  # from the first folder on: an interrupt at any point removes what was made
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        scratch = Path(tempfile.mkdtemp(prefix="pkdn-export-"))
        log = heartbeat = Heartbeat(req.log).start()  # "... still <step>" every 30 s of silence
        ctx = ExportContext(model=model, meta=meta, weights=weights, scale=scale, lr_size=(n, n), precision=precision,
                            batch=req.batch, workdir=tmp, scratch=scratch, threads=req.threads, opset=req.opset,
                            calib=calib, log=log, int8_model=req.int8_model if precision == "int8" else None,
                            builder=req.builder)
        log(f"exporting {weights.name} (x{scale}) to {req.target} {precision} ...")
        module = importlib.import_module(f"pkdn_edge.export.{fmt.module}")
        result: TargetResult = module.export(ctx)
        write_manifest(_manifest(ctx, fmt, result), tmp)
        backend = result.verify_backend
        if result.checks.get("build_engine"):
            backend = _build_trt_engine(tmp, result.checks["build_engine"], model, log,
                                        req.exported_program) or backend
        parity, latency, rows = _verify_all(tmp, out, backend, result, model, req, log)
        _publish_permissions(tmp)
        result.notes.extend(_install(tmp, out, read_manifest(tmp)))
        manifest = read_manifest(out, verify=False)
        size = sum(manifest.path(f).stat().st_size for f in [*manifest.files, MANIFEST_NAME])
        for r in rows:
            r.size_bytes = manifest.path(r.name).stat().st_size
        return ExportReport(req.target, precision, scale, out, manifest.model_file, size, time.perf_counter() - t0,
                            parity, latency, result.notes, manifest, rows)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        _remove_despite_interrupts(tmp, scratch)


def _remove_despite_interrupts(*folders: Path | None) -> None:
    """Remove the work folders even when Ctrl-C is pressed again (or SIGTERM arrives) while they are
    being removed: a second interrupt used to leave the hidden ``.tmp`` folder behind. The interrupt
    is raised again once they are gone."""
    interrupted = False
    for folder in folders:
        while folder is not None:
            try:
                shutil.rmtree(folder, ignore_errors=True)
                break
            except KeyboardInterrupt:
                interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def _verify_all(tmp: Path, out: Path, backend: str | None, result: TargetResult, model: torch.nn.Module,
                req: ExportRequest, log: Callable[[str], None]) -> tuple[Parity | None, float | None, list[FileRow]]:
    """Parity of the artifact (and of ``result.also_verify``), recorded in the manifest; past
    tolerance → :class:`PKDNError`. Returns (parity, latency, per-file rows when there are several)."""
    manifest = read_manifest(tmp)
    if not (req.verify and backend):
        if req.verify:
            result.notes.append("not verified: no backend on this machine can run this artifact")
        return None, None, []
    parity, latency = _verify(tmp, backend, model, req.threads, req.verify_faces, req.verify_synthetic,
                              req.benchmark, log)
    main = manifest.model_file
    others = list(result.also_verify)
    if result.verify_backend and backend != result.verify_backend:  # an engine was built: check its ONNX too
        main, others = manifest.engine_file or main, [manifest.model_file, *others]
    rows = []
    for name in others:
        p, ms = _verify(tmp, result.verify_backend or backend, model, req.threads, req.verify_faces,
                        req.verify_synthetic, req.benchmark, log, model_file=name)
        rows.append(FileRow(name, 0, p, ms))
    files = {r.name: r.parity.to_dict() for r in rows if r.parity}
    if rows:
        rows = sorted([FileRow(main, 0, parity, latency), *rows], key=lambda r: (r.name.endswith(ENGINE_SUFFIXES),
                                                                                 r.name))
    manifest.verification = parity.to_dict() | ({"latency_ms_b1": round(latency, 3)} if latency else {}) \
        | ({"files": files} if files else {})
    write_manifest(manifest, rehash=False)
    bad = [(n, p) for n, p in [(main, parity), *((r.name, r.parity) for r in rows)] if p is not None and not p.passed]
    if bad:
        name, p = bad[0]
        raise PKDNError(f"verification failed for {req.target} {manifest.precision} ({p.backend}, {p.faces}"
                        f"{'' if name == main else ', ' + name}): {p.failure()}; nothing was written to {out}")
    return parity, latency, rows


def _manifest(ctx: ExportContext, fmt: ExportFormat, result: TargetResult) -> Manifest:
    h, w = ctx.lr_size
    nb: Any = ctx.batch if ctx.batch is not None else "batch"
    cfg = ctx.model.cfg
    return Manifest(
        target=fmt.target, precision=ctx.precision, scale=ctx.scale, model_file=result.model_file,
        preset=preset_name(cfg, ctx.meta), role=cfg.role, input_shape=[nb, 3, h, w],
        output_shape=[nb, 3, h * ctx.scale, w * ctx.scale], batch=ctx.batch, dynamic=ctx.batch is None,
        source={"weights": ctx.weights.name, "sha256": sha256_file(ctx.weights), "config": cfg.to_dict()},
        tools=tool_versions(), extras=result.extras, engine_file=result.engine_file,
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _build_trt_engine(folder: Path, builder: str, model: torch.nn.Module, log: Callable[[str], None],
                      save_program: bool = False) -> str | None:
    from .targets.tensorrt_builders import build_and_register

    return build_and_register(builder, folder, model, log, save_program)


def _verify(folder: Path, backend: str, model: torch.nn.Module, threads: int, faces_dir: str | Path | None,
            synthetic: bool, benchmark: bool, log: Callable[[str], None],
            model_file: str | None = None) -> tuple[Parity, float | None]:
    from pkdn_edge.engines import load_engine

    from .data import verification_faces
    from .verify import verify_engine

    hr, source = verification_faces(folder=faces_dir, synthetic=synthetic)
    opts = {"model_file": model_file} if model_file else {}
    engine = load_engine(folder, backend=backend, threads=threads, **opts)
    log(f"verifying {model_file + ' ' if model_file else ''}with {backend} on {source} ...")
    parity = verify_engine(engine, model, hr, source)
    latency = _benchmark(engine) if benchmark else None
    engine.close()
    return parity, latency


def summary_table(reports: list[ExportReport]) -> str:
    """Plain-text summary: target, precision, file, size, max abs diff, PSNR delta, latency, time.
    An artifact with several model files (tensorrt: the ONNX per TensorRT generation, the engine)
    gets one row per file, each with its own size and parity."""
    head = ("target", "precision", "file", "size", "max abs diff", "PSNR delta", "backend", "ms/batch", "time")
    rows = [head]
    for r in reports:
        entries = [(r.model_file, r.size_bytes, r.parity, r.latency_ms)] if not r.files else \
            [(f.name, f.size_bytes, f.parity, f.latency_ms) for f in r.files]
        for i, (name, size, p, ms) in enumerate(entries):
            rows.append((r.target, r.precision, str(r.out / name), f"{size / 1e6:.2f} MB",
                         f"{p.max_abs_diff:.2e}" if p else "-", f"{round(p.psnr_delta, 3) + 0.0:+.3f} dB" if p else "-",
                         p.backend if p else "-", f"{ms:.2f}" if ms else "-", f"{r.seconds:.1f} s" if i == 0 else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
