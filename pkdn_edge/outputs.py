"""Where the webcam loop's outputs go, and what they must never replace (issue 30).

* :func:`default_output`: the headless default, ``out/webcam_YYYYmmdd-HHMMSS.mp4`` (``-2``, ...
  when taken): a run never replaces an earlier run's video or stats.
* :func:`check_not_inputs`: an ``--output`` / ``--stats-json`` that is a file the run reads (the
  source, an artifact or model file, the shipped weights; by resolved path and by inode, so
  symlinks and hard links count) is refused with one ``error:`` line.
* :func:`check_png_folder`: a PNG ``--output`` folder that already holds files needs ``--overwrite``.
* :func:`writer_error`: a writer failure (disk full) as one line, reported after the summary.

Runs without torch.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pkdn_edge.errors import PKDNError, describe_os_error
from pkdn_edge.writers import VIDEO_EXTENSIONS


@dataclass
class Outputs:
    """Where the run goes: window or not, the video/PNG path, the stats path; ``stale_frames``: frames
    of an earlier run in a PNG ``--output`` folder, removed (``--overwrite``) before the first write."""

    headless: bool
    out_path: Path | None
    stats_path: Path | None
    stale_frames: tuple = ()


def default_output(now: float | None = None) -> Path:
    """The headless default output: ``out/webcam_YYYYmmdd-HHMMSS.mp4`` (``-2``, ``-3``, ... when that
    name or its ``.json`` is taken), so a run never replaces an earlier run's video or stats."""
    base = f"webcam_{time.strftime('%Y%m%d-%H%M%S', time.localtime(time.time() if now is None else now))}"
    n = 1
    while True:
        p = Path("out") / (f"{base}.mp4" if n == 1 else f"{base}-{n}.mp4")
        if not p.exists() and not p.with_suffix(".json").exists():
            return p
        n += 1


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # the shipped models: never an output
FRAME_NAME = re.compile(r"^\d{6}\.png$")  # the PNG writer's frame names
MAX_LISTED = 20000  # files of one input folder looked at when protecting it


class Inputs:
    """Files and folders the run reads (the source, the artifacts, the model, the shipped weights),
    resolved and by (device, inode), so that no output replaces one of them (symlinks and hard links
    included)."""

    def __init__(self) -> None:
        self.files: dict[Path, str] = {}
        self.folders: dict[Path, str] = {}
        self.inodes: dict[tuple[int, int], str] = {}

    def add(self, path: Path | str, what: str, recursive: bool = True) -> None:
        try:
            p = Path(path).resolve()
            if p.is_dir():
                self.folders.setdefault(p, what)
                files = p.rglob("*") if recursive else p.iterdir()
                for i, f in enumerate(files):
                    if i >= MAX_LISTED:
                        break
                    if f.is_file():
                        self._file(f.resolve(), what)
            elif p.is_file():
                self._file(p, what)
        except (OSError, RuntimeError):  # unreadable or a symlink loop: nothing to protect there
            pass

    def _file(self, p: Path, what: str) -> None:
        self.files.setdefault(p, what)
        st = p.stat()
        self.inodes.setdefault((st.st_dev, st.st_ino), what)

    def owner(self, path: Path) -> str | None:
        """What ``path`` is, if it is (or is the same file as) an input; else None."""
        try:
            p = Path(path).resolve()
            if p in self.files:
                return self.files[p]
            st = p.stat() if p.exists() else None
        except (OSError, RuntimeError):
            return None
        return self.inodes.get((st.st_dev, st.st_ino)) if st is not None else None

    def folder_owner(self, folder: Path) -> str | None:
        """What ``folder`` is when it is an input folder or holds an input file; else None."""
        try:
            p = Path(folder).resolve()
        except (OSError, RuntimeError):
            return None
        if p in self.folders:
            return self.folders[p]
        return next((w for f, w in self.files.items() if f.parent == p), None)


