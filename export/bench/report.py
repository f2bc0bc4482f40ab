"""The benchmark report: targets computed from the measurements, ``report.md``, ``report.json``
and PNG plots (``latency.png``: latency distribution per configuration; ``pareto.png``: PSNR vs
p50 latency with the Pareto front; ``latency_gpu.png`` when GPU results exist). Matplotlib is
imported lazily with the ``Agg`` backend (no display needed)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

TARGET_X8_GAIN_DB = 2.0       # our x8 student >= LapSRN x8 + 2 dB (Y-PSNR, CTCNet protocol) ...
TARGET_X8_LATENCY_RATIO = 0.25  # ... at <= 1/4 of its p50 latency
TARGET_INT8_SPEEDUP = 3.0     # OpenVINO INT8 >= 3x faster (p50) than PyTorch fp32 eager
BUSY_OTHER_CPUS = 0.15        # warn when other processes used more than this share of the CPUs meanwhile
BUSY_LOAD_FRACTION = 0.5      # ... or, without /proc/stat, when the 1-min load average at the start was higher
KIND_COLORS = {"ours": "tab:blue", "variant": "tab:purple", "peer": "tab:orange", "baseline": "tab:gray"}
REPORT_FILES = ("report.md", "report.json", "latency.png", "pareto.png")


def _ok(results: list[dict[str, Any]], device: str = "cpu") -> list[dict[str, Any]]:
    return [r for r in results if r.get("ok") and r.get("device", "cpu") == device]


def _psnr(r: dict[str, Any]) -> float | None:
    q = r.get("quality") or {}
    return q.get("psnr_ctcnet")


def compute_targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on the CPU results (p50 latency, Y-PSNR CTCNet protocol).

    1. ``x8_vs_lapsrn``: an ×8 configuration of our student (any backend; every one is listed)
       has PSNR ≥ LapSRN ×8 + 2 dB **and** p50 ≤ ¼ of LapSRN ×8's p50. Pass when at least one
       does (``best`` names the fastest that does).
    2. ``int8_speedup``: per scale, p50 of ``pkdn-x{s}-torch-fp32`` / p50 of
       ``pkdn-x{s}-openvino-int8`` ≥ 3. Pass when every measured scale passes.

    A target whose inputs were not measured is ``n/a`` with the reason.
    """
    ok = _ok(results)
    by_id = {r["id"]: r for r in ok}
    out = []
    lap = by_id.get("lapsrn-x8")
    ours8 = [r for r in ok if r["kind"] in ("ours", "variant") and r["scale"] == 8 and _psnr(r) is not None]
    t1: dict[str, Any] = {"id": "x8_vs_lapsrn", "name": "×8 student vs LapSRN ×8",
                          "rule": f"Y-PSNR ≥ LapSRN ×8 + {TARGET_X8_GAIN_DB:g} dB and p50 latency ≤ "
                                  f"{TARGET_X8_LATENCY_RATIO:g} × LapSRN ×8's", "rows": []}
    if lap is None or _psnr(lap) is None:
        t1.update(status="n/a", reason="LapSRN ×8 was not measured (model absent or filtered out)")
    elif not ours8:
        t1.update(status="n/a", reason="no ×8 configuration of our student was measured")
    else:
        lp, ll = _psnr(lap), lap["latency_ms"]["p50"]
        for r in sorted(ours8, key=lambda r: r["latency_ms"]["p50"]):
            gain, ratio = _psnr(r) - lp, r["latency_ms"]["p50"] / ll
            t1["rows"].append({"config": r["id"], "psnr": _psnr(r), "psnr_gain_db": gain,
                               "p50_ms": r["latency_ms"]["p50"], "latency_ratio": ratio,
                               "passed": bool(gain >= TARGET_X8_GAIN_DB and ratio <= TARGET_X8_LATENCY_RATIO)})
        passing = [row for row in t1["rows"] if row["passed"]]
        t1.update(status="pass" if passing else "fail", reference={"config": "lapsrn-x8", "psnr": lp, "p50_ms": ll},
                  best=(passing[0] if passing else t1["rows"][0])["config"])  # rows: fastest first
    out.append(t1)

    t2: dict[str, Any] = {"id": "int8_speedup", "name": "OpenVINO INT8 vs PyTorch fp32 eager",
                          "rule": f"p50(PyTorch fp32 eager) / p50(OpenVINO INT8) ≥ {TARGET_INT8_SPEEDUP:g}, "
                                  "per scale",
                          "rows": []}
    for s in sorted({r["scale"] for r in ok}):
        tr, ov = by_id.get(f"pkdn-x{s}-torch-fp32"), by_id.get(f"pkdn-x{s}-openvino-int8")
        if tr and ov:
            sp = tr["latency_ms"]["p50"] / ov["latency_ms"]["p50"]
            t2["rows"].append({"scale": s, "torch_p50_ms": tr["latency_ms"]["p50"],
                               "int8_p50_ms": ov["latency_ms"]["p50"], "speedup": sp,
                               "passed": bool(sp >= TARGET_INT8_SPEEDUP)})
    if t2["rows"]:
        t2["status"] = "pass" if all(row["passed"] for row in t2["rows"]) else "fail"
    else:
        t2.update(status="n/a",
                  reason="pkdn-x<s>-torch-fp32 and pkdn-x<s>-openvino-int8 were not both measured at any scale")
    out.append(t2)
    return out


