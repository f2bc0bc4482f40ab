"""The export targets, one module per ``--target`` (a row of :data:`..formats.FORMATS` names it).

* :mod:`.torch`: the checkpoint in an artifact folder (``model.pt``);
* :mod:`.onnx`: ``model.onnx`` for ONNX Runtime (fp32, fp16, INT8 Q/DQ);
* :mod:`.openvino`: OpenVINO IR (``model.xml`` + ``model.bin``);
* :mod:`.tensorrt`: a TensorRT-ready ONNX, ``BUILD.md`` and the build commands per TensorRT
  generation; :mod:`.tensorrt_builders` builds the engine here when a builder is installed.

Each has ``export(ctx: ExportContext) -> TargetResult`` (:mod:`..context`). For ``int8`` a target
asks :mod:`..int8.strategy` once for the quantized model; the strategy is chosen there.
"""
