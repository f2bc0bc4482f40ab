"""Soak benchmark: does the webcam loop's memory stay flat over a long run? (a script, not a test)

Runs ``python -m pkdn_edge.webcam`` headless on a looping clip for ``--minutes`` per path, samples
the process's resident memory (RSS, ``/proc/<pid>/status`` VmRSS) every ``--interval`` seconds and
reports the least-squares slope of RSS over time, over the whole run and over its second half
(never before minute 1: allocator pools, OpenCV/ONNX Runtime/OpenVINO caches warm up first). Two paths by default:

* ``sr``: the super-resolution loop (``--backend auto``: the model the webcam would pick);
* ``bicubic``: the same loop with the plain bicubic baseline (``--backend bicubic``), which
  separates the model runtime from capture, detection, tracking and composition.

    python benchmarks/soak.py                        # 30 min per path on ../shared/video/d10.mp4
    python benchmarks/soak.py --minutes 0.5 --interval 2 --out /tmp/soak   # smoke check (~1 min)
    python benchmarks/soak.py --paths sr --backend openvino --precision int8 --scale 8

Writes ``<out>/soak.json`` (every sample and the fits) and ``<out>/soak.md`` (one row per path) and
prints the table. A slope under ~0.1 MB/min over the second half of a 30-minute run is flat for
practical purposes (a 24/7 device would grow < 150 MB/day); the verdict column says
``flat`` / ``growing`` (or "too short to judge" below a 5-minute fit window, e.g. a smoke run).
Linux only (reads /proc). Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "video" / "d10.mp4"
FLAT_MB_PER_MIN = 0.1
WARMUP_MIN = 1.0     # the "second half" fit never starts before this (allocator pools, caches warming up)
MIN_JUDGE_MIN = 5.0  # a verdict needs a fit window at least this long (RSS wobbles by a few MB)


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (None when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


def slope(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope dy/dt (None for fewer than 3 points)."""
    n = len(ts)
    if n < 3:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var


