"""Heatmap of the robustness matrix: gain over bicubic (dB) per model and protocol.

Reads the ``eval.json`` that ``pkdn-train eval --protocol paper camera matrix`` writes and draws one
row per model (and scale), one column per protocol, the cell coloured and labelled by its gain::

    python benchmarks/robustness_heatmap.py /tmp/robustness/eval.json --out docs/figures/robustness.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def gain_table(reports: list[dict]) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, protocols, gains (rows, protocols)) of every non-bicubic row of the reports."""
    protocols: list[str] = []
    cells: dict[str, dict[str, float]] = {}
    for rep in reports:
        for r in rep["rows"]:
            if r["model"] == "bicubic":
                continue
            if r["protocol"] not in protocols:
                protocols.append(r["protocol"])
            cells.setdefault(f"×{r['scale']} {r['model']}", {})[r["protocol"]] = r["gain_db"]
    rows = list(cells)
    gains = np.array([[cells[m].get(p, np.nan) for p in protocols] for m in rows], dtype=float)
    return rows, protocols, gains


def draw(rows: list[str], protocols: list[str], gains: np.ndarray, out: Path, target: float | None) -> None:
    fig, ax = plt.subplots(figsize=(1.0 * len(protocols) + 4, 0.5 * len(rows) + 1.6))
    lim = max(3.5, float(np.nanmax(np.abs(gains))))
    im = ax.imshow(gains, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(protocols)), protocols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(protocols)):
            g = gains[i, j]
            if np.isfinite(g):
                bold = target is not None and g < target
                ax.text(j, i, f"{g:+.2f}", ha="center", va="center", fontsize=8, weight="bold" if bold else "normal")
    title = "Gain over bicubic of the same LR (dB, 81 eval faces)"
    if target is not None:
        title += f"; bold: below +{target:.1f}"
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="dB")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="eval.json files of pkdn-train eval")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--target", type=float, default=None, help="mark gains below this (dB) in bold")
    p.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW", help="replace OLD by NEW in row labels")
    args = p.parse_args(argv)
    rows, protocols, gains = gain_table([json.loads(Path(r).read_text()) for r in args.reports])
    for pair in args.rename:
        old, _, new = pair.partition("=")
        rows = [r.replace(old, new) for r in rows]
    draw(rows, protocols, gains, Path(args.out), args.target)
    print(f"wrote {args.out}: {len(rows)} models × {len(protocols)} protocols")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
