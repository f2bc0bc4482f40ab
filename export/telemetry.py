"""Telemetry off for the export tools: the runtime's :mod:`pkdn_edge.telemetry` (one implementation).

Call :func:`disable` before importing ``openvino`` or ``nncf`` (``import openvino`` itself sends an
event); :mod:`.openvino_export` and :mod:`.quantize` do.
"""

from __future__ import annotations

from pkdn_edge.telemetry import disable, import_openvino

__all__ = ["disable", "import_openvino"]
