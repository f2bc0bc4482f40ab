"""NNCF post-training quantization (PTQ) of a PKDN student, for OpenVINO and for the Q/DQ ONNX.

The NNCF calls only; which of them an export runs is :mod:`.strategy`'s choice. Same calibration
faces, same ignored-scope groups on both paths:

* :func:`quantize_openvino`: ``nncf.quantize`` on the OpenVINO model (converted from the fp32
  ONNX). OpenVINO's CPU plugin runs the result with int8 kernels.
* :func:`quantize_openvino_accuracy`: the OpenVINO path with NNCF's accuracy control (ops are
  reverted to float until the PSNR drop on held-out faces is within a bound).
* :func:`quantize_torch` + :func:`strip_to_native`: ``nncf.quantize`` on the PyTorch model, then
  stripped to ``torch.ao`` FakeQuantize modules so ``torch.onnx.export(dynamo=False)`` writes
  ``QuantizeLinear``/``DequantizeLinear`` (:mod:`.qdq_onnx`). The PyTorch model NNCF returns is
  trainable: :mod:`.qat` fine-tunes it (QAT) before export.

Ignored scopes (``PKDN.md`` §5: INT8 SR breaks around pixel-shuffle, resize and the first/last
convs) are named groups of modules, resolved to each backend's node names through the conv
weights they own (``upsampler.to_rgb.weight`` is the same name in PyTorch, ONNX and OpenVINO):

========  =======================================================================
group     ops kept in float
========  =======================================================================
edges     the first conv (``stem``), the last (``upsampler.to_rgb``) and the float
          skip path: the bicubic resize of the input and the final add
          ``bicubic + residual`` (found by graph position: the input's non-conv
          consumers and the output's producer)
shuffle   convs feeding or fed by a pixel-(un)shuffle: ``ups.*``, ``downs.*``,
          ``upsampler.ups.*``, ``upsampler.refines.*``
upsampler the whole HR-grid upsampler (``upsampler.*``)
gates     the attention gates (channel/spatial, before sigmoids) and affine modulation
========  =======================================================================

``edges`` is the default: on held-out training faces almost all of the INT8 loss was the quantized
skip path (input and both operands of ``bicubic + residual``); ``docs/export.md`` has the table.

Calibration faces never come from ``shared/faces/eval`` (see :mod:`..data`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

# NNCF would compile its CPU fake-quantize extension on first use of a quantized PyTorch model;
# _nncf() points it at the pure-torch reference functions instead (._nncf_ext). Should the extension
# still be built (another NNCF), a busy 2-core machine needs more than NNCF's default 60 s.
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")

from pkdn_edge.errors import MissingDependencyError, PKDNError
from pkdn_edge.telemetry import disable as telemetry_off

from ..settings import BOUNDARY_GROUPS, IGNORE_GROUPS, PRESETS, Int8Settings
from ._nncf_ext import use_reference_quantizers

SKIP_PATH_OPS = ("Interpolate", "MatMul", "Transpose", "Reshape", "Convert")  # OpenVINO ops of the bicubic skip path


def _matches(name: str, prefix: str) -> bool:
    if "*" not in prefix:
        return name == prefix + ".weight" or name.startswith(prefix if prefix.endswith(".") else prefix + ".")
    import fnmatch

    return fnmatch.fnmatch(name, prefix + "*")


def ignored_weights(model: nn.Module, groups: Iterable[str]) -> set[str]:
    """Weight names (``upsampler.to_rgb.weight``) of the convs in ``groups``."""
    prefixes = [p for g in groups for p in IGNORE_GROUPS[g]]
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and any(_matches(f"{mod_name}.weight", p) for p in prefixes):
            names.add(f"{mod_name}.weight")
    return names


@contextlib.contextmanager
def quiet_nncf():
    """NNCF's progress bars and INFO logs off; warnings off."""
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        log.setLevel(level)


def _nncf() -> Any:
    telemetry_off()  # before the import: nncf imports openvino, which reports usage on import
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "export", "INT8 quantization") from None
    use_reference_quantizers()  # no JIT C++ build, no build lock to hang on (see ._nncf_ext)
    return nncf


