"""``precision: auto`` (train/precision.py): bf16 only with native CPU support and a faster probe."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from pkdn_edge.errors import PKDNError  # noqa: E402
from pkdn_edge.train import precision as P  # noqa: E402

AVX2_ONLY = {"sse4_2", "avx2", "fma"}
VNNI_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}  # e.g. a VM that hides AMX/BF16
ZEN4 = VNNI_NO_BF16 | {"avx512_bf16"}
SAPPHIRE = VNNI_NO_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}


def _probe_never_called():
    raise AssertionError("the probe must not run on a CPU without native bf16")


@pytest.mark.parametrize("flags", [AVX2_ONLY, VNNI_NO_BF16])
def test_auto_is_fp32_without_native_bf16_and_skips_the_probe(flags):
    prec, why = P.choose_precision("auto", "cpu", flags=flags, probe=_probe_never_called)
    assert prec == "fp32"
    assert "avx512_bf16/amx_bf16" in why and "no probe" in why


@pytest.mark.parametrize("flags, which", [(ZEN4, "avx512_bf16"), (SAPPHIRE, "amx_bf16")])
def test_auto_is_bf16_when_native_and_the_probe_is_faster(flags, which):
    prec, why = P.choose_precision("auto", "cpu", flags=flags, probe=lambda: 1.7)
    assert prec == "bf16" and which in why and "1.70x" in why


def test_auto_is_fp32_when_native_but_the_probe_is_not_faster():
    prec, why = P.choose_precision("auto", "cpu", flags=ZEN4, probe=lambda: 1.02)
    assert prec == "fp32" and "1.02x" in why and f"< {P.MIN_SPEEDUP}x" in why


def test_explicit_settings_are_honoured_and_emulated_bf16_is_flagged():
    assert P.choose_precision("fp32", "cpu", flags=ZEN4, probe=_probe_never_called)[0] == "fp32"
    prec, why = P.choose_precision("bf16", "cpu", flags=AVX2_ONLY, probe=_probe_never_called)
    assert prec == "bf16" and "emulated" in why
    prec, why = P.choose_precision("bf16", "cpu", flags=ZEN4, probe=_probe_never_called)
    assert prec == "bf16" and "emulated" not in why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert P.cpu_flags(f) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert P.native_bf16(P.cpu_flags(f)) == (True, "avx512_bf16")
    assert P.cpu_flags(tmp_path / "missing") is None


def test_the_probe_is_short_and_measures_something():
    import time

    import torch

    torch.set_num_threads(1)
    t = time.perf_counter()
    s = P.probe_speedup()
    assert time.perf_counter() - t < 5.0 and 0.01 < s < 100


def test_openvino_hint_is_f32_unless_bf16_is_requested_and_native():
    class Core:
        def __init__(self, caps):
            self.caps = caps

        def get_property(self, device, key):
            assert (device, key) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return self.caps

    assert P.openvino_precision("fp32", Core(["FP32", "BF16"]))[0] == "f32"
    assert P.openvino_precision("bf16", Core(["FP32", "INT8"]))[0] == "f32"
    assert P.openvino_precision("auto", Core(["FP32", "INT8"]))[0] == "f32"
    assert P.openvino_precision("bf16", Core(["FP32", "BF16"]))[0] == "bf16"


def test_eval_precision_needs_native_bf16(monkeypatch):
    from pkdn_edge.train.evaluate import eval_precision

    assert eval_precision("fp32", flags=ZEN4) == {"torch": "fp32", "openvino": "f32", "why": "fp32 requested"}
    p = eval_precision("bf16", flags=AVX2_ONLY)
    assert p["torch"] == "fp32" and p["openvino"] == "f32" and "avx512_bf16/amx_bf16" in p["why"]
    monkeypatch.setattr(P, "openvino_precision", lambda req: ("bf16", "native"))
    p = eval_precision("auto", flags=SAPPHIRE)
    assert p["torch"] == "bf16" and p["openvino"] == "bf16"
    with pytest.raises(PKDNError, match="precision must be"):
        eval_precision("fp16")


def test_auto_is_the_default_and_every_config_resolves_to_auto():
    from pkdn_edge.train.config import TrainConfig, load_config

    assert TrainConfig().precision == "auto"
    root = Path(__file__).resolve().parents[1] / "train" / "configs"
    paths = sorted(root.glob("*.yaml")) + sorted((root / "experiments").glob("*.yaml"))
    assert len(paths) > 10
    for p in paths:
        assert load_config(p).precision == "auto", p
    with pytest.raises(PKDNError, match="precision must be one of"):
        load_config(overrides=["precision=fp16"])


def test_the_trainer_logs_its_choice_and_uses_it(tmp_path, monkeypatch, capsys):
    import numpy as np
    from PIL import Image

    from pkdn_edge.train import loop
    from pkdn_edge.train.config import load_config

    rng = np.random.default_rng(0)
    (tmp_path / "faces").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "faces" / f"{i}.png")
    tiny = {"widths": [8, 12], "depth": 1, "bottleneck_depth": 1, "refine_width": 8, "prior_width": 4}
    for chosen in ("fp32", "bf16"):
        monkeypatch.setattr(loop, "choose_precision", lambda req, dev, c=chosen: (c, f"mocked: {req} on {dev}"))
        cfg = load_config(data=str(tmp_path / "faces"), num_val=4, hr_size=32, steps=1, threads=1, device="cpu",
                          model=tiny, out=str(tmp_path / chosen), cache_dir=str(tmp_path / "cache"))
        t = loop.Trainer(cfg)
        assert t.precision == chosen and t._autocast()._enabled == (chosen == "bf16")
        assert f"precision: {chosen} (mocked: auto on cpu)" in capsys.readouterr().out
