"""The export tools (``pkdn_edge.export``, the ``export/`` folder): PKDN students → edge artifacts.

Top level, one export start to finish:

* :mod:`.cli` (``pkdn-export``), :mod:`.settings` and :mod:`.formats`: torch-free, so
  ``pkdn-export --help`` works on a runtime-only install;
* :mod:`.exporter`: :func:`~.exporter.run_export`, loading, work folder, manifest, verification, install;
* :mod:`.context`: what a target receives and returns; :mod:`.data`: calibration and verification
  faces; :mod:`.verify`: parity with PyTorch;
* :mod:`.onnx_io` (PyTorch → ONNX helpers) and :mod:`.openvino_io` (OpenVINO import, ONNX → IR).

Rooms:

* :mod:`.targets`: one module per ``--target`` (torch, onnx, openvino, tensorrt) and the TensorRT
  engine builders;
* :mod:`.int8`: NNCF PTQ/QAT, the Q/DQ ONNX builder and its graph utilities, the TensorRT Q/DQ lint,
  the one ``--ignore auto`` search; :mod:`.int8.strategy` is what a target asks;
* :mod:`.compress`: ``pkdn-compress`` (pruning, fine-tuning, INT8, report);
* :mod:`.bench`: ``pkdn-bench`` (a development subpackage: it imports the rest, nothing imports it).

Nothing is imported here.
"""
