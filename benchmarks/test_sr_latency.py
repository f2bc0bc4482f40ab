"""SR latency of every configuration pkdn-bench measured: our student per backend × precision ×
scale, the OpenCV dnn_superres peers and bicubic. One aligned LR face per call (batch 1), uint8
BGR in → uint8 BGR 128×128 out, pre/post-processing included (what ``pkdn-bench`` times)."""

from __future__ import annotations

from typing import Any


def test_sr_one_face(benchmark, sr_config: dict[str, Any], runners, lr_faces) -> None:
    runner, sync = runners(sr_config)
    face = lr_faces[sr_config["scale"]][0]
    benchmark.group = f"SR x{sr_config['scale']}"
    benchmark.extra_info.update({k: sr_config[k] for k in ("backend", "precision", "device", "kind")})

    def call() -> Any:
        out = runner.run(face)
        if sync is not None:
            sync()
        return out

    out = benchmark(call)
    assert out.shape == (128, 128, 3) and out.dtype.name == "uint8"