def _advanced(nncf: Any, s: Int8Settings) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix(s.overflow_fix))


def _preset(nncf: Any, s: Int8Settings) -> Any:
    if s.preset not in PRESETS:
        raise PKDNError(f"unknown INT8 preset {s.preset!r}; choose from {PRESETS}")
    return nncf.QuantizationPreset.PERFORMANCE if s.preset == "performance" else nncf.QuantizationPreset.MIXED


# --------------------------------------------------------------------------------------------------
# PyTorch path (→ Q/DQ ONNX for TensorRT / ONNX Runtime)


def torch_ignored_nodes(model: nn.Module, example: torch.Tensor, weights: set[str],
                        boundary: bool = False) -> list[str]:
    """NNCF graph node names of the convs whose weight is in ``weights``; with ``boundary`` also the
    input's non-conv consumers (the bicubic resize) and the output's producer (the final add)."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(model, example)
    names = []
    for node in graph.get_all_nodes():
        if any(e.from_node.node_name in weights for e in graph.get_input_edges(node)):
            names.append(node.node_name)
    if boundary:
        for node in graph.get_input_nodes():
            names += [n.node_name for n in graph.get_next_nodes(node) if "conv" not in n.node_type]
        for node in graph.get_output_nodes():
            names += [n.node_name for n in graph.get_previous_nodes(node)]
    return sorted(set(names))


def quantize_torch(model: nn.Module, calib_lr: np.ndarray, settings: Int8Settings) -> nn.Module:
    """NNCF PTQ of a PyTorch PKDN on calibration inputs ``calib_lr`` (N,3,h,w) float32 in [0,1].
    Returns NNCF's quantized (fake-quant) model; the input model is not modified."""
    nncf = _nncf()
    import copy

    model = copy.deepcopy(model).eval()
    example = torch.from_numpy(calib_lr[:1])
    boundary = bool(BOUNDARY_GROUPS & set(settings.ignore))
    names = (torch_ignored_nodes(model, example, ignored_weights(model, settings.ignore), boundary)
             if settings.ignore else [])
    data = nncf.Dataset([torch.from_numpy(calib_lr[i : i + 1]) for i in range(len(calib_lr))])
    with quiet_nncf():
        q = nncf.quantize(model, data, preset=_preset(nncf, settings),
                          subset_size=min(settings.subset_size, len(calib_lr)),
                          fast_bias_correction=settings.fast_bias_correction,
                          ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None,
                          advanced_parameters=_advanced(nncf, settings))
    return q.eval()


def strip_to_native(q: nn.Module, example: torch.Tensor) -> nn.Module:
    """NNCF fake-quant model → the same model with ``torch.ao`` FakeQuantize modules (exports as
    QuantizeLinear/DequantizeLinear with ``dynamo=False``).

    ``nncf.strip(..., NATIVE)`` in NNCF 3.4 converts each quantizer module once, so quantizers
    *shared* between several inputs (the unified scales NNCF gives a Concat's inputs) keep one
    NNCF copy that exports as OpenVINO's custom ``FakeQuantize`` op; every remaining one is
    converted here too.
    """
    nncf = _nncf()
    from nncf.parameters import StripFormat
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer
    from nncf.torch.quantization.strip import convert_to_torch_fakequantizer

    with quiet_nncf():
        s = nncf.strip(q, do_copy=True, strip_format=StripFormat.NATIVE, example_input=example)
        storage = get_hook_storage(s)
        converted: dict[int, nn.Module] = {}
        for name, mod in list(storage.named_hooks(remove_duplicate=False)):
            if isinstance(mod, BaseQuantizer):
                if id(mod) not in converted:
                    converted[id(mod)] = convert_to_torch_fakequantizer(mod)
                storage.set_submodule(name, converted[id(mod)])
    return s.eval()


# --------------------------------------------------------------------------------------------------
# OpenVINO path


