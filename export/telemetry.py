"""Keep OpenVINO's and NNCF's usage telemetry off: pkdn-export and pkdn-compress run offline.

Both libraries report usage through ``openvino_telemetry`` (Google Analytics 4). On Linux its
``GA4Backend.send`` forks a sender process per event and terminates it after 3 s. On a machine
without network that child blocks in DNS resolution; when the parent had a SIGTERM handler (a
training run, pytest) the fork inherits it, ignores the terminate, and interpreter exit then waits
for it forever (seen in this project's test run: the suite passed and the process never exited).
:func:`disable` turns the sender into a no-op for this process; nothing is sent or forked.
"""

from __future__ import annotations


def disable() -> bool:
    """Make ``openvino_telemetry`` send nothing in this process. Returns False when it is absent."""
    try:
        from openvino_telemetry.backend import backend_ga4
    except ImportError:
        return False
    backend_ga4.GA4Backend.send = _no_send
    return True


def _no_send(self, message: dict) -> None:  # noqa: ARG001 - the replaced method's signature
    return None
