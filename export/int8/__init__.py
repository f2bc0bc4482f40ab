"""INT8: NNCF quantization and the Q/DQ ONNX, for every target that exports ``--precision int8``.

* :mod:`.strategy`: the entry. A target asks once (:func:`.strategy.qdq_onnx` for onnx/tensorrt,
  :func:`.strategy.openvino_ir` for openvino); the strategy (a given QAT model, accuracy control,
  the ``--ignore auto`` search, or plain PTQ) is chosen there;
* :mod:`.auto_ignore`: ``--ignore auto``, the one search over ignored scopes and presets;
* :mod:`.ptq`: the NNCF calls (PyTorch and OpenVINO PTQ, accuracy control, ignored scopes);
* :mod:`.qat`: quantization-aware training (``pkdn-compress --int8 qat``);
* :mod:`.qdq_onnx`: the Q/DQ ONNX **builder** (fake-quant PyTorch model → TensorRT-shaped ONNX);
* :mod:`.qdq_graph`: ONNX graph utilities it uses (the TensorRT rewrite, toposort);
* :mod:`.tensorrt_lint`: TensorRT's explicit-quantization rules, checked on every Q/DQ ONNX;
* :mod:`._nncf_ext`: NNCF's fake-quantizers without the JIT-built C++ extension.

Nothing is imported here, so :mod:`..onnx_io` can import :mod:`.qdq_graph` (numpy + onnx) without
the NNCF side.
"""
