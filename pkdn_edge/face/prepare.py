"""``pkdn-prepare``: detect, align and crop faces from photos or a video into template crops.

Usage::

    pkdn-prepare INPUT OUT_DIR [--size 128] [--max-faces N] [--min-iod PX] [--every N] [--score 0.8]
    python -m pkdn_edge.face.prepare INPUT OUT_DIR ...

``INPUT`` is an image file, a folder of images (``.jpg .jpeg .png .bmp .webp``) or a video file.
Each face with a detector score >= ``--score`` and an inter-ocular distance >= ``--min-iod``
source px (largest faces first, at most ``--max-faces`` per image/frame) is aligned with the 5-point
template of :mod:`pkdn_edge.face.align` (similarity, least squares on 5 points, antialiased warp)
and written as ``OUT_DIR/<stem>_<face#>.png`` (``<stem>_f<frame>_<face#>.png`` for video frames,
face numbers from 0, largest face first). ``OUT_DIR/MANIFEST.csv`` lists every crop: ``file``,
``source``, ``frame``, ``landmarks`` (5 points ``x,y;...`` in source px, template order),
``score``, ``interocular_px`` (source px), ``scale`` (source -> crop) and ``box``.

``OUT_DIR`` must be empty or new (crops of an earlier run would mix with the new ones);
``--overwrite`` first removes only the crops an earlier run listed in its ``MANIFEST.csv``. Each
manifest row is appended and flushed *before* its crop is written, so a run stopped any way leaves a
manifest listing every crop it wrote; at the end the file is rewritten atomically. Unreadable images
and undecodable video frames are skipped and counted; a summary ends the run.

Exit status: 0 when the run completes (even with no face); 1 when it completed but frames of a
damaged video could not be decoded (the crops of the readable frames are written); 2 on a user
error (missing input, unreadable single image, non-empty output folder, missing detector package).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from pkdn_edge.errors import CLIParser, ImageReadError, PKDNError, run_cli, sigterm_as_interrupt
from pkdn_edge.imageio import atomic_write_bytes

__all__ = ["main", "build_parser", "prepare", "PrepareStats", "VIDEO_EXTENSIONS", "MANIFEST_COLUMNS"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
MANIFEST_COLUMNS = ("file", "source", "frame", "landmarks", "score", "interocular_px", "scale", "box")
MAX_SIZE = 2048       # --size: crops larger than this are not faces for this project (and cost GBs)
MAX_DET_SIDE = 8192   # --det-side


@dataclass
class PrepareStats:
    """Counters of one run."""

    kind: str = "images"                # "images" or "video"
    read: int = 0                       # images (or video frames) decoded and searched
    with_faces: int = 0                 # of those, how many gave at least one crop (after filters)
    written: int = 0                    # crops written
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    rows: List[dict] = field(default_factory=list)     # manifest rows
    frames_announced: int = 0           # videos: the container's frame count (0 = unknown)
    frames_failed: int = 0              # videos: frames that could not be decoded or were never reached

    @property
    def damaged(self) -> bool:
        """True when frames of a video were lost (the run still wrote the readable frames' crops)."""
        return self.frames_failed > 0

    def summary(self, out_dir: Path) -> str:
        unit = "frames" if self.kind == "video" else "images"
        line = (f"pkdn-prepare: {self.read} {unit} read, {self.with_faces} with face crops, "
                f"{self.written} face crops written to {out_dir}")
        if self.skipped:
            line += "; skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        else:
            line += "; nothing skipped"
        return line


def build_parser() -> argparse.ArgumentParser:
    p = CLIParser(
        prog="pkdn-prepare",
        description="Detect faces (RetinaFace), align them to the 5-point template and write square crops "
                    "plus MANIFEST.csv.")
    p.add_argument("input", metavar="INPUT", help="an image, a folder of images, or a video file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for the crops and MANIFEST.csv (created if missing)")
    p.add_argument("--size", type=int, default=128, help="crop side in px (template scaled; default 128)")
    p.add_argument("--max-faces", type=int, default=None, metavar="N",
                   help="at most N faces per image/frame, largest first (default: all)")
    p.add_argument("--min-iod", type=float, default=0.0, metavar="PX",
                   help="skip faces whose eye-to-eye distance is below PX source px (default 0; the "
                        "training crops used 40.32)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: use every Nth frame (default 1)")
    p.add_argument("--score", type=float, default=0.8, help="minimum detector score 0-1 (default 0.8)")
    p.add_argument("--recursive", action="store_true", help="folders: include sub-folders")
    p.add_argument("--det-side", type=int, default=640, metavar="PX",
                   help="detector input long side in px (default 640; 0 = full resolution)")
    p.add_argument("--threads", type=int, default=2, help="detector threads (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress lines (warnings and summary only)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT_DIR holds an earlier run's crops: delete those (the files its MANIFEST.csv lists) first")
    return p


def _check_args(a: argparse.Namespace) -> None:
    if not 8 <= a.size <= MAX_SIZE:
        raise PKDNError(f"--size must be in [8, {MAX_SIZE}], got {a.size}")
    if a.max_faces is not None and a.max_faces < 1:
        raise PKDNError(f"--max-faces must be at least 1, got {a.max_faces}")
    if a.min_iod < 0:
        raise PKDNError(f"--min-iod must be >= 0, got {a.min_iod}")
    if a.every < 1:
        raise PKDNError(f"--every must be at least 1, got {a.every}")
    if not 0.0 <= a.score <= 1.0:
        raise PKDNError(f"--score must be in [0, 1], got {a.score}")
    if not 0 <= a.det_side <= MAX_DET_SIDE:
        raise PKDNError(f"--det-side must be in [0, {MAX_DET_SIDE}], got {a.det_side}")
    if a.threads < 1:
        raise PKDNError(f"--threads must be at least 1, got {a.threads}")
    if a.min_iod != a.min_iod or a.score != a.score:  # NaN passes the range checks above
        raise PKDNError("--min-iod and --score must be numbers")


def _fmt_points(pts: np.ndarray) -> str:
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in np.asarray(pts, np.float64).reshape(-1, 2))


