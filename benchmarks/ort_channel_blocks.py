"""Why 25 % uniform pruning was barely faster in ONNX Runtime: channel counts between multiples of
16 cost what the next multiple costs (AVX-512 NCHWc blocks of 16 channels).

    .venv/bin/python benchmarks/ort_channel_blocks.py

CPU time per call (process time, 1 ORT thread, so it holds on a busy machine), median over calls
in alternating blocks, of one conv 3×3 C→C and one residual block C→M→C on PKDN's 32×32 stage-0
grid at ×4.
"""

from __future__ import annotations

import io
import time

import numpy as np
import onnxruntime as ort
import torch


class Block(torch.nn.Module):
    def __init__(self, c: int, m: int) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(c, m, 3, padding=1), torch.nn.Conv2d(m, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


def session(model: torch.nn.Module, channels: int) -> ort.InferenceSession:
    buf = io.BytesIO()
    torch.onnx.export(model.eval(), torch.rand(1, channels, 32, 32), buf, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def main(rounds: int = 6, block: int = 30) -> None:
    items = {f"conv3x3 {c}->{c}": (session(torch.nn.Conv2d(c, c, 3, padding=1), c), c) for c in (32, 36, 40, 48)}
    items.update({f"resblock {c}-{m}-{c}": (session(Block(c, m), c), c)
                  for c, m in ((48, 48), (48, 32), (48, 24), (48, 16), (32, 32), (32, 16))})
    x = {k: np.random.rand(1, c, 32, 32).astype(np.float32) for k, (_, c) in items.items()}
    times: dict[str, list[float]] = {k: [] for k in items}
    for k, (s, _) in items.items():
        for _ in range(10):
            s.run(None, {s.get_inputs()[0].name: x[k]})
    order = list(items)
    for _ in range(rounds):
        for k in order:
            s, name = items[k][0], items[k][0].get_inputs()[0].name
            for _ in range(block):
                t = time.process_time()
                s.run(None, {name: x[k]})
                times[k].append((time.process_time() - t) * 1e3)
        order.reverse()
    for k, v in times.items():
        print(f"{k:24s} {np.median(v):7.3f} ms CPU per call @32x32")


if __name__ == "__main__":
    main()