def inputs_of(args, engines=()) -> Inputs:
    """What this run reads: ``--source`` (a video file or an image folder), every ``--artifact``, the
    shipped weights and, once built, every engine's artifact (its manifest and files)."""
    ins = Inputs()
    src = str(args.source or "").strip()
    if src and not src.isdigit() and not src.lower().startswith(("demo", "csi:", "usb:", "gst:")):
        ins.add(src, f"the --source {src}", recursive=False)
    for a in (args.artifact or "").split(","):
        if a.strip():
            ins.add(a.strip(), f"the --artifact {a.strip()}")
    ins.add(WEIGHTS_DIR, "a shipped model file")
    for e in engines:
        m = getattr(e, "manifest", None)
        root = getattr(m, "root", None)
        if root is not None:
            ins.add(root, f"the model {root}")
    return ins


def check_not_inputs(outputs: Outputs, ins: Inputs) -> None:
    """Refuse (one ``error:`` line) an ``--output`` or ``--stats-json`` that would replace a file the
    run reads, a PNG ``--output`` folder that is an input folder, and ``--stats-json`` = ``--output``."""
    out, stats = outputs.out_path, outputs.stats_path
    for path, flag in ((out, "--output"), (stats, "--stats-json")):
        if path is None or (flag == "--output" and not is_video(path)):
            continue
        what = ins.owner(path)
        if what is not None:
            raise PKDNError(f"{flag} {path} is {what}, which this run reads: writing it would destroy it; "
                            f"choose another {flag} path")
    if out is not None and not is_video(out):
        what = ins.folder_owner(out)
        if what is not None:
            raise PKDNError(f"--output {out} is a folder holding {what}, which this run reads: PNG frames written "
                            f"there would replace or mix with it; choose another --output folder")
    if out is not None and stats is not None and is_video(out):
        try:
            same = out.resolve() == stats.resolve() or (
                out.exists() and stats.exists() and os.path.samefile(out, stats))
        except (OSError, RuntimeError):
            same = False
        if same:
            raise PKDNError(f"--stats-json {stats} is the --output video: choose another --stats-json path")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def check_png_folder(out: Path, overwrite: bool) -> tuple:
    """A PNG ``--output`` folder that already holds files: refused unless ``--overwrite``, which
    replaces the earlier frames (``000000.png`` ...: returned, removed before the first write) and
    leaves every other file alone."""
    if not out.is_dir():
        return ()
    try:
        held = sorted(p for p in out.iterdir())
    except OSError as exc:
        raise PKDNError(f"cannot read --output folder {out}: {exc.strerror or exc}") from None
    if not held:
        return ()
    if not overwrite:
        raise PKDNError(f"--output {out} already holds {len(held)} file(s) this run did not write (e.g. "
                        f"{held[0].name}); PNG frames would replace or mix with them: choose a new or empty folder, "
                        f"or pass --overwrite to replace its frames (000000.png, ...)")
    return tuple(p for p in held if FRAME_NAME.match(p.name) and p.is_file())


def writer_error(out: Path, exc: BaseException) -> PKDNError:
    """One line for a writer failure (a PKDNError stays as it is; an OSError names the disk's problem)."""
    if isinstance(exc, PKDNError):
        return exc
    if isinstance(exc, OSError):
        return PKDNError(f"writing --output {out} failed: {describe_os_error(exc)}")
    return PKDNError(f"writing --output {out} failed: {exc}")


def check_artifact_scale(args) -> None:
    """``--scale 4|8`` with an ``--artifact`` of another scale is refused (it used to run silently at
    the artifact's scale). A ``.pt`` checkpoint is checked once its engine is built (run())."""
    if not args.artifact or args.scale == "auto":
        return
    from pkdn_edge.manifest import manifest_path, read_manifest

    for a in args.artifact.split(","):
        if a.strip() and manifest_path(a.strip()).is_file():
            m = read_manifest(a.strip(), verify=False)
            if int(m.scale) != int(args.scale):
                raise PKDNError(f"--scale {args.scale} but --artifact {a.strip()} is a x{m.scale} model: give "
                                f"--scale {m.scale}, or an x{args.scale} artifact")


def check_model(engines: dict, args, outputs: Outputs) -> None:
    """After the model is built (``engines``: scale -> engine): its scale is the one asked for, and no
    output is one of its files."""
    scales = sorted(engines)
    if args.scale != "auto" and args.backend != "bicubic" and scales != [int(args.scale)]:
        raise PKDNError(f"--scale {args.scale} but the model is x{scales[0]}: give --scale {scales[0]}, or an "
                        f"x{args.scale} model")
    check_not_inputs(outputs, inputs_of(args, engines.values()))