def ov_ignored_nodes(ov_model: Any, weights: set[str], boundary: bool = False) -> list[str]:
    """OpenVINO op names of the convolutions whose weight constant is named in ``weights``; with
    ``boundary`` also the bicubic skip path from the inputs (``SKIP_PATH_OPS``) and the outputs' producers."""
    names = []
    if boundary:
        for p in ov_model.get_parameters():
            todo = [t.get_node() for t in p.output(0).get_target_inputs()]
            while todo:  # the skip path: Interpolate, or MatMul → MatMul (resize_to_matmul), up to the add
                node = todo.pop()
                if node.get_type_name() not in SKIP_PATH_OPS:
                    continue
                names.append(node.get_friendly_name())
                todo += [t.get_node() for o in node.outputs() for t in o.get_target_inputs()]
        names += [r.input_value(0).get_node().get_friendly_name() for r in ov_model.get_results()]
    for op in ov_model.get_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        src = op.input_value(1).get_node()
        while src.get_type_name() in ("Convert", "Reshape") and src.get_input_size():
            src = src.input_value(0).get_node()
        tensor_names = set(src.get_output_tensor(0).get_names()) | {src.get_friendly_name()}
        if tensor_names & weights:
            names.append(op.get_friendly_name())
    return sorted(names)


def quantize_openvino(ov_model: Any, calib_lr: np.ndarray, settings: Int8Settings, weights: set[str]) -> Any:
    """NNCF PTQ of an OpenVINO model on ``calib_lr`` (N,3,h,w) float32; ``weights``: the conv weight
    names to keep in float (from :func:`ignored_weights`). Returns a new ``ov.Model``."""
    nncf = _nncf()
    boundary = bool(BOUNDARY_GROUPS & set(settings.ignore))
    names = ov_ignored_nodes(ov_model, weights, boundary) if weights or boundary else []
    if weights and len(set(names)) < len(weights):
        raise PKDNError(f"ignored scope: found {len(names)} of {len(weights)} convs in the OpenVINO model")
    data = nncf.Dataset([calib_lr[i : i + 1] for i in range(len(calib_lr))])
    with quiet_nncf():
        return nncf.quantize(ov_model, data, preset=_preset(nncf, settings),
                             subset_size=min(settings.subset_size, len(calib_lr)),
                             fast_bias_correction=settings.fast_bias_correction,
                             ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None,
                             advanced_parameters=_advanced(nncf, settings))


def quantize_openvino_accuracy(ov_model: Any, calib_lr: np.ndarray, select_lr: np.ndarray, select_hr: np.ndarray,
                               settings: Int8Settings, weights: set[str], max_drop: float) -> Any:
    """Accuracy-controlled NNCF PTQ of an OpenVINO model (``nncf.quantize_with_accuracy_control``).

    NNCF quantizes with ``settings`` (ignored scopes included), then measures the mean Y-PSNR
    (CTCNet protocol) of the fp32 and INT8 models on the held-out faces ``select_lr`` (M,3,h,w)
    float32 / ``select_hr`` (M,H,W,3) uint8; while the drop exceeds ``max_drop`` dB it ranks the
    quantized ops by how much each costs and reverts the worst ones to float (NNCF compiles both
    models with an f32 inference precision for this). Returns a new ``ov.Model``.
    """
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from pkdn_edge.metrics import psnr

    from ..verify import to_uint8

    boundary = bool(BOUNDARY_GROUPS & set(settings.ignore))
    names = ov_ignored_nodes(ov_model, weights, boundary) if weights or boundary else []

    def validate(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
        scores = [psnr(to_uint8(compiled(lr)[0])[0], hr) for lr, hr in items]
        return float(np.mean(scores)), scores

    calib = nncf.Dataset([calib_lr[i : i + 1] for i in range(len(calib_lr))])
    val = nncf.Dataset([(select_lr[i : i + 1], select_hr[i]) for i in range(len(select_lr))], lambda item: item[0])
    with quiet_nncf():
        return nncf.quantize_with_accuracy_control(
            ov_model, calib, val, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            preset=_preset(nncf, settings), subset_size=min(settings.subset_size, len(calib_lr)),
            fast_bias_correction=settings.fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None,
            advanced_quantization_parameters=_advanced(nncf, settings),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(ranking_subset_size=len(select_lr)))
