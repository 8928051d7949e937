"""``train(config)``: validate, decode once, fit, keep the best-validation weights, report.

Order matters: every check that can fail (options, device, data, resume compatibility) runs
before the output folder is touched, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bonedeploy.artefacts.card import ModelCard
from bonedeploy.artefacts.operating_point import OperatingPoint
from bonedeploy.artefacts.checkpoint import load_checkpoint, save_checkpoint
from bonedeploy.errors import BonedeployError, ConfigError
from bonedeploy.util.fs import write_json
from bonedeploy.data.preprocess import PreprocessSpec
from bonedeploy.training import state as st
from bonedeploy.training.config import TrainConfig
from bonedeploy.training import ddp as dd
from bonedeploy.training.dataset import TrainingData, build_split, check_sizes, load_training_data
from bonedeploy.training.loop import batches_per_epoch, evaluate, recalibrate_bn, train_epoch
from bonedeploy.training.progress import Reporter
from bonedeploy.training.runtime import Runtime, configured, resolve_runtime

# Files a run leaves in its folder (``--overwrite`` removes exactly these first).
RUN_FILES = (st.BEST, st.LAST, "metrics.json", "curves.png", "report.md", "report.json",
             "calibration.json", "calibration.md", "reliability.png")


class TrainingInterrupted(BonedeployError):
    """Ctrl-C: say where the run stands and how to continue it (exit status 130, as for SIGINT)."""

    exit_code = 130


@dataclass
class TrainResult:
    out: Path
    config: TrainConfig
    best: dict[str, Any]  # the saved epoch's history record
    report: dict[str, Any]  # report.json
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_path(self) -> Path:
        return self.out / st.BEST


def is_better(rec: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (rec["val_acc"], -rec["val_loss"]) > (best["val_acc"], -best["val_loss"])


def model_preprocess(model: str) -> PreprocessSpec:
    from bonedeploy.models import get_model_entry

    return get_model_entry(model).preprocess()


def train(cfg: TrainConfig, reporter: Reporter | None = None,
          spec: PreprocessSpec | None = None, data: TrainingData | None = None,
          target_sensitivity: float | None = None, force_calibration: bool = False) -> TrainResult:
    """Train one run. ``spec``: default the model's registry entry's (resumes keep their own).
    ``data``: already decoded images for this config's data/split settings (a sweep decodes once
    for all its runs); default: decode here. ``target_sensitivity``: choose best.pt's operating
    point for it (default: argmax); refused before training when the validation split has too
    few positives. The temperature is fitted when the split is large enough, else T = 1 is kept
    and the report says why. ``force_calibration`` (``--force``): fit both on any split, recorded
    in the card. Started by torchrun, this process is one DDP worker of the job (``training.ddp``)."""
    from bonedeploy.eval.operating_point import validate_target

    if dd.launched_by_torchrun() and dd.current() is None:
        with dd.session(cfg.device):  # a torchrun worker: join the job for this run (training.ddp)
            return train(cfg, reporter, spec, data, target_sensitivity, force_calibration)
    ddp = dd.current()
    validate_target(target_sensitivity)
    reporter = reporter if ddp is None or ddp.is_main else None  # rank 0 reports for the job
    reporter = reporter or Reporter()
    cfg, spec, rt, resume, last_path = dd.decide_on_main(ddp, lambda: _plan(dd.restart_resume(cfg, ddp), spec))
    if ddp is not None:
        dd.per_rank_batch(cfg.batch_size, ddp.world_size)  # refused before anything is written
        rt = dd.place(rt, ddp)
        cfg = cfg.replace(workers=dd.decode_workers(cfg.workers, ddp))
    out = Path(cfg.out)
    if data is None:
        manifest = dd.decide_on_main(ddp, lambda: build_split(cfg)) if ddp is not None else None
        data = load_training_data(cfg, spec, reporter, manifest)
    else:
        check_sizes(len(data.y_train), len(data.y_val), cfg.batch_size, cfg.data)
    if ddp is not None:
        dd.check_same_split(ddp, dd.split_digest(data.train_paths, data.y_train, data.val_paths, data.y_val))
    if resume is not None:
        st.check_same_data(resume["split"], data.split, last_path)
    decision = DecisionPlan(target_sensitivity, force_calibration, _val_where(cfg, data))
    decision.refuse_early(data)
    cfg = cfg.replace(device=rt.device.type, precision=rt.precision, channels_last=rt.channels_last)
    with configured(rt):
        return _fit(cfg, rt, data, spec, out, resume, reporter, decision, ddp)


def _plan(cfg: TrainConfig, spec: PreprocessSpec | None):
    """The resolved config, preprocessing and runtime, and last.pt when resuming; refuses a run
    that would overwrite another (under DDP: rank 0's decision, broadcast)."""
    resume, last_path = None, None
    if cfg.resume:
        last_path = st.find_last(cfg.resume)
        resume = st.load_last(last_path)
        cfg = st.merge_resume(cfg, resume["config"], last_path)
        spec = PreprocessSpec.from_dict(resume["card"]["preprocess"])
    cfg = cfg.resolve()
    spec = spec or model_preprocess(cfg.model)
    if not cfg.data:
        raise ConfigError("no DATA folder given (an image folder with one sub-folder per class)")
    rt = resolve_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.deterministic)
    out = Path(cfg.out)
    if resume is None:
        _check_out_free(out, cfg.overwrite)
    elif resume["epoch"] >= cfg.epochs and (out / "report.json").is_file():
        # (without a report, e.g. killed while writing it, the resume just writes the report)
        raise ConfigError(f"{out} already trained {resume['epoch']} of {cfg.epochs} epochs; "
                          f"pass --epochs N with N > {resume['epoch']} to train further")
    return cfg, spec, rt, resume, last_path


