"""Stages 1–2 of ``pkdn-compress``: choose the slim model, prune it (in steps), fine-tune it.

* **Which layers** (``--target-macs F``): :func:`.prune_search.search_config` over the slim
  configs on a ``--multiple``-channel grid with at most ``F`` of the source's MACs, ranked by the
  measured (Taylor) importance of the channels they drop, the best few checked by the output error
  of the pruned model on held-out faces. ``--prune R`` instead removes ``R`` of every space.
* **Which channels**: in every channel space those of largest importance (``--importance``:
  ``taylor`` on training batches of the source's own degradation, or ``norm``), re-measured on the
  fine-tuned model before each further step (``--prune-steps``).
* **Fine-tuning**: ``pkdn-train student`` (:class:`~pkdn_edge.train.loop.Trainer`) from each
  pruned checkpoint, with the source student's own training settings (data, degradation and its
  camera settings, validation protocol, precision, loss weights: :func:`source_train_settings`),
  distilled (output + features, adapters started as channel selections) from the unpruned
  student (``source.pt``) or a teacher. The last step gets half of ``--finetune-steps`` (all of
  them in one step), the earlier steps share the other half.

Folders: ``step{k}/`` (pruned_init.pt + the run) for the earlier steps, ``pruned_init.pt`` and
``finetune/`` for the last; every finished piece is reused when the command is run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pkdn_edge.errors import PKDNError

from .config import CompressConfig

# keys of the source student's own training config carried into fine-tuning / QAT
INHERITED_TRAIN_KEYS = ("data", "layout", "degradation", "camera", "select_on", "augment", "prior_source", "num_val",
                        "data_limit", "min_sharpness", "hr_size", "w_pixel", "pixel_loss", "w_feat", "w_feat_end",
                        "feat_adapter", "w_out", "batch_size", "lr_min", "betas", "grad_clip", "seed", "device",
                        "precision", "channels_last", "cache_dir")
DAMAGE_FACES = 64  # held-out faces on which the best candidate configs are compared


@dataclass
class Run:
    """One compression: its settings, the source student and where things go."""

    cfg: CompressConfig
    out: Path
    weights: Path
    student: Any  # PKDN
    train_base: dict[str, Any]  # the source's training settings (INHERITED_TRAIN_KEYS), --data applied
    train_source: str  # where train_base came from
    log: Callable[[str], None] = print
    stages: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> int:
        return self.student.cfg.scale

    @property
    def distill_path(self) -> str:
        """The checkpoint fine-tuning and QAT distil from ("" for none)."""
        mode = self.cfg.distill_mode()
        return "" if mode == "none" else str(self.cfg.teacher) if mode == "teacher" else str(self.out / "source.pt")


def source_train_settings(meta: dict[str, Any], weights: Path, yaml: Path | None) -> tuple[dict[str, Any], str]:
    """The source student's training settings and where they came from: its checkpoint metadata,
    else ``--train-config``, else the model card next to it (``<weights>.json``), else none."""
    if meta.get("train"):
        return dict(meta["train"]), f"{weights.name} metadata"
    if yaml is not None:
        from pkdn_edge.train.config import load_config

        return load_config(yaml).to_dict(), str(yaml)
    card = weights.with_suffix(".json")
    if card.is_file():
        conf = (json.loads(card.read_text()).get("training") or {}).get("config")
        if conf:
            return dict(conf), card.name
    return {}, "pkdn-train defaults (no training settings in the checkpoint; pass --train-config)"


def train_config(run: Run, out: Path, steps: int, lr: float, **extra: Any) -> Any:
    """The TrainConfig of a fine-tuning or QAT stage: the source's own training settings, then the
    stage's values, then ``--set`` overrides."""
    from pkdn_edge.train.config import load_config

    cfg = run.cfg
    base = {k: v for k, v in run.train_base.items() if k in INHERITED_TRAIN_KEYS}
    log_every = max(1, min(50, steps // 10))
    values = {**base, "role": "student", "scale": run.scale, "teacher": run.distill_path, "steps": steps, "lr": lr,
              "warmup_steps": min(100, max(1, steps // 10)), "out": str(out), "threads": cfg.threads,
              "log_every": log_every, "val_every": log_every * max(1, steps // 5 // log_every),
              "ckpt_every": max(1, min(100, steps)), **extra}
    set_keys = {item.split("=", 1)[0].strip() for item in cfg.train_overrides}
    return load_config(None, cfg.train_overrides, **{k: v for k, v in values.items() if k not in set_keys})


def finished(run_dir: Path, steps: int) -> dict[str, Any] | None:
    """The summary of a training run folder that already reached ``steps`` (None otherwise)."""
    f = run_dir / "summary.json"
    if not (f.is_file() and (run_dir / "best.pt").is_file()):
        return None
    summary = json.loads(f.read_text())
    return summary if summary.get("done") and summary.get("steps") == steps else None


def split_steps(total: int, n: int) -> list[int]:
    """Fine-tuning steps of each of ``n`` pruning steps: the last gets half (all when ``n == 1``)."""
    if n == 1:
        return [total]
    early = total // 2 // (n - 1)
    return [early] * (n - 1) + [total - early * (n - 1)]


# ------------------------------------------------------------------------------------------------ importance


class Importance:
    """Channel importance of a model (``--importance``), on batches of the source's degradation."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.data_cfg = train_config(run, run.out / "finetune", 1, run.cfg.finetune_lr)
        self._hr: tuple[Any, Any] | None = None

    def faces(self) -> tuple[Any, Any]:
        """(training HR, held-out HR) faces of the source's data, loaded once."""
        if self._hr is None:
            from .importance import _train_split

            self._hr = _train_split(self.data_cfg)
        return self._hr

    def __call__(self, model: Any, cache: Path | None = None) -> dict[str, Any]:
        """Importance of every channel of ``model``; kept in ``cache`` (a .pt file) when given."""
        import torch

        from .prune import channel_importance

        if cache is not None and cache.is_file():
            return torch.load(cache, map_location="cpu", weights_only=True)
        if self.run.cfg.importance == "norm":
            imp = channel_importance(model)
        else:
            from .importance import taylor_importance, training_batches

            n, bs = self.run.cfg.importance_batches, self.data_cfg.batch_size
            self.run.log(f"      importance: Taylor over {n} batches of {bs} ({self.data_cfg.degradation} degradation)")
            imp = taylor_importance(model, training_batches(self.data_cfg, n, bs, hr=self.faces()[0]))
        if cache is not None:
            from pkdn_edge.models.checkpoint import save_atomic

            save_atomic(imp, cache)
        return imp


def choose_target(run: Run, imp: dict[str, Any], measure: Importance) -> tuple[Any, dict[str, Any]]:
    """The slim config: uniform ``--prune``, or the per-layer search for ``--target-macs``."""
    from .prune import _slim_config, apply_pruning, plan_for_config
    from .prune_search import config_macs, search_config

    src, cfg = run.student.cfg, run.cfg
    if cfg.target_macs is None:
        slim = _slim_config(src, cfg.prune)
        return slim, {"mode": "uniform", "ratio": cfg.prune, "macs": config_macs(slim), "source_macs": config_macs(src)}
    from .importance import held_out_lr, output_damage

    lr = held_out_lr(measure.data_cfg, DAMAGE_FACES, hr=measure.faces()[1])

    def damage(c: Any) -> float:
        return output_damage(run.student, apply_pruning(run.student, plan_for_config(run.student, c, imp)), lr)

    try:
        res = search_config(src, imp, cfg.target_macs, cfg.multiple, measure=damage, min_speedup=cfg.target_speedup)
    except ValueError as exc:
        raise PKDNError(str(exc)) from None
    return res.config, {"mode": "search", **res.to_dict()}


# ------------------------------------------------------------------------------------------------ stages


def _prune_step(run: Run, model: Any, target: Any, imp: Callable[[], dict], parent: dict | None,
                path: Path) -> tuple[Any, dict]:
    """Prune ``model`` to ``target`` with the importance ``imp()`` (or reuse ``path`` from an
    earlier run) → (slim, pruning meta)."""
    from pkdn_edge.models.checkpoint import export_weights, load_model

    from .prune import apply_pruning, plan_for_config

    if path.is_file():
        slim, meta = load_model(path)
        return slim, meta["pruning"]
    plan = plan_for_config(model, target, imp(), ratio=run.cfg.prune if run.cfg.target_macs is None else None)
    slim = apply_pruning(model, plan)
    meta = {**plan.to_meta(parent), "source": run.weights.name, "importance": run.cfg.importance}
    export_weights(slim, path, meta={"pruning": meta})
    return slim, meta


def _finetune(run: Run, init: Path, folder: Path, steps: int) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the checkpoint ``init`` in ``folder`` (resumes) → (best model, stage summary)."""
    from pkdn_edge.models.checkpoint import load_model
    from pkdn_edge.train.loop import Trainer

    tcfg = train_config(run, folder, steps, run.cfg.finetune_lr, init=str(init),
                        feat_decay_steps=max(1, int(0.75 * steps)))
    src = tcfg.teacher or "L1 only"
    run.log(f"      fine-tuning {steps} steps on {tcfg.data} ({tcfg.degradation} degradation, distilled from {src}; "
            f"resumes from {folder / 'last.pt'})")
    summary = finished(folder, steps) or Trainer(tcfg).run(progress=run.cfg.progress)
    if not summary["done"]:
        raise PKDNError(f"fine-tuning stopped at step {summary['step']} of {summary['steps']}; run again to resume")
    tuned, _ = load_model(folder / "best.pt")
    keys = ("data", "degradation", "teacher", "steps", "lr", "batch_size", "w_feat", "w_feat_end", "w_out", "precision")
    return tuned.eval(), {**summary, "config": {k: tcfg.to_dict()[k] for k in keys}}


def _schedule(src: Any, target: Any, n: int) -> list[Any]:
    from .prune_search import schedule

    try:
        return schedule(src, target, n)
    except ValueError:  # widths too close to step: prune at once
        return [target]


@dataclass
class PruneResult:
    """``init``: the last pruned model before its fine-tuning; ``tuned``: after; ``meta``: its pruning metadata."""

    init: Any
    tuned: Any
    meta: dict[str, Any]
    finetune: dict[str, Any] | None


def prune_and_finetune(run: Run) -> PruneResult:
    """Stages 1–2 (see the module docstring); writes ``pruned_init.pt`` and ``finetune/``."""
    cfg, measure = run.cfg, Importance(run)
    imp = measure(run.student, cache=cfg.importance_cache or run.out / "importance.pt")
    target, search = choose_target(run, imp, measure)
    run.stages["search"] = search
    configs = _schedule(run.student.cfg, target, cfg.prune_steps)
    budgets = split_steps(cfg.finetune_steps, len(configs))
    model, parent, summaries, slim, meta = run.student, None, [], run.student, {}
    for k, (c, steps) in enumerate(zip(configs, budgets), 1):
        last = k == len(configs)
        folder = run.out / ("finetune" if last else f"step{k}")
        init = run.out / "pruned_init.pt" if last else folder / "pruned_init.pt"
        run.log(f"[1/6] prune step {k}/{len(configs)}: widths {list(model.cfg.widths)} -> {list(c.widths)}, "
                f"refine {model.cfg.refine_width} -> {c.refine_width}, "
                f"mid_ratio {model.cfg.mid_ratio} -> {c.mid_ratio}")
        src_imp = imp if k == 1 else None

        def importance(src_imp: Any = src_imp, model: Any = model) -> Any:  # bound now: called within this step
            return src_imp if src_imp is not None else measure(model)

        slim, meta = _prune_step(run, model, c, importance, parent, init)
        if steps > 0:
            run.log(f"[2/6] fine-tuning after step {k}")
            model, summary = _finetune(run, init, folder, steps)
            summaries.append(summary)
        else:
            model = slim
        parent = meta
    ft = None
    if summaries:
        ft = {**summaries[-1], "steps_per_prune_step": budgets, "runs": summaries}
    return PruneResult(slim.eval(), model.eval(), meta, ft)
