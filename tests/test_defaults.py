"""The defaults point at the camera-robust students; the paper-protocol students stay shipped."""

from __future__ import annotations

import json

import pytest

from pkdn_edge.errors import PKDNError
from pkdn_edge.manifest import sha256_file
from pkdn_edge.pretrained import WEIGHTS_DIR, model_card, pretrained_path


@pytest.mark.parametrize("scale", [4, 8])
def test_default_weights_are_the_camera_students(scale):
    path = pretrained_path(scale)
    assert path.name == f"pkdn_edge_x{scale}.pt"
    card = model_card(scale)
    assert card["training"]["degradation"] == "camera"
    assert card["training"]["config"]["degradation"] == "camera"
    protocols = {r["protocol"] for r in card["eval"]["rows"]}
    # every card reports both protocols (the paper protocol was named `bicubic` before issue 32)
    assert protocols in ({"paper", "camera"}, {"bicubic", "camera"})


@pytest.mark.parametrize("scale", [4, 8])
def test_paper_students_stay_shipped_under_their_own_name(scale):
    path = pretrained_path(scale, "paper")
    assert path.name == f"pkdn_edge_x{scale}_paper.pt" and path.is_file()
    assert model_card(scale, "paper")["training"]["degradation"] == "bicubic"
    assert sha256_file(path) != sha256_file(pretrained_path(scale))
    with pytest.raises(PKDNError, match="unknown variant"):
        pretrained_path(scale, "clean")


@pytest.mark.parametrize("scale", [4, 8])
def test_shipped_onnx_is_exported_from_the_default_weights(scale):
    """What the webcam loop runs without torch (pkdn_edge/weights/onnx_fp32_x{s}) is the default
    checkpoint, byte for byte (its manifest records the checkpoint's sha256)."""
    manifest = json.loads((WEIGHTS_DIR / f"onnx_fp32_x{scale}" / "manifest.json").read_text())
    assert manifest["source"]["weights"] == f"pkdn_edge_x{scale}.pt"
    assert manifest["source"]["sha256"] == sha256_file(pretrained_path(scale))


def test_export_and_bench_default_to_the_camera_students():
    """pkdn-export (no --weights) and pkdn-bench resolve their model through pretrained_path()."""
    import inspect

    from pkdn_edge.engines import select

    assert "pretrained_path(scale)" in inspect.getsource(select)
    exporter = (WEIGHTS_DIR.parent.parent / "export" / "exporter.py").read_text()
    assert "pretrained_path(" in exporter


@pytest.mark.parametrize("scale", [4, 8])
def test_wide_students_ship_as_a_variant_not_the_default(scale):
    """The wide-camera students (v2) are the variant ``wide``; the default stays the camera student."""
    path = pretrained_path(scale, "wide")
    assert path.name == f"pkdn_edge_x{scale}_wide.pt" and path.is_file()
    card = model_card(scale, "wide")
    assert card["training"]["config"]["camera"]["preset"] == "wide"
    assert model_card(scale)["training"]["config"]["camera"].get("preset", "v1") == "v1"
    assert sha256_file(path) != sha256_file(pretrained_path(scale))