def _write_manifest(path: Path, rows: Sequence[dict]) -> None:
    """Write MANIFEST.csv atomically (temp file + os.replace)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    try:
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    except OSError as exc:
        raise PKDNError(f"cannot write {path} ({exc.strerror or exc})") from None


class _ManifestLog:
    """``MANIFEST.csv`` written as the run goes: :meth:`add` appends and flushes a crop's row before
    the crop is written, so a stopped run (Ctrl-C, SIGTERM, SIGKILL, a full disk) leaves a manifest
    listing every crop it wrote (plus at most the one it was writing); :meth:`finish` rewrites it
    atomically with exactly the crops written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.f = open(path, "w", newline="", encoding="utf-8")
            self.w = csv.DictWriter(self.f, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
            self.w.writeheader()
            self.f.flush()
        except OSError as exc:
            raise PKDNError(f"cannot write {path} ({exc.strerror or exc})") from None

    def add(self, row: dict) -> None:
        self.w.writerow(row)
        self.f.flush()

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass

    def finish(self, rows: Sequence[dict], failing: bool) -> None:
        """The final, atomic manifest. When the run is already failing (``failing``), a manifest that
        cannot be rewritten (disk full) is left as appended: it still lists every crop written."""
        self.close()
        try:
            _write_manifest(self.path, rows)
        except PKDNError:
            if not failing:
                raise


MAX_BAD_RUN = 250        # consecutive undecodable frames before a damaged video is given up
MAX_BAD_RUN_UNKNOWN = 25  # ... when the container does not say how many frames it has
TAIL_SLACK = 2            # frame counts estimated from the duration may be a frame or two high


def _iter_video(path: Path, every: int, stats: PrepareStats, log=None) -> Iterator[Tuple[int, np.ndarray]]:
    """Frames ``(index, BGR uint8)`` of a video, every ``every``-th. A failed read is only the end of
    the file at the announced frame count (or after ``MAX_BAD_RUN_UNKNOWN`` failures in a row when
    the count is unknown); before that it is a damaged frame: counted, skipped, reading goes on."""
    import cv2

    from pkdn_edge.imageio import to_bgr8

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PKDNError(f"{path}: cannot open the video (unsupported codec, not a video, or damaged)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    total = total if total > 0 else 0
    stats.frames_announced = total
    bad_run, bad = 0, 0
    try:
        i = 0
        while True:
            if i % every:
                ok, frame = cap.grab(), None
            else:
                ok, frame = cap.read()
                ok = ok and frame is not None and frame.size > 0
            if not ok:
                if total and i >= total:
                    break  # the end the container announced
                bad_run += 1
                i += 1
                if bad_run >= (MAX_BAD_RUN if total else MAX_BAD_RUN_UNKNOWN):
                    break
                continue
            if bad_run:  # frames failed, then decoding went on: they were damaged, not the end
                bad += bad_run
                if log is not None:
                    log(f"warning: {path}: {bad_run} frame(s) before frame {i} could not be decoded (damaged video?)")
                bad_run = 0
            if frame is not None:
                yield i, to_bgr8(frame)
            i += 1
    finally:
        cap.release()
    lost = 0
    if total:
        reached = i - bad_run  # frames read or skipped before the final run of failures
        lost = max(0, total - reached)
        if lost <= TAIL_SLACK and not bad:
            lost = 0  # an estimated frame count a frame or two high, not damage
    if bad:
        stats.skipped["undecodable frames (damaged video)"] += bad
    if lost:
        stats.skipped["frames never reached (damaged or truncated video)"] += lost
    stats.frames_failed = bad + lost
    if stats.frames_failed and log is not None:
        log(f"warning: {path}: {stats.frames_failed} of {total or 'its'} frames could not be decoded; "
            f"crops were written for the readable frames only")


def _check_out_dir(out: Path, overwrite: bool, log) -> None:
    """``out`` must not hold images that would mix with this run's crops (see the module docstring)."""
    from pkdn_edge.imageio import iter_images

    if not out.is_dir():
        return
    images = iter_images(out, recursive=True)
    if not images:
        return
    listed: set = set()
    manifest = out / "MANIFEST.csv"
    if manifest.is_file():
        try:
            with open(manifest, newline="", encoding="utf-8") as f:
                listed = {r.get("file") or "" for r in csv.DictReader(f)}
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PKDNError(f"{manifest} cannot be read ({exc}); choose an empty OUT_DIR") from None
    ours = [p for p in images if p.parent == out and p.name in listed]
    foreign = [p for p in images if p not in ours]
    if foreign:
        raise PKDNError(f"{out} holds {len(foreign)} image(s) pkdn-prepare did not write (e.g. {foreign[0].name}); "
                        f"training reads every image in the folder, so they would mix with the new crops: "
                        f"choose an empty or new OUT_DIR")
    if not overwrite:
        raise PKDNError(f"{out} already holds {len(ours)} crops of an earlier pkdn-prepare run (its MANIFEST.csv); "
                        f"pass --overwrite to delete them first, or choose a new OUT_DIR")
    for p in ours:
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            raise PKDNError(f"cannot delete the earlier crop {p} ({exc.strerror or exc})") from None
    log(f"pkdn-prepare: --overwrite: deleted {len(ours)} crops of the earlier run in {out}")


def _log_to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _input_kind(inp: Path, recursive: bool) -> Tuple[str, List[Path]]:
    """``("folder" | "video" | "image", image files)`` of ``inp`` (no files for a video)."""
    from pkdn_edge.imageio import IMAGE_EXTENSIONS, iter_images

    if not inp.exists():
        raise PKDNError(f"{inp}: no such file or folder")
    ext = inp.suffix.lower()
    if inp.is_dir():
        files = iter_images(inp, recursive=recursive)
        if not files:
            raise PKDNError(f"{inp}: no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder")
        return "folder", files
    if ext in VIDEO_EXTENSIONS:
        return "video", []
    if ext in IMAGE_EXTENSIONS:
        return "image", [inp]
    raise PKDNError(f"{inp}: unsupported input type {ext or '(no extension)'!r}; give an image "
                    f"({', '.join(IMAGE_EXTENSIONS)}), a folder of images or a video "
                    f"({', '.join(VIDEO_EXTENSIONS)})")


def _make_out_dir(out: Path, overwrite: bool, log) -> None:
    """Check ``out`` (see :func:`_check_out_dir`) and create it."""
    if out.exists() and not out.is_dir():
        raise PKDNError(f"{out}: exists and is not a folder")
    _check_out_dir(out, overwrite, log)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PKDNError(f"cannot create output folder {out} ({exc.strerror or exc})") from None


class _StemNamer:
    """Crop name stems of the images of one input: ``sub/a.jpg -> sub_a`` (folder-relative), and
    ``a.png`` after ``a.jpg`` -> ``a_png`` (case-insensitive clashes get the extension)."""

    def __init__(self, inp: Path, kind: str):
        self.inp, self.kind = inp, kind
        self.used: dict = {}

    def __call__(self, p: Path) -> str:
        rel = p.relative_to(self.inp) if self.kind == "folder" else Path(p.name)
        stem = "_".join(rel.with_suffix("").parts)  # sub/a.jpg -> sub_a
        key = stem.lower()
        if key in self.used and self.used[key] != p:
            stem = f"{stem}_{p.suffix.lstrip('.').lower()}"  # a.jpg and a.png -> a_0.png, a_png_0.png
        self.used.setdefault(stem.lower(), p)
        return stem


@dataclass
class _Cropper:
    """Detects, filters, aligns and writes the faces of one image or frame into ``out``, counting
    in ``stats`` (filters: ``score``, ``min_iod`` source px, ``max_faces`` largest first)."""

    detector: object
    out: Path
    stats: PrepareStats
    size: int = 128
    max_faces: Optional[int] = None
    min_iod: float = 0.0
    score: float = 0.8
    manifest: Optional[_ManifestLog] = None

    def _kept(self, iods: List[float]) -> List[int]:
        """Indices of the faces to crop, largest IOD first, after the IOD and --max-faces filters."""
        order = sorted(range(len(iods)), key=lambda i: -iods[i])
        n_small = sum(1 for i in order if iods[i] < self.min_iod)
        if n_small:
            self.stats.skipped[f"faces with IOD < {self.min_iod:g} px"] += n_small
        order = [i for i in order if iods[i] >= self.min_iod]
        if self.max_faces is not None and len(order) > self.max_faces:
            self.stats.skipped[f"faces beyond --max-faces {self.max_faces}"] += len(order) - self.max_faces
            order = order[:self.max_faces]
        return order

    def __call__(self, img: np.ndarray, source: str, stem: str, frame: Optional[int]) -> None:
        """``img``: (H, W, 3) BGR uint8; ``frame``: the video frame index, None for images."""
        from pkdn_edge.face.align import estimate_similarity, matrix_scale, warp_face
        from pkdn_edge.imageio import write_image

        faces = [f for f in self.detector.detect(img) if float(f.score) >= self.score]
        if not faces:
            self.stats.skipped["without a face" if frame is None else "frames without a face"] += 1
            return
        lms = [np.asarray(f.landmarks, np.float64).reshape(5, 2) for f in faces]
        iods = [float(np.hypot(*(lm[1] - lm[0]))) for lm in lms]
        order = self._kept(iods)
        for k, i in enumerate(order):
            M = estimate_similarity(lms[i], self.size)
            crop = warp_face(img, M, self.size)
            name = f"{stem}_{k}.png" if frame is None else f"{stem}_f{frame:06d}_{k}.png"
            box = np.asarray(getattr(faces[i], "box", np.full(4, np.nan)), np.float64).reshape(-1)[:4]
            row = {
                "file": name, "source": source, "frame": "" if frame is None else frame,
                "landmarks": _fmt_points(lms[i]), "score": f"{float(faces[i].score):.4f}",
                "interocular_px": f"{iods[i]:.2f}", "scale": f"{matrix_scale(M):.4f}",
                "box": ",".join(f"{v:.1f}" for v in box),
            }
            if self.manifest is not None:
                self.manifest.add(row)  # listed before it exists: a stop in between never orphans a crop
            write_image(self.out / name, crop)
            self.stats.rows.append(row)
            self.stats.written += 1
        if order:
            self.stats.with_faces += 1


def _crop_video(inp: Path, every: int, crop: _Cropper, quiet: bool, log) -> None:
    stats = crop.stats
    for fi, frame in _iter_video(inp, every, stats, log):
        stats.read += 1
        crop(frame, str(inp), inp.stem, fi)
        if not quiet and stats.read % 100 == 0:
            log(f"pkdn-prepare: {stats.read} frames, {stats.written} crops")
    if stats.read == 0:
        log(f"warning: {inp}: no frame could be decoded")


def _crop_images(files: List[Path], preloaded: dict, stem_of: _StemNamer, crop: _Cropper, quiet: bool,
                 log) -> None:
    """Unreadable images are skipped with a warning; ``preloaded``: {path: image} already read."""
    from pkdn_edge.imageio import read_image

    stats = crop.stats
    for n, p in enumerate(files, 1):
        try:
            img = preloaded.pop(p) if p in preloaded else read_image(p)
        except ImageReadError as exc:
            log(f"warning: skipping {exc}")
            stats.skipped["unreadable"] += 1
            continue
        stats.read += 1
        crop(img, str(p), stem_of(p), None)
        if not quiet and n % 100 == 0:
            log(f"pkdn-prepare: {n}/{len(files)} images, {stats.written} crops")


def prepare(input_path: Path, out_dir: Path, size: int = 128, max_faces: Optional[int] = None, min_iod: float = 0.0,
            every: int = 1, score: float = 0.8, recursive: bool = False, det_side: int = 640, threads: int = 2,
            quiet: bool = False, detector=None, log=None, overwrite: bool = False) -> PrepareStats:
    """Run the whole preparation (see the module docstring); returns the counters. ``detector``:
    any object with ``detect(frame) -> [Face]`` (default: :class:`RetinaFaceDetector`). ``log``:
    a callable for progress/warning lines (default: print to stderr)."""
    from pkdn_edge.imageio import read_image

    if log is None:
        log = _log_to_stderr
    inp, out = Path(input_path), Path(out_dir)
    kind, files = _input_kind(inp, recursive)
    files = _outside(files, out, inp)
    # a single unreadable input image is an error (ImageReadError), not a skip
    preloaded = {inp: read_image(inp)} if kind == "image" else {}
    _make_out_dir(out, overwrite, log)
    if detector is None:
        from pkdn_edge.face.detector import RetinaFaceDetector

        detector = RetinaFaceDetector(score_threshold=score, max_side=det_side, threads=threads)
    stats = PrepareStats(kind="video" if kind == "video" else "images")
    manifest = _ManifestLog(out / "MANIFEST.csv")
    crop = _Cropper(detector, out, stats, size=size, max_faces=max_faces, min_iod=min_iod, score=score,
                    manifest=manifest)
    failing = True
    try:
        if kind == "video":
            _crop_video(inp, every, crop, quiet, log)
        else:
            _crop_images(files, preloaded, _StemNamer(inp, kind), crop, quiet, log)
        failing = False
    finally:
        manifest.finish(stats.rows, failing)
    return stats


def _outside(files: List[Path], out: Path, inp: Path) -> List[Path]:
    """``files`` without those inside the output folder (``--recursive`` on one of its parents):
    pkdn-prepare never reads its own crops."""
    try:
        o = out.resolve()
    except (OSError, RuntimeError):
        return files
    kept = [p for p in files if o not in p.resolve().parents]
    if files and not kept:
        raise PKDNError(f"{inp}: the only images are inside the output folder {out}; pkdn-prepare does not read "
                        f"its own crops")
    return kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (``pkdn-prepare``); returns the exit status."""

    def body() -> int:
        sigterm_as_interrupt()  # a service stop or `kill` unwinds like Ctrl-C: manifest written, "interrupted"
        args = build_parser().parse_args(argv)
        _check_args(args)
        stats = prepare(Path(args.input), Path(args.out_dir), size=args.size, max_faces=args.max_faces,
                        min_iod=args.min_iod, every=args.every, score=args.score, recursive=args.recursive,
                        det_side=args.det_side, threads=args.threads, quiet=args.quiet, overwrite=args.overwrite)
        print(stats.summary(Path(args.out_dir)))
        return 1 if stats.damaged else 0

    import signal

    old = signal.getsignal(signal.SIGTERM)
    try:
        return run_cli(body)
    finally:
        if old is not None:
            try:
                signal.signal(signal.SIGTERM, old)
            except ValueError:  # not the main thread: sigterm_as_interrupt did nothing either
                pass


if __name__ == "__main__":
    sys.exit(main())
