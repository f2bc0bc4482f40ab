"""Keep OpenVINO's and NNCF's usage telemetry off: pkdn-edge never touches the network.

Both libraries report usage through ``openvino_telemetry`` (Google Analytics 4), and ``import
openvino`` alone sends an event (``openvino/tools/ovc/__init__.py``: "general_import"). On Linux
``GA4Backend.send`` forks a sender process per event that looks up ``www.google-analytics.com`` and
is terminated after 3 s. That breaks the offline promise on edge and air-gapped machines, and on a
machine without network the child blocks in DNS resolution; when the parent has a SIGTERM handler
(the webcam loop, a training run, pytest) the fork inherits it, ignores the terminate, and
interpreter exit then waits for it forever.

:func:`disable` turns every ``openvino_telemetry`` backend's ``send`` into a no-op for this
process: nothing is sent and nothing is forked. Call it **before** importing ``openvino`` or
``nncf`` (:func:`import_openvino` does both in order). The runtime (engines) and the export tools
(:mod:`pkdn_edge.export`) both use it; it needs neither torch nor openvino.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["disable", "import_openvino"]

_BACKENDS = (("openvino_telemetry.backend.backend_ga4", "GA4Backend"),
             ("openvino_telemetry.backend.backend_ga", "GABackend"))


def _no_send(self: Any, message: Any) -> None:  # noqa: ARG001 - the replaced method's signature
    return None


def disable() -> bool:
    """Make ``openvino_telemetry`` send nothing in this process (and in processes forked from it).
    Returns False when ``openvino_telemetry`` is not installed (then nothing can send)."""
    done = False
    for module, cls in _BACKENDS:
        try:
            backend = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
        backend.send = _no_send
        done = True
    return done


def import_openvino() -> Any:
    """``import openvino`` with telemetry off first (``ImportError`` when it is not installed)."""
    disable()
    import openvino

    return openvino