# -- formatting ------------------------------------------------------------------------------------


def _mb(n: int | None) -> str:
    if n is None:
        return "–"
    if n == 0:
        return "0"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _status(s: str) -> str:
    return {"pass": "**PASS**", "fail": "**FAIL**"}.get(s, "n/a")


def _results_table(rows: list[dict[str, Any]], bicubic: dict[int, float]) -> list[str]:
    lines = ["| configuration | backend | precision | size | p50 ms | p90 ms | p99 ms | FPS | cold start ms "
             "(load + 1st) | import ms | peak RSS Δ | PSNR | SSIM | PSNR (DIC) | SSIM (DIC) | Δ PSNR vs bicubic |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["latency_ms"]["p50"]):
        lat, q, mem = r["latency_ms"], r.get("quality") or {}, r.get("memory") or {}
        base = bicubic.get(r["scale"])
        gain = f"{q['psnr_ctcnet'] - base:+.2f} dB" if q and base is not None else "–"
        name = f"**{r['id']}**" if r["kind"] in ("ours", "variant") else r["id"]
        lines.append(
            f"| {name} | {r['backend']} | {r['precision']} | {_mb(r.get('size_bytes'))} | {_ms(lat['p50'])} | "
            f"{_ms(lat['p90'])} | {_ms(lat['p99'])} | {lat['fps']:.0f} | {_ms(r['cold_start_ms'])} "
            f"({_ms(r['load_ms'])} + {_ms(r['first_ms'])}) | {_ms(r['import_ms'])} | "
            f"{mem.get('peak_delta_mb', math.nan):.1f} MB | "
            + (f"{q['psnr_ctcnet']:.2f} | {q['ssim_ctcnet']:.4f} | {q['psnr_dic']:.2f} | {q['ssim_dic']:.4f} | "
               f"{gain} |" if q else "– | – | – | – | – |"))
    return lines


def _targets_md(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | rule | measured | status |", "|---|---|---|---|"]
    for t in targets:
        if t["status"] == "n/a":
            measured = t.get("reason", "")
        elif t["id"] == "x8_vs_lapsrn":
            ref = t["reference"]
            best = next(r for r in t["rows"] if r["config"] == t["best"])
            measured = (f"{best['config']}: {best['psnr']:.2f} dB vs LapSRN {ref['psnr']:.2f} dB "
                        f"({best['psnr_gain_db']:+.2f} dB), {best['p50_ms']:.2f} vs {ref['p50_ms']:.2f} ms "
                        f"({best['latency_ratio']:.3f}×)")
        else:
            measured = "; ".join(f"×{r['scale']}: {r['torch_p50_ms']:.2f} / {r['int8_p50_ms']:.2f} ms = "
                                 f"{r['speedup']:.2f}×" for r in t["rows"])
        lines.append(f"| {t['name']} | {t['rule']} | {measured} | {_status(t['status'])} |")
    for t in targets:
        if t["id"] == "x8_vs_lapsrn" and t["rows"]:
            lines += ["", "Every ×8 configuration of our student against LapSRN ×8:", "",
                      "| configuration | PSNR | Δ vs LapSRN | p50 ms | latency / LapSRN | meets both |",
                      "|---|---|---|---|---|---|"]
            for r in t["rows"]:
                lines.append(f"| {r['config']} | {r['psnr']:.2f} | {r['psnr_gain_db']:+.2f} dB | {_ms(r['p50_ms'])} | "
                             f"{r['latency_ratio']:.3f}× | {'yes' if r['passed'] else 'no'} |")
    return lines


def _stages_md(stages: dict[str, Any] | None) -> list[str]:
    if not stages:
        return ["Not measured (`--no-stages`)."]
    if stages.get("error"):
        return [f"Not measured: {stages['error']}."]
    lines = [f"`FacePipeline.process` on one {stages['frame']} frame with one face (eye distance "
             f"{stages['face_iod_px']:g} px), the pipeline's own stage timings; threads: {stages['threads']}, "
             f"{stages['warmup']} warm-up + {stages['runs']} timed frames with detection on every frame (stage rows) "
             "and as many with detection every 5th frame (`frame`, the webcam default). One single-engine pipeline "
             "per scale (output canvas ×s); SR engines: "
             + ", ".join(f"×{s}: {n}" for s, n in stages["engines"].items()) + ".", ""]
    for s, block in stages["scales"].items():
        lines += [f"×{s} (canvas ×{block['canvas_scale']}):", "",
                  "| stage | p50 ms | p90 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
        for name, st in block["stages"].items():
            lines.append(f"| {name} | {_ms(st['p50'])} | {_ms(st['p90'])} | {_ms(st['p99'])} | {_ms(st['mean'])} |")
        lines.append("")
    return lines


def markdown(rep: dict[str, Any]) -> str:
    m, st = rep["machine"], rep["settings"]
    results = rep["results"]
    cpu = _ok(results)
    bic = {r["scale"]: _psnr(r) for r in cpu if r["kind"] == "baseline" and _psnr(r) is not None}
    lines = ["# pkdn-edge benchmark: latency and quality, side by side with peers", "",
             f"Generated {rep['created']} by `{rep['command']}`. Raw numbers (every latency sample): "
             "[`report.json`](report.json).", ""]
    la, cont = m.get("load_average"), m.get("contention") or {}
    busy = cont.get("other_cpus_busy")
    if (busy is not None and busy > BUSY_OTHER_CPUS * m["usable_cpus"]) or (
            busy is None and la and la[0] > BUSY_LOAD_FRACTION * m["usable_cpus"]):
        what = (f"other processes kept {busy:.2f} of the {m['usable_cpus']} usable CPUs busy on average during the "
                f"measurements" if busy is not None else f"1-min load average {la[0]:.2f} at the start")
        lines += [f"> **Warning: the machine was busy** ({what}): latencies are inflated and noisier than on an "
                  "idle machine. Re-run on an idle machine for reference numbers.", ""]
    others = f"{busy:.2f} (average over {cont.get('wall_s', 0):.0f} s)" if busy is not None else "–"
    lines += ["## Targets", "", *_targets_md(rep["targets"]), "",
              "## Machine", "",
              "| | |", "|---|---|",
              f"| CPU | {m['cpu']} ({m['arch']}) |",
              f"| ISA flags (of interest) | {', '.join(m['cpu_flags']) or '–'} |",
              f"| CPUs | {m['usable_cpus']} usable of {m['logical_cpus']} logical |",
              f"| threads per engine | {m['threads']} |",
              f"| memory | {m['memory_gb']} GB |",
              f"| OS | {m['os']} |",
              f"| load average (1, 5, 15 min) before the run | {', '.join(map(str, la)) if la else '–'} |",
              f"| CPUs kept busy by other processes during the measurements | {others} |",
              f"| libraries | {', '.join(f'{k} {v}' for k, v in m['libraries'].items())} |", "",
              "## What is measured", "",
              f"* **Latency**: one aligned LR face per call (batch 1), uint8 BGR in → uint8 BGR 128×128 out, the "
              f"runtime's pre/post-processing included; {st['warmup']} warm-up calls excluded, then {st['runs']} "
              "timed calls (`time.perf_counter`, cycling through the evaluation faces). p50/p90/p99 = percentiles "
              "of those calls; FPS = calls / total time of the timed calls (sequential, one face at a time).",
              "* **Cold start** = load (open the artifact: read + compile / session creation; or read the "
              "checkpoint and build the model) + first inference, "
              + ("each configuration in a fresh Python process" if st["isolate"] else "in the benchmark's process")
              + "; **import** = importing the backend package beforehand (numpy, OpenCV and `pkdn_edge.engines` "
              "already imported). Files are in the OS page cache (warm disk).",
              f"* **Peak RSS Δ**: {st['memory_method']}, from before the load to the end of the timed calls "
              "(native allocations of every runtime included; tracemalloc is not used: it only sees Python objects).",
              "* **Size**: bytes on disk of what a deployment ships (all artifact files; the `.pt` checkpoint; the "
              "`.pb` graph).",
              f"* **Quality**: {rep['faces']['count']} faces from `{rep['faces']['folder']}`; LR = PIL antialiased "
              "bicubic ↓s (`pkdn_edge.train.degradations.bicubic_down`, as in `pkdn-train eval`); PSNR/SSIM on "
              "the Y channel (`pkdn_edge.metrics`), CTCNet protocol (no crop; the PSNR/SSIM columns) and DIC "
              "protocol (8-px crop). Bicubic = PIL bicubic ↑s.",
              "* **Peers**: OpenCV dnn_superres FSRCNN/ESPCN/LapSRN graphs run with `cv2.dnn` and the "
              "dnn_superres processing (Y channel through the network, Cr/Cb bilinear); see "
              "`export/bench/peers.py`.",
              f"* Threads: {m['threads']} for every runtime (ONNX Runtime intra-op, OpenVINO "
              "`INFERENCE_NUM_THREADS`, `torch.set_num_threads`, `cv2.setNumThreads`).", ""]
    for s in sorted({r["scale"] for r in cpu}):
        lines += [f"## CPU, ×{s} ({128 // s}×{128 // s} → 128×128)", "",
                  *_results_table([r for r in cpu if r["scale"] == s], bic), ""]
    lines += ["Sorted by p50; **bold** = our student. Latency distributions (box: p25–p75, whiskers: p1–p99, "
              "log scale):", "", "![latency per configuration](latency.png)", "",
              "## Quality vs latency", "",
              "Y-PSNR (CTCNet protocol) against p50 latency; the line is the Pareto front (nothing both faster "
              "and better); the green box (×8) is the target region (≥ LapSRN ×8 + 2 dB at ≤ ¼ of its latency).",
              "", "![quality vs latency](pareto.png)", "",
              "## Pipeline stages (CPU)", "", *_stages_md(rep.get("stages")), "", "## GPU", ""]
    gpu = rep["gpu"]
    gres = _ok(results, "cuda")
    if not gpu.get("cuda"):
        lines.append(f"no GPU: skipped ({gpu.get('reason', 'CUDA not available')}; TensorRT "
                     f"{'installed' if gpu.get('tensorrt') else 'not installed'}).")
    else:
        lines += [f"Devices: {', '.join(gpu.get('devices', []))}; timing synchronizes the device "
                  "(`torch.cuda.synchronize`) inside each timed call; TensorRT engines are built on this machine.", ""]
        for s in sorted({r["scale"] for r in gres}):
            lines += [f"### GPU, ×{s}", "", *_results_table([r for r in gres if r["scale"] == s], bic), ""]
        if gres:
            lines += ["![GPU latency](latency_gpu.png)"]
        else:
            lines.append("No GPU configuration ran (see below).")
    failed = [r for r in results if not r.get("ok")]
    notes = list(rep.get("notes", [])) + [f"{r['id']}: failed: {r.get('error')}" for r in failed]
    if notes:
        lines += ["", "## Skipped / notes", "", *[f"* {n}" for n in notes]]
    lines.append("")
    return "\n".join(lines)


# -- plots -------------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_latency(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Horizontal box plots (log x) of every configuration's latency samples, one panel per scale."""
    plt = _plt()
    scales = sorted({r["scale"] for r in results})
    n_rows = max(len([r for r in results if r["scale"] == s]) for s in scales)
    fig, axes = plt.subplots(1, len(scales), figsize=(6.5 * len(scales), 0.42 * n_rows + 1.6), squeeze=False)
    for ax, s in zip(axes[0], scales):
        rows = sorted([r for r in results if r["scale"] == s], key=lambda r: -r["latency_ms"]["p50"])
        data = [r["samples_ms"] for r in rows]
        kw = {"whis": (1, 99), "showfliers": True, "widths": 0.6, "patch_artist": True,
              "flierprops": {"markersize": 2, "alpha": 0.4}, "medianprops": {"color": "black"}}
        try:  # matplotlib >= 3.10 (vert= is deprecated from 3.11)
            bp = ax.boxplot(data, orientation="horizontal", **kw)
        except TypeError:
            bp = ax.boxplot(data, vert=False, **kw)
        for patch, r in zip(bp["boxes"], rows):
            patch.set_facecolor(KIND_COLORS.get(r["kind"], "tab:gray"))
            patch.set_alpha(0.75)
        ax.set_yticks(range(1, len(rows) + 1), [r["id"] for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency per face (ms, log scale)")
        ax.set_title(f"×{s}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    kinds = [k for k in KIND_COLORS if any(r["kind"] == k for r in results)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLORS[k], alpha=0.75) for k in kinds]
    fig.legend(handles, kinds, loc="lower center", ncol=max(1, len(kinds)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, quality) not dominated by another (≤ latency and ≥ quality,
    one strictly), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _short_label(r: dict[str, Any]) -> str:
    """The id without the scale (the panel's title has it): ``openvino-int8``, ``lapsrn``."""
    s = r["scale"]
    return r["id"].replace(f"pkdn-x{s}-", "").replace(f"-x{s}-", "-").replace(f"-x{s}", "")


def plot_pareto(results: list[dict[str, Any]], path: Path) -> None:
    """PSNR vs p50 latency (log x), one panel per scale, Pareto front and the ×8 target region."""
    plt = _plt()
    rows_all = [r for r in results if _psnr(r) is not None]
    scales = sorted({r["scale"] for r in rows_all}) or [4]
    fig, axes = plt.subplots(1, len(scales), figsize=(6.5 * len(scales), 4.8), squeeze=False)
    for ax, s in zip(axes[0], scales):
        rows = [r for r in rows_all if r["scale"] == s]
        if not rows:
            continue
        pts = [(r["latency_ms"]["p50"], _psnr(r)) for r in rows]
        span = max(p[1] for p in pts) - min(p[1] for p in pts) or 1.0
        placed: list[tuple[float, float, int]] = []
        for r, (x, y) in sorted(zip(rows, pts), key=lambda t: t[1][0]):
            ax.scatter([x], [y], color=KIND_COLORS.get(r["kind"], "tab:gray"), s=36, zorder=3)
            # stagger labels of points that sit close together (e.g. one model on several runtimes)
            used = {k for px, py, k in placed if abs(py - y) < 0.04 * span and abs(math.log10(x / px)) < 0.8}
            slot = min(k for k in range(len(placed) + 1) if k not in used)
            placed.append((x, y, slot))
            ax.annotate(_short_label(r), (x, y), textcoords="offset points", xytext=(5, 3 - 10 * slot), fontsize=7)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="black", lw=0.8, zorder=2,
                label="Pareto front")
        lap = next((r for r in rows if r["id"] == "lapsrn-x8"), None)
        if s == 8 and lap is not None:
            x1, y0 = TARGET_X8_LATENCY_RATIO * lap["latency_ms"]["p50"], _psnr(lap) + TARGET_X8_GAIN_DB
            xmin = min(p[0] for p in pts) / 2
            ymax = max(max(p[1] for p in pts), y0) + 0.5
            ax.add_patch(plt.Rectangle((xmin, y0), x1 - xmin, ymax - y0, color="tab:green", alpha=0.12, zorder=1,
                                       label="target: ≥ LapSRN + 2 dB, ≤ ¼ latency"))
            ax.set_xlim(left=xmin)
            ax.set_ylim(top=ymax)
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per face (ms, log scale)")
        ax.set_ylabel("Y-PSNR, CTCNet protocol (dB)")
        ax.set_title(f"×{s}")
        ax.grid(True, which="both", alpha=0.3)
        xs = [p[0] for p in pts]
        ax.set_xlim(right=max(xs) * 4)
    kinds = {r["kind"] for r in rows_all}
    for kind, color in KIND_COLORS.items():
        if kind in kinds:
            axes[0][0].scatter([], [], color=color, s=36, label={"ours": "PKDN student (ours)"}.get(kind, kind))
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rep: dict[str, Any], out: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the plots into ``out``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    cpu, gpu = _ok(rep["results"]), _ok(rep["results"], "cuda")
    files = []
    if cpu:
        n = rep["machine"]["threads"]
        plot_latency(cpu, out / "latency.png", f"CPU latency per face, batch 1, {n} thread{'s' if n != 1 else ''}")
        plot_pareto(cpu, out / "pareto.png")
        files += [out / "latency.png", out / "pareto.png"]
    if gpu:
        plot_latency(gpu, out / "latency_gpu.png", "GPU latency per face, batch 1")
        files.append(out / "latency_gpu.png")
    (out / "report.json").write_text(dumps(rep))
    (out / "report.md").write_text(markdown(rep))
    return [out / "report.md", out / "report.json", *files]


def dumps(rep: dict[str, Any]) -> str:
    """Indented JSON with lists of scalars (latency samples, shapes) kept on one line."""
    text = json.dumps(rep, indent=1, default=_json_default, allow_nan=True)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text) + "\n"


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
