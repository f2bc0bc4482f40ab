"""``pkdn-compress``: prune a student to a MAC budget, distil it, INT8 it, and measure it.

* :mod:`.cli`: the command line (``pkdn-compress`` = ``python -m pkdn_edge.export.compress``);
* :mod:`.config`: :class:`~.config.CompressConfig`, one field per flag, and its checks;
* :mod:`.run`: :func:`~.run.run_compress`, every stage in order (the output folder is listed there);
* :mod:`.finetune`: stages 1–2, choose the slim model, prune it in steps, fine-tune with distillation;
* :mod:`.prune`: structured pruning itself (channel spaces, plans, a slimmer ``PKDNConfig``);
* :mod:`.prune_search`: which layers to thin under a MAC budget (per-layer cost profile, search);
* :mod:`.importance`: channel importance on data (Taylor) and the damage of a prune;
* :mod:`.report`: stages 4–6, quality under both protocols, latency, ``report.md``;
* :mod:`.sweep`: ``--sweep``, the recipe at several MAC fractions, one table.

INT8 comes from :mod:`..int8` (PTQ through ``pkdn-export``, QAT in :mod:`..int8.qat`).
"""
