"""PKDN teacher/student shapes, presets, budgets and checkpoints."""

import pytest
import torch

from pkdn_edge.errors import PKDNError
from pkdn_edge.models import NUM_PRIOR_CHANNELS, create_model
from pkdn_edge.models.checkpoint import export_weights, load_model
from pkdn_edge.models.complexity import count_macs, count_params


@pytest.mark.parametrize("preset", ["edge", "paper"])
@pytest.mark.parametrize("scale", [4, 8])
def test_teacher_and_student_shapes(preset, scale):
    h = 128 // scale
    lr = torch.rand(2, 3, h, h)
    prior = torch.softmax(torch.randn(2, NUM_PRIOR_CHANNELS, 128, 128), 1)
    student = create_model(preset, scale, "student").eval()
    teacher = create_model(preset, scale, "teacher").eval()
    with torch.no_grad():
        sr_s, f_s = student.forward_features(lr)
        sr_t, f_t = teacher.forward_features(lr, prior)
    assert sr_s.shape == sr_t.shape == (2, 3, 128, 128)
    n = len(student.cfg.widths)
    assert len(f_s) == len(f_t) == 2 * n + 1
    assert [f.shape[1] for f in f_s] == student.feature_channels
    # same skeleton: every distilled feature has the same shape in teacher and student
    assert [f.shape for f in f_s] == [f.shape for f in f_t]
    # encoder halves the LR grid per stage
    assert [f.shape[-1] for f in f_s[:n]] == [h >> i for i in range(n)]


def test_teacher_uses_the_prior_and_requires_it():
    teacher = create_model("edge", 8, "teacher").eval()
    lr = torch.rand(1, 3, 16, 16)
    p1 = torch.zeros(1, NUM_PRIOR_CHANNELS, 128, 128)
    p1[:, 0] = 1
    p2 = torch.zeros_like(p1)
    p2[:, 1] = 1
    with torch.no_grad():
        assert not torch.allclose(teacher(lr, p1), teacher(lr, p2))
    with pytest.raises(ValueError, match="prior"):
        teacher(lr)


def test_output_is_residual_over_bicubic_at_init_scale():
    student = create_model("edge", 4, "student").eval()
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        sr = student(lr)
    base = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert (sr - base).abs().mean() < 0.5  # untrained residual is small, not a different image


def test_edge_student_fits_the_webcam_budget():
    for scale in (4, 8):
        m = create_model("edge", scale, "student")
        macs = count_macs(m, torch.rand(1, 3, 128 // scale, 128 // scale))
        assert macs <= 0.5e9, f"×{scale} edge student costs {macs / 1e9:.2f} GMACs"
    assert count_params(create_model("edge", 4)) < count_params(create_model("paper", 4))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("huge", 4)


def test_checkpoint_round_trip_fp16(tmp_path):
    m = create_model("edge", 8, "student").eval()
    export_weights(m, tmp_path / "w.pt", meta={"note": "x"}, half=True)
    m2, meta = load_model(tmp_path / "w.pt")
    assert meta == {"note": "x"}
    lr = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (m(lr) - m2(lr)).abs().max() < 1e-2


def test_nan_weights_are_refused(tmp_path):
    m = create_model("edge", 8, "student")
    with torch.no_grad():
        m.stem.weight[0, 0, 0, 0] = float("nan")
    export_weights(m, tmp_path / "nan.pt")
    with pytest.raises(PKDNError, match="NaN"):
        load_model(tmp_path / "nan.pt")


def test_foreign_file_is_refused(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PKDNError, match="corrupt"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(PKDNError, match="not found"):
        load_model(tmp_path / "missing.pt")
