"""What machine a benchmark ran on: CPU model and ISA flags, cores, threads, memory, library
versions, load average and GPU (CUDA / TensorRT) availability. Cheap and side-effect free:
nothing heavy is imported except to read a version (and torch only when it is already installed,
to ask about CUDA)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

# ISA flags that matter for these models (x86 /proc/cpuinfo "flags", Arm "Features")
INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2",
)
# distribution name -> how the report calls it
LIBRARIES = (
    ("pkdn-edge", "pkdn-edge"), ("numpy", "numpy"), ("opencv-python", "opencv"), ("onnxruntime", "onnxruntime"),
    ("openvino", "openvino"), ("torch", "torch"), ("nncf", "nncf"), ("onnx", "onnx"), ("pillow", "Pillow"),
    ("tensorrt", "tensorrt"), ("cuda-python", "cuda-python"), ("matplotlib", "matplotlib"),
    ("pytest-benchmark", "pytest-benchmark"),
)


def _cpuinfo() -> dict[str, str]:
    """First processor block of /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def cpu_flags(info: dict[str, str] | None = None) -> list[str]:
    """The :data:`INTERESTING_FLAGS` this CPU reports, in that order."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in INTERESTING_FLAGS if f in flags]


def cpu_model(info: dict[str, str] | None = None) -> str:
    info = _cpuinfo() if info is None else info
    return info.get("model name") or info.get("Hardware") or info.get("Model") or platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the numbers (absent ones are left out)."""
    out = {"python": platform.python_version()}
    for dist, name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "tensorrt" not in out and importlib.util.find_spec("tensorrt") is not None:  # JetPack: no dist-info
        try:
            out["tensorrt"] = str(importlib.import_module("tensorrt").__version__)
        except Exception:  # noqa: BLE001 - a broken install is just "unknown"
            out["tensorrt"] = "unknown"
    return out


def gpu_info() -> dict[str, Any]:
    """``{"cuda": bool, "reason": str, "devices": [...], "tensorrt": bool, ...}``.

    CUDA is probed through torch (only when torch is installed); TensorRT by its module.
    """
    out: dict[str, Any] = {"cuda": False, "devices": [], "tensorrt": importlib.util.find_spec("tensorrt") is not None}
    if importlib.util.find_spec("torch") is None:
        out["reason"] = "torch is not installed (CUDA is probed through torch)"
        return out
    import torch

    out["torch_cuda_build"] = torch.version.cuda
    if not torch.cuda.is_available():
        out["reason"] = ("torch was built without CUDA" if torch.version.cuda is None
                         else "torch.cuda.is_available() is False (no GPU or driver)")
        return out
    out["cuda"] = True
    out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    out["reason"] = ""
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = list(ort.get_available_providers())
    except ImportError:
        pass
    return out


def machine_info(threads: int) -> dict[str, Any]:
    """Everything the report's "Machine" section prints."""
    info = _cpuinfo()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(info),
        "cpu_flags": cpu_flags(info),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "threads": int(threads),
        "memory_gb": memory_total_gb(),
        "load_average": load_average(),
        "python": sys.version.split()[0],
        "libraries": library_versions(),
    }


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; None off Linux). Idle and iowait
    are not busy; steal is (another VM had the CPU)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuContention:
    """How many CPUs *other* processes kept busy, on average, between :meth:`start` and :meth:`stop`:
    (busy CPU time of the machine − CPU time of this process and its waited-for children) / wall
    time. 0 on an idle machine; the benchmark's own work is excluded."""

    def start(self) -> "CpuContention":
        import time

        self._t, self._busy, self._own = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()
        return self

    def stop(self) -> dict[str, float] | None:
        import time

        busy = _busy_cpu_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._t
        others = max(0.0, (busy - self._busy) - (_own_cpu_seconds() - self._own))
        return {"wall_s": round(wall, 1), "other_cpu_s": round(others, 1),
                "other_cpus_busy": round(others / wall, 2) if wall > 0 else 0.0}
