"""``pkdn-train eval`` of an artifact served on a window larger than the face (pkdn-export --window):
the LR face is mirrored out to the window and the face's part of the output is scored."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pkdn_edge.errors import PKDNError  # noqa: E402
from pkdn_edge.train.evaluate import ArtifactModel  # noqa: E402


class _Nearest:
    """A stand-in engine: nearest-neighbour ×scale, only on inputs of its window size."""

    name = "stub"

    def __init__(self, window: int, scale: int) -> None:
        self.lr_size, self.scale, self.calls = (window, window), scale, []

    def run_unit(self, x: np.ndarray) -> np.ndarray:
        assert x.shape[2:] == self.lr_size
        self.calls.append(x)
        return x.repeat(self.scale, axis=2).repeat(self.scale, axis=3)


def _model(window: int, scale: int) -> ArtifactModel:
    m = ArtifactModel.__new__(ArtifactModel)
    m.engine = _Nearest(window, scale)
    return m


@pytest.mark.parametrize("window, size, scale", [(40, 32, 4), (20, 16, 8), (32, 32, 4)])
def test_windowed_artifacts_score_the_face_part_of_a_mirrored_window(window, size, scale):
    lr = torch.rand(3, 3, size, size)
    m = _model(window, scale)
    out = m(lr)
    assert out.shape == (3, 3, size * scale, size * scale)
    np.testing.assert_array_equal(out.numpy(), lr.numpy().repeat(scale, 2).repeat(scale, 3))
    x = m.engine.calls[0]
    p = (window - size) // 2
    if p:  # mirrored (without repeating the edge pixel), face in the middle
        np.testing.assert_array_equal(x[:, :, p:p + size, p:p + size], lr.numpy())
        np.testing.assert_array_equal(x[:, :, p - 1, p:p + size], lr.numpy()[:, :, 1])


def test_a_window_smaller_than_the_face_is_one_error():
    with pytest.raises(PKDNError, match="cannot score 32x32"):
        _model(24, 4)(torch.rand(1, 3, 32, 32))