def run_path(name: str, backend: str, args: argparse.Namespace, out: Path) -> dict:
    """One soak run; returns its record (samples, fits, the loop's own stats)."""
    stats_json = out / f"stats_{name}.json"
    cmd = [sys.executable, "-m", "pkdn_edge.webcam", "--source", args.source, "--headless", "--output", "none",
           "--backend", backend, "--threads", str(args.threads), "--stats-json", str(stats_json), "--no-overlay"]
    if args.source != "demo" and not args.source.startswith("demo:"):
        cmd.append("--loop")
        if args.downscale:  # a low-res camera: faces the size the models are for, so the SR path runs
            cmd += ["--downscale", str(args.downscale)]
    if backend != "bicubic":
        cmd += ["--scale", args.scale] + (["--precision", args.precision] if args.precision else [])
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    log = open(out / f"log_{name}.txt", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    t0 = time.monotonic()
    end = t0 + 60.0 * args.minutes
    samples: list[tuple[float, float]] = []
    try:
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                break
            mb = rss_mb(proc.pid)
            if mb is not None and now - t0 >= 1.0:  # not the just-forked interpreter
                samples.append((now - t0, mb))
                if len(samples) % max(1, int(60 / args.interval)) == 1:
                    print(f"[{name}] {(now - t0) / 60:5.1f} min  RSS {mb:7.1f} MB", flush=True)
            if now >= end:
                break
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())) or args.interval)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the loop finishes like Ctrl-C and writes its stats
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    early_exit = time.monotonic() < end - args.interval
    ts = [t / 60.0 for t, _ in samples]
    ys = [m for _, m in samples]
    half = [i for i, t in enumerate(ts) if t >= max(ts[-1] / 2, WARMUP_MIN)] if ts else []
    rec = {
        "path": name, "backend": backend, "minutes": round((samples[-1][0] if samples else 0) / 60.0, 2),
        "samples": len(samples), "interval_s": args.interval,
        "rss_start_mb": round(ys[0], 1) if ys else None, "rss_end_mb": round(ys[-1], 1) if ys else None,
        "rss_max_mb": round(max(ys), 1) if ys else None,
        "slope_mb_per_min": _round(slope(ts, ys)),
        "slope_second_half_mb_per_min": _round(slope([ts[i] for i in half], [ys[i] for i in half])),
        "returncode": proc.returncode, "ended_early": early_exit,
        "rss": [[round(t, 1), round(m, 2)] for t, m in samples],
    }
    s2 = rec["slope_second_half_mb_per_min"]
    span = (ts[half[-1]] - ts[half[0]]) if len(half) > 1 else 0.0
    rec["verdict"] = ("ended early: see " + str(out / f"log_{name}.txt")) if early_exit else (
        f"too short to judge (fit window {span:.1f} min < {MIN_JUDGE_MIN:g})" if s2 is None or span < MIN_JUDGE_MIN
        else ("flat" if s2 < FLAT_MB_PER_MIN else "growing"))
    if stats_json.is_file():
        try:
            loop = json.loads(stats_json.read_text())
            rec["loop"] = {k: loop[k] for k in ("frames", "fps", "loop_fps") if k in loop}
        except (OSError, ValueError):
            pass
    return rec


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def table(records: list[dict]) -> str:
    head = ("| path | backend | minutes | samples | RSS start → end (max) MB | slope MB/min (all) "
            "| slope MB/min (2nd half) | frames | verdict |")
    lines = [head, "|" + "---|" * 9]
    for r in records:
        frames = (r.get("loop") or {}).get("frames", "–")
        lines.append(f"| {r['path']} | {r['backend']} | {r['minutes']} | {r['samples']} | {r['rss_start_mb']} → "
                     f"{r['rss_end_mb']} ({r['rss_max_mb']}) | {r['slope_mb_per_min']} | "
                     f"{r['slope_second_half_mb_per_min']} | {frames} | {r['verdict']} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> bool:
    """RSS (MB) over minutes, one line per path, to ``path`` (PNG); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    for r in records:
        t = [x[0] / 60.0 for x in r["rss"]]  # samples are (seconds, MB)
        ax.plot(t, [x[1] for x in r["rss"]], label=f"{r['path']} ({r['slope_mb_per_min']} MB/min)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Soak benchmark of the webcam loop: RSS over time, SR and bicubic paths.")
    p.add_argument("--minutes", type=float, default=30.0, help="minutes per path (default 30)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    p.add_argument("--source", default=str(DEFAULT_CLIP) if DEFAULT_CLIP.is_file() else "demo:frames=100000000",
                   help="a clip (played in a loop) or a demo source (default ../shared/video/d10.mp4, else the demo)")
    p.add_argument("--downscale", type=float, default=8.0,
                   help="shrink a clip's frames by F (default 8: d10's faces get eyes about 12 px apart, so the SR "
                        "path runs; at full size they are larger than the models are for and stay plain); 0 = off")
    p.add_argument("--paths", default="sr,bicubic",
                   help="comma-separated: sr, bicubic (default both, one after the other)")
    p.add_argument("--backend", default="auto", help="backend of the sr path (default auto)")
    p.add_argument("--precision", default=None, help="precision of the sr path (default: the model found)")
    p.add_argument("--scale", default="4", choices=("4", "8", "auto"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "report" / "soak")
    args = p.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        print("error: the soak benchmark reads /proc (Linux only)", file=sys.stderr)
        return 2
    if args.minutes <= 0 or args.interval <= 0:
        print("error: --minutes and --interval must be > 0", file=sys.stderr)
        return 2
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    bad = [s for s in paths if s not in ("sr", "bicubic")]
    if bad or not paths:
        print(f"error: --paths takes sr and/or bicubic, got {args.paths!r}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    records = [run_path(name, args.backend if name == "sr" else "bicubic", args, args.out) for name in paths]
    report = {"source": args.source, "minutes_per_path": args.minutes, "interval_s": args.interval,
              "flat_below_mb_per_min": FLAT_MB_PER_MIN, "cpu_count": os.cpu_count(), "records": records}
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    md = (f"# Soak: webcam loop RSS over time\n\nSource `{args.source}` (looped), {args.minutes:g} min per path, "
          f"RSS every {args.interval:g} s; slope = least squares. `python benchmarks/soak.py "
          f"--minutes {args.minutes:g} --downscale {args.downscale:g}`.\n\n{table(records)}\n")
    if plot(records, args.out / "soak_rss.png"):
        md += "\n![RSS over time](soak_rss.png)\n"
    (args.out / "soak.md").write_text(md)
    print(table(records))
    print(f"wrote {args.out / 'soak.md'} and {args.out / 'soak.json'}")
    return 0 if all(r["returncode"] in (0, 130) and not r["ended_early"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
