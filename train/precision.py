"""``precision: auto``: bfloat16 only where the CPU computes it natively *and* it is measured faster.

On CPUs without native bf16 (no AVX512-BF16, no AMX) PyTorch emulates bf16 convolutions, several
times slower than fp32 (measured steps per second: docs/training.md, "Precision that fits the CPU").
So ``auto`` decides in two steps:

1. **Flags.** Native bf16 = ``avx512_bf16`` or ``amx_bf16`` in the CPU's flags (``/proc/cpuinfo``;
   PyTorch's own ``torch.cpu._is_avx512_bf16_supported()`` / ``_is_amx_tile_supported()`` where the
   file is missing). Without it: fp32, no probe.
2. **Probe** (native CPUs only): a few forward/backward steps of a small conv net (about the
   student's widths, channels-last) in fp32 and under bf16 autocast, best of three timings each
   (well under a second). bf16 only when it is at least :data:`MIN_SPEEDUP` faster.

On CUDA, ``auto`` is bf16 where ``torch.cuda.is_bf16_supported()`` says so. An explicit
``precision: bf16`` is honoured, with a warning when the CPU has no native bf16.
:func:`choose_precision` returns the choice and a one-line reason that the trainer prints.
"""

from __future__ import annotations

import time
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by 10 % in the probe to be chosen


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (first ``flags`` line of ``/proc/cpuinfo``), or None where unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return None


def native_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """(has native bf16, which flags say so) from the CPU flags, else from PyTorch's CPU checks."""
    flags = cpu_flags() if flags is None else flags
    if flags is not None:
        have = [f for f in NATIVE_BF16_FLAGS if f in flags]
        return bool(have), ("+".join(have) if have else f"no {'/'.join(NATIVE_BF16_FLAGS)} in the CPU flags")
    try:
        import torch

        have = [n for n, f in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))
                if getattr(torch.cpu, f, lambda: False)()]
    except Exception:  # noqa: BLE001 - an unknown CPU is treated as not native
        have = []
    return bool(have), ("+".join(have) + " (torch.cpu)" if have else "no native bf16 reported by torch.cpu")


def probe_speedup(steps: int = 3, batch: int = 8, size: int = 32, width: int = 32) -> float:
    """fp32 time / bf16-autocast time of forward+backward steps of a small conv net on the CPU
    (best of ``steps`` each, after one warm-up; uses the current ``torch`` thread setting)."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 3, 3, padding=1),
    ).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size).to(memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        times = []
        for i in range(steps + 1):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = net(x)
            y.float().abs().mean().backward()
            net.zero_grad(set_to_none=True)
            if i:  # the first call is the warm-up (oneDNN primitive creation)
                times.append(time.perf_counter() - t)
        return min(times)

    return best(False) / best(True)


def choose_precision(requested: str, device: str = "cpu", flags: set[str] | None = None,
                     probe=probe_speedup) -> tuple[str, str]:
    """(``"fp32"`` or ``"bf16"``, why) for a config's ``precision`` on ``device`` (``cpu``/``cuda``)."""
    if requested == "fp32":
        return "fp32", "precision: fp32 set in the config"
    if device == "cuda":
        import torch

        if requested == "bf16":
            return "bf16", "precision: bf16 set in the config"
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "auto: the CUDA device supports bf16") if ok else ("fp32", "auto: the CUDA device has no bf16")
    native, which = native_bf16(flags)
    if requested == "bf16":
        if native:
            return "bf16", f"precision: bf16 set in the config ({which})"
        return "bf16", (f"precision: bf16 set in the config, but {which}: bf16 is emulated and may be several "
                        "times slower than fp32 (use precision: auto or fp32)")
    if requested != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {requested!r}")
    if not native:
        return "fp32", f"auto: {which}, so bf16 would be emulated (slow); no probe run"
    t = time.perf_counter()
    speedup = probe()
    spent = time.perf_counter() - t
    if speedup >= MIN_SPEEDUP:
        return "bf16", f"auto: {which}, and a {spent:.1f} s probe ran bf16 {speedup:.2f}x as fast as fp32"
    return "fp32", (f"auto: {which}, but a {spent:.1f} s probe ran bf16 only {speedup:.2f}x as fast as fp32 "
                    f"(< {MIN_SPEEDUP}x)")


def openvino_precision(requested: str, core=None) -> tuple[str, str]:
    """OpenVINO ``INFERENCE_PRECISION_HINT`` for evaluation: ``"f32"`` unless bf16 is requested
    (``bf16``/``auto``) *and* the CPU plugin lists ``BF16`` in its optimisation capabilities."""
    if requested == "fp32":
        return "f32", "fp32 requested"
    if requested not in ("bf16", "auto"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {requested!r}")
    try:
        if core is None:
            from pkdn_edge.telemetry import import_openvino

            core = import_openvino().Core()
        caps = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as exc:  # noqa: BLE001
        return "f32", f"{requested} requested, but the OpenVINO CPU capabilities could not be read ({exc})"
    if "BF16" in caps:
        return "bf16", f"{requested} requested and the OpenVINO CPU plugin has native BF16"
    return "f32", (f"{requested} requested, but the OpenVINO CPU plugin has no native BF16 "
                   f"(capabilities: {' '.join(sorted(caps))})")
