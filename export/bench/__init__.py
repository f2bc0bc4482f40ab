"""Latency and quality benchmarks of PKDN students and their peers (``pkdn-bench``).

``pkdn-bench`` (:mod:`.cli`) builds the artifacts it needs with
:mod:`pkdn_edge.export`, measures every configuration (our student per backend × precision × scale,
OpenCV dnn_superres peers, bicubic) for latency, cold start, memory and PSNR/SSIM, and writes a
report folder (``report.md``, ``report.json``, PNG plots). See ``docs/benchmarks.md``.

Modules: :mod:`.system` (machine, CPU flags, versions), :mod:`.timing` (percentiles, peak RSS),
:mod:`.peers` (OpenCV dnn_superres models through ``cv2.dnn``, PIL bicubic), :mod:`.quality`
(evaluation faces, protocol LR, metrics), :mod:`.configs` (what is measured; builds artifacts),
:mod:`.worker` (one configuration, optionally in its own process), :mod:`.stages` (pipeline
stages), :mod:`.report` (targets, Markdown, JSON, plots).

Nothing here imports torch at import time; torch is needed only to build artifacts and for the
PyTorch configurations.

A **development subpackage** of the export tools (it lived in the runtime package as
``pkdn_edge.bench`` until issue 32): it ships in the wheel but imports the rest of
:mod:`pkdn_edge.export` and :mod:`pkdn_edge.train` to build what it times, so it needs
``pip install 'pkdn-edge[bench]'`` (the export tools; ``[dev]`` includes it). Nothing else in
``export/`` imports it, and a device (runtime-only) install never does; see ``docs/architecture.md``.
"""
