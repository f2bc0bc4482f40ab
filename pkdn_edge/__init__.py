"""pkdn-edge: face super-resolution with PKDN, built for edge devices.

Importing this package loads nothing heavy: the runtime (metrics, face pipeline, engines, webcam)
works without torch; models (``pkdn_edge.models``) and training (``pkdn_edge.train``) need it.
"""

__version__ = "0.1.0"