@dataclass(frozen=True)
class DecisionPlan:
    """What ``train`` fits on best.pt's validation logits once training is done."""

    target: float | None = None
    force: bool = False
    where: str = "the validation split"
    way_out: str = "Give the validation split more images (--val DIR, or a larger --val-fraction)"

    def refuse_early(self, data: TrainingData) -> None:
        """A target sensitivity on too few validation positives fails before any epoch runs."""
        from bonedeploy.eval.calibration import decision_verdicts
        from bonedeploy.eval.set_size import OPERATING_POINT, refuse_small

        verdicts = decision_verdicts(data.y_val.numpy(), data.classes, self.target, self.where)
        refuse_small([v for v in verdicts if v.fits == OPERATING_POINT], self.force, self.way_out)


def _val_where(cfg: TrainConfig, data: TrainingData) -> str:
    if cfg.val:
        return f"the validation folder {cfg.val}"
    return f"the validation split ({len(data.y_val)} images of {cfg.data})"


def _fit(cfg: TrainConfig, rt: Runtime, data: TrainingData, spec: PreprocessSpec, out: Path,
         resume: dict[str, Any] | None, reporter: Reporter,
         decision: DecisionPlan | None = None, ddp: dd.Ddp | None = None) -> TrainResult:
    from bonedeploy.models import create_model
    from bonedeploy.training import ddp_loop, syncbn

    main = ddp is None or ddp.is_main  # only rank 0 writes the run folder
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    kwargs = dict(cfg.model_kwargs)
    if len(data.classes) != 2:
        kwargs["num_classes"] = len(data.classes)
    model = create_model(cfg.model, **kwargs).to(rt.device)
    if ddp is not None:
        model = syncbn.convert(model, rt.is_cuda)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=True if rt.is_cuda else None)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        st.restore_rng(resume["rng"], gen)
        history = list(resume["history"])
        best = resume.get("best")
        reporter.message(f"resuming {out} after epoch {resume['epoch']}")
    net = model if ddp is None else ddp_loop.wrap(model, rt)
    measure = evaluate if ddp is None else functools.partial(ddp_loop.evaluate_shared, ddp=ddp)
    runtime = rt.describe() if ddp is None else {**rt.describe(), "distributed": ddp.describe()}

    card = ModelCard(model=cfg.model, classes=data.classes, preprocess=spec, precision="fp32",
                     extra={} if ddp is None else {"distributed": _card_record(ddp)})
    base = st.base_checkpoint(cfg.replace(resume=None), card, data.split, data.bad, runtime)
    base["model_kwargs"] = kwargs
    x_tr, y_tr, x_va, y_va = data.on(rt.device)
    eval_bs = cfg.eval_batch_size or max(cfg.batch_size, 128 if rt.is_cuda else cfg.batch_size)
    first = len(history) + 1
    if main:
        _prepare_out(out, cfg.overwrite and resume is None)
    reporter.start(cfg.model, first, cfg.epochs, batches_per_epoch(len(y_tr), cfg.batch_size))
    best_state, best_dirty, last_save = None, False, time.monotonic()
    last_pt = resume["epoch"] if resume is not None else None  # epoch held by last.pt
    try:
        for epoch in range(first, cfg.epochs + 1):
            t0 = time.perf_counter()
            if ddp is None:
                fit = train_epoch(model, optimizer, x_tr, y_tr, batch_size=cfg.batch_size,
                                  hflip_p=spec.hflip_p, gen=gen, rt=rt, on_batch=reporter.batch)
            else:
                fit = ddp_loop.train_epoch(net, optimizer, x_tr, y_tr, ddp=ddp, epoch=epoch, seed=cfg.seed,
                                           batch_size=dd.per_rank_batch(cfg.batch_size, ddp.world_size),
                                           hflip_p=spec.hflip_p, rt=rt, on_batch=reporter.batch)
            if cfg.precise_bn:
                recalibrate_bn(model, x_tr, batch_size=eval_bs, rt=rt)
            tr = measure(model, x_tr, y_tr, batch_size=eval_bs, rt=rt) if cfg.eval_train else fit
            va = measure(model, x_va, y_va, batch_size=eval_bs, rt=rt)
            rec = {"epoch": epoch, "train_loss": tr.loss, "train_acc": tr.accuracy,
                   "train_mode": "eval" if cfg.eval_train else "fit",
                   "val_loss": va.loss, "val_acc": va.accuracy, "fit_loss": fit.loss,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if is_better(rec, best):  # under DDP: on the all-reduced validation figures
                best = dict(rec)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if main else None
                best_dirty = True
            reporter.epoch(rec, cfg.epochs, best)
            if not main:
                continue
            # Under torchrun, every epoch: a relaunched job loses at most the epoch in flight.
            if epoch == cfg.epochs or time.monotonic() - last_save >= cfg.save_every or ddp is not None:
                # best.pt first: a last.pt never names a best epoch that best.pt lacks.
                if best_dirty:
                    _save_best(out, base, best_state, best, history)
                    best_dirty = False
                _save_last(out, base, model, optimizer, gen, epoch, rec, best, history)
                last_save, last_pt = time.monotonic(), epoch
            write_json(out / "metrics.json", _metrics(cfg, runtime, history, best, last_pt))
    except KeyboardInterrupt as e:
        saved = f"last.pt holds epoch {last_pt}" if last_pt else "no last.pt yet"
        raise TrainingInterrupted(f"interrupted during epoch {len(history) + 1}; {saved}; "
                                  f"continue with: bonedeploy train --resume {out}") from e
    finally:
        reporter.close()
    if not main:
        return TrainResult(out, cfg, best or {}, {}, history)
    report = _report(out, data, rt, eval_bs, decision or DecisionPlan(), reporter, cfg.ood_fpr)
    return TrainResult(out, cfg, best or {}, report, history)


def _report(out: Path, data: TrainingData, rt: Runtime, eval_bs: int, decision: DecisionPlan,
            reporter: Reporter, ood_fpr: float | None = None) -> dict[str, Any]:
    """Evaluate best.pt as saved (fp32, as export will see it), fit its temperature and operating
    point on the validation logits and its out-of-distribution gate on the same pass's features
    (written into best.pt), then write the run's report."""
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint, model_from_checkpoint
    from bonedeploy.eval.ood import feature_layer_of, fit_for_model, measure
    from bonedeploy.training.report import write_report

    ckpt = load_checkpoint(out / st.BEST)
    model = model_from_checkpoint(ckpt, str(out / st.BEST)).to(rt.device)
    x_tr, y_tr, x_va, y_va = data.on(rt.device)
    layer, why = feature_layer_of(model, card_from_checkpoint(ckpt))
    # one fp32 eval-mode pass per split gives the logits and the gate's features
    seen = {part: measure(model, layer, x, rt.device, eval_bs) for part, x in (("train", x_tr), ("val", x_va))}
    logits = {part: m.logits for part, m in seen.items()}
    labels = {"train": y_tr.cpu().numpy(), "val": y_va.cpu().numpy()}
    ood = fit_for_model(model, card_from_checkpoint(ckpt), seen["train"], labels["train"], seen["val"], ood_fpr,
                        layer=layer, no_features=why, device=rt.device, batch=eval_bs,
                        fitted_on=f"the training split ({len(labels['train'])} images)", threshold_on=decision.where)
    decided = _calibrate_best(out, ckpt, logits["val"], labels["val"], decision, ood)
    for line in decided["notes"]:
        reporter.warn(line)  # shown even with --quiet
    op = decided["operating_point"]
    reporter.message(f"temperature {decided['temperature']:.3f}"
                     + ("" if decided["temperature_fitted"] else " (not fitted)")
                     + f"; operating point: {OperatingPoint.from_dict(op).describe() if op else 'argmax'}")
    reporter.message(f"out-of-distribution gate: {ood.gate.describe()}")
    return write_report(out, ckpt, logits, labels, paths={"val": data.val_paths}, decision=decided)


def _calibrate_best(out: Path, ckpt: dict, val_logits, val_labels, plan: DecisionPlan, ood=None) -> dict[str, Any]:
    from bonedeploy.artefacts.checkpoint import card_from_checkpoint
    from bonedeploy.eval.calibration import apply_fit, fit_decision, write_calibration_report
    from bonedeploy.models.ood import CKPT_KEY

    card = card_from_checkpoint(ckpt, str(out / st.BEST))
    fit = fit_decision(val_logits, val_labels, card.classes, plan.target, plan.where,
                       force=plan.force, way_out=plan.way_out)
    card = apply_fit(card, fit)
    extra = {}
    if ood is not None:
        card, extra = card.with_(ood=ood.gate), {CKPT_KEY: ood.checkpoint_entry()}
    save_checkpoint(out / st.BEST, {**ckpt, **extra, "card": card.to_dict()})
    paths = write_calibration_report(out, fit, card.classes, card.model)
    op = fit.operating_point
    return {"temperature": fit.temperature, "temperature_fitted": fit.temperature_fitted,
            "operating_point": op.to_dict() if op else None, "calibration": fit.calibration,
            "fitted_below_minimum": list(fit.forced), "notes": fit.notes() + (ood.notes if ood else []),
            "ood": ood.gate.to_dict() if ood else None,
            "files": {k: p.name for k, p in paths.items()}}


def _save_best(out: Path, base: dict, state: dict, best: dict, history: list) -> None:
    save_checkpoint(out / st.BEST, {
        **base, "state_dict": {k: v.to("cpu").contiguous() for k, v in state.items()},
        "epoch": best["epoch"], "metrics": dict(best), "history": list(history)})


def _save_last(out: Path, base: dict, model, optimizer, gen, epoch: int, rec: dict,
               best: dict | None, history: list) -> None:
    save_checkpoint(out / st.LAST, {
        **base, "state_dict": st.cpu_state_dict(model), "epoch": epoch, "metrics": dict(rec),
        "history": list(history), "best": dict(best) if best else None,
        "optimizer": optimizer.state_dict(), "rng": st.rng_state(gen)})


def _metrics(cfg: TrainConfig, runtime: dict[str, Any], history: list, best: dict | None,
             last_pt: int | None) -> dict[str, Any]:
    return {"model": cfg.model, "epochs": cfg.epochs, "completed_epochs": len(history),
            "last_pt_epoch": last_pt,
            "best_epoch": best["epoch"] if best else None, "best": best,
            "config": cfg.to_dict(), "runtime": runtime, "history": history}


def _card_record(ddp: dd.Ddp) -> dict[str, Any]:
    """How the model was trained, in every artefact exported from it (no job id: not a fact of
    the model)."""
    return {k: v for k, v in ddp.describe().items() if k != "run_id"}


def _check_out_free(out: Path, overwrite: bool) -> None:
    taken = [n for n in (st.BEST, st.LAST) if (out / n).exists()]
    if taken and not overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(taken)}); pass --resume {out} "
                          f"to continue it, --overwrite to start over, or another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")


def _prepare_out(out: Path, clear: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if clear:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
