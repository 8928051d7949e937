"""Batched inference over files and folders: ``run_inference(InferConfig) -> InferResult``.

Every input image gets exactly one row (``ok``, ``rejected: out of distribution (...)`` when the
card's OOD gate refuses it, or ``error: <cause>``) with its ``ood_score``, written incrementally and
resumably (``bonedeploy.infer.predictions``); decoding overlaps the model (``bonedeploy.data.decode``). The
engine is loaded and checked against the inputs before any image is read. Torch is imported only
by the torch backend.
"""

from __future__ import annotations

import json

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bonedeploy import POSITIVE_CLASS
from bonedeploy.errors import ArtefactError, ConfigError, DataError
from bonedeploy.data.labels import folder_labels, read_labels_csv
from bonedeploy.data.shard import Shard
from bonedeploy.infer.predictions import PredictionStore, path_key
from bonedeploy.ui.progress import Progress
from bonedeploy.util.defaults import none_means_default
INPUT_CHANNELS = 1  # bonedeploy infer feeds grayscale radiographs: N x 1 x H x W
OOD_SWITCH = ("on", "off")
EXIT_FAILED, EXIT_REFUSED = 3, 4  # see InferResult.exit_code


@none_means_default  # None (the CLI's 'not given') means the default below
@dataclass(frozen=True)
class InferConfig:
    engine: Path
    inputs: tuple[Path, ...]
    out: Path = Path("predictions.csv")
    backend: str | None = None  # None/auto: <engine>.runtime.json when valid, else by suffix
    backend_settings: tuple[tuple[str, str], ...] = ()  # --backend-option KEY=VALUE
    provider: str | None = None  # onnxruntime only
    device: str | None = None  # auto | cpu | cuda
    precision: str | None = None  # torch only: fp32 | fp16
    cuda_graph: bool = False  # torch only
    batch_size: int = 16
    workers: int | None = None  # decoder workers; None = cores - 1; 0 = decode inline
    pool: str = "process"
    resume: bool = False
    threshold: float | None = None  # on calibrated p(Fractured); None = the card's operating point
    labels: Path | None = None
    max_error_rate: float = 0.0
    remote_decode: bool = False  # grpc:// / http:// engines: the server decodes the files
    explain: Path | None = None  # Grad-CAM maps + overlays of the images decided positive
    explain_all: bool = False  # ... of every image
    dicom_sr: Path | None = None  # a DICOM Structured Report per DICOM input, here (infer.dicom_sr)
    shard: Shard | None = None  # --shard K/N: only the images whose path hashes to K (infer.shard)
    ood: str = "on"  # the card's out-of-distribution gate: on (refuse above its threshold) | off

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"--max-error-rate must be in [0, 1], got {self.max_error_rate}")
        if self.explain_all and self.explain is None:
            raise ConfigError("--explain-all needs --explain DIR")
        if self.ood not in OOD_SWITCH:
            raise ConfigError(f"--ood {self.ood!r}; valid: {', '.join(OOD_SWITCH)}")
        if not self.inputs:
            raise DataError("no inputs given: name image files and/or folders")

    def backend_options(self, backend: str) -> dict[str, Any]:
        """Each backend gets only the options it understands; a misplaced one is refused."""
        opts: dict[str, Any] = {"device": self.device}
        if backend == "triton":
            return {**opts, "remote_decode": self.remote_decode}
        if self.remote_decode:
            raise ConfigError(f"--remote-decode applies to grpc:// or http:// engines (a Triton server), "
                              f"not {backend}")
        if backend == "torch":
            opts.update(precision=self.precision, cuda_graph=self.cuda_graph or None,
                        batch_size=self.batch_size)
        elif self.precision or self.cuda_graph:
            raise ConfigError(f"--precision/--cuda-graph apply to .pt checkpoints (torch backend), not "
                              f"{backend}: the precision of an exported file is fixed when it is exported")
        if backend == "onnxruntime":
            # Decoders share the CPU with the runtime: its idle threads must not spin on it.
            opts.update(provider=self.provider, spinning=False if self.workers != 0 else None)
        elif self.provider:
            raise ConfigError(f"--provider applies to the onnxruntime backend only, not {backend}")
        opts.update(dict(self.backend_settings))
        return opts


@dataclass
class InferResult:
    out: Path
    total: int
    processed: int  # images run in this invocation
    resumed: int  # images skipped because the output already had them
    ok: int
    errors: list[tuple[str, str]]  # (path, cause), every failed input
    backend: dict[str, Any]
    seconds: float
    skipped_inputs: int = 0  # non-image files left out of folders
    metrics: dict[str, Any] | None = None
    metrics_path: Path | None = None
    backend_choice: dict[str, Any] | None = None  # how --backend auto chose (backends.select)
    extra_rows: int = 0  # rows kept from earlier runs for paths not among these inputs
    notes: list[str] = field(default_factory=list)
    explained: int = 0  # images given a Grad-CAM map (--explain)
    explain_dir: Path | None = None
    reports: int = 0  # DICOM SRs written (--dicom-sr)
    decision: dict[str, Any] | None = None  # DecisionRule.describe(): the threshold and its source
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, status): refused as OOD
    ood: dict[str, Any] | None = None  # ood_record(): whether the gate was applied, and why not

    @property
    def error_rate(self) -> float:
        return len(self.errors) / self.total if self.total else 0.0

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def exit_code(self, max_error_rate: float = 0.0) -> int:
        """0 every image answered; 3 more images failed than tolerated; else 4 when the OOD gate
        refused some (they need a human, not this model). The run itself succeeded in all three."""
        if self.errors and self.error_rate > max_error_rate:
            return EXIT_FAILED
        return EXIT_REFUSED if self.rejected else 0


# Options for a run of one model call (one image): opening sooner beats running faster. Each
# applies where the backend declares it and neither the user nor the select record set it.
SINGLE_RUN_OPTIONS = {"prepack": False}


def open_engine(config: InferConfig, sha256: str | None = None, single_run: bool = False):
    """Load the backend and refuse an engine that cannot take our inputs (before reading images).
    ``single_run``: one model call will be made (``SINGLE_RUN_OPTIONS``)."""
    from bonedeploy.backends import backend_for_path, is_remote
    from bonedeploy.backends.select import resolve

    if not is_remote(config.engine) and not config.engine.is_file():
        raise ArtefactError(f"engine not found: {config.engine}")
    choice = resolve(config.engine, config.backend, sha256)
    cls = backend_for_path(config.engine, choice.backend)
    options = {**choice.options, **{k: v for k, v in config.backend_options(cls.name).items() if v is not None}}
    if single_run:
        declared = {o.name for o in cls.declared_options()}
        options = {**{k: v for k, v in SINGLE_RUN_OPTIONS.items() if k in declared}, **options}
    backend = cls(config.engine, **options)
    backend.choice = choice
    backend.load()
    try:
        check_engine_fits(backend, config.threshold)
    except BaseException:
        backend.close()
        raise
    return backend


def check_engine_fits(backend, threshold: float | None = None) -> None:
    card, where = backend.card, backend.source
    shape = card.preprocess.input_shape
    if shape[0] != INPUT_CHANNELS:
        raise ArtefactError(f"{where}: wrong engine for radiographs: its model takes {shape[0]}-channel "
                            f"input ({' x '.join(map(str, shape))}), bonedeploy infer feeds "
                            f"{INPUT_CHANNELS}-channel N x 1 x H x W tensors")
    declared = backend.declared_input_shape()
    if declared is not None and any(d is not None and d != s for d, s in zip(declared, shape)):
        raise ArtefactError(f"{where}: the graph takes {tuple(declared)} per image but its model card "
                            f"says {shape}: the artefact is inconsistent; re-export it")
    width = backend.declared_output_width()
    if width is not None and width != len(card.classes):
        raise ArtefactError(f"{where}: {width} outputs per image but the card names "
                            f"{len(card.classes)} classes {list(card.classes)}")
    if threshold is not None and (POSITIVE_CLASS not in card.classes or len(card.classes) != 2):
        raise ConfigError(f"--threshold needs two classes including {POSITIVE_CLASS!r}; "
                          f"this model has {list(card.classes)}")


def batch_logits(backend, decoded) -> np.ndarray | None:
    """Run the model on a decoded batch; a batch decoded on a server already carries its logits."""
    return batch_outputs(backend, decoded)[0]


def batch_outputs(backend, decoded) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Logits and OOD scores (None: none computed) of a decoded batch; a batch decoded on a
    server already carries them."""
    if getattr(decoded, "logits", None) is not None:
        return decoded.logits, getattr(decoded, "ood", None)
    return backend.infer_scored(decoded.x) if len(decoded.ok) else (None, None)


def predict_rows(paths: Sequence[Path], decoded, logits: np.ndarray | None, rule,
                 scores: np.ndarray | None = None, gate=None) -> list[dict[str, Any]]:
    """One row per path of the batch, in order: calibrated probabilities (``rule``, the shared
    post-processing) with the OOD score, the OOD gate's refusal (``gate``: no label) or the
    error's cause."""
    from bonedeploy.artefacts.ood import rejection_statuses

    rows = [{"path": str(p), "probs": None, "status": "", "ood_score": None} for p in paths]
    for i, cause in decoded.errors.items():
        rows[i]["status"] = "error: " + " ".join(str(cause).split())
    if logits is not None and len(decoded.ok):
        probs = rule.probabilities(logits)
        refused = rejection_statuses(gate, scores) if scores is not None else [None] * len(decoded.ok)
        for k, i in enumerate(decoded.ok):
            if scores is not None:
                rows[i]["ood_score"] = float(scores[k])
            if not np.isfinite(logits[k]).all():
                rows[i]["status"] = "error: the model returned non-finite logits"
            elif refused[k]:
                rows[i]["status"] = refused[k]
            else:
                rows[i].update(probs=[float(p) for p in probs[k]], status="ok")
    return rows


def is_rejected(row: dict[str, Any]) -> bool:
    from bonedeploy.artefacts.ood import REJECTED

    return str(row["status"]).startswith(REJECTED)


def is_error(row: dict[str, Any]) -> bool:
    return row["status"] != "ok" and not is_rejected(row)


def _label_rows(rows, classes, labels: dict[str, int], rule) -> None:
    for row in rows:
        lab = labels.get(path_key(row["path"]))
        row["label"] = classes[lab] if lab is not None else None
        row["predicted"] = None
        if row["probs"] is not None:
            row["predicted"] = classes[int(rule.decide(np.array([row["probs"]]))[0])]


def run_inference(config: InferConfig, progress: Progress | None = None) -> InferResult:
    """``progress`` counts images (resumed ones included, so a resumed bar starts part-way) and
    notes the errors so far; it is updated after each batch's rows are written."""
    from bonedeploy.data.folders import list_images
    from bonedeploy.data.decode import BatchPrefetcher

    config.validate()
    partial = PredictionStore(config.out, ("x",)).partial  # also refuses a bad --out suffix early
    paths, skipped = list_images(config.inputs)
    if not paths:
        raise DataError(f"no images in {', '.join(map(str, config.inputs))} ({skipped} non-image entries skipped)")
    paths, shard = select_shard(config, paths)
    if partial.exists() and not config.resume:
        raise ConfigError(f"{partial} exists from an interrupted run: pass --resume to continue it, "
                          "or delete it to start afresh")
    engine_sha = check_engine_record(config)
    workers = config.workers
    if workers is None and len(paths) <= config.batch_size:
        workers = 0  # one batch: starting a decoder pool costs more than decoding it (cold start)
    # Decoder workers start (importing their modules) while the model loads; no image is read yet.
    with BatchPrefetcher(workers, config.pool) as prefetcher:
        backend = open_engine(config, engine_sha, single_run=len(paths) == 1 and config.explain is None)
        try:
            if engine_sha is None:  # a remote engine: the served artefact's sha256, from the server
                engine_sha = check_engine_record(config, backend.describe().get("artefact_sha256"))
        except BaseException:
            backend.close()
            raise
        write_engine_record(config, engine_sha, decision_rule(config, backend).describe(), backend,
                            ood_record(config, backend))
        record_shard(run_record_path(Path(config.out)), shard, str(config.engine), engine_sha)
        explainer = None
        try:
            explainer = open_explainer(config, backend)
            reports = open_reports(config, backend, engine_sha)
            return _run(config, backend, prefetcher, paths, skipped, progress, explainer, reports)
        finally:
            if explainer is not None:
                explainer.explainer.close()
            backend.close()


def select_shard(config: InferConfig, paths: list[Path]):
    """``--shard K/N``: this shard's paths and its record entry (``infer.shard``)."""
    from bonedeploy.infer.shard import select

    return select(config.shard, config.inputs, paths, Path(config.out), run_record_path(Path(config.out)),
                  config.resume)


def record_shard(run_record: Path, entry, engine: str, sha: str | None) -> None:
    from bonedeploy.infer.shard import record

    record(run_record, entry, engine, sha)


def open_explainer(config: InferConfig, backend):
    """``--explain``: a Writer deciding as the engine does (its card's rule), or None."""
    if config.explain is None:
        return None
    from bonedeploy.explain.run import Writer, explainer_for_infer

    explainer = explainer_for_infer(config.engine).load()
    try:
        return Writer(explainer, config.explain, "predicted", config.threshold)
    except BaseException:
        explainer.close()
        raise


def _explain_batch(writer, rows, decoded, rule, explain_all: bool) -> int:
    """Maps for this batch's rows decided positive (all with ``explain_all``), in the same pass."""
    classes = list(rule.classes)
    pick = [(k, i) for k, i in enumerate(decoded.ok) if rows[i]["status"] == "ok"
            and (explain_all or rows[i]["predicted"] == rule.positive_class)]
    if not pick:
        return 0
    ks, idx = [k for k, _ in pick], [i for _, i in pick]
    writer.write([rows[i]["path"] for i in idx], decoded.x[ks],
                 decided=np.array([classes.index(rows[i]["predicted"]) for i in idx]),
                 probs=np.array([rows[i]["probs"] for i in idx]))
    return len(pick)


def run_record_path(out: Path) -> Path:
    return out.with_name(out.name + ".run.json")


def check_engine_record(config: InferConfig, sha: str | None = None) -> str | None:
    """Tie the predictions file to the engine that wrote it: ``--resume`` with another engine
    would mix two models' rows in one file, so it is refused (the file's sha256 decides)."""
    from bonedeploy.backends.modelcache import artefact_sha256

    if sha is None and not Path(config.engine).is_file():
        return None  # open_engine reports the missing file
    record, sha = run_record_path(Path(config.out)), sha or artefact_sha256(config.engine)
    if config.resume and record.is_file():
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            before = {}
        if before.get("engine_sha256") not in (None, sha):
            raise ConfigError(f"{config.out} was written by {before.get('engine')} (sha256 "
                              f"{before['engine_sha256'][:12]}…), not {config.engine} ({sha[:12]}…): "
                              "resume with the same engine, or write to another --out")
    return sha


def write_engine_record(config: InferConfig, sha: str | None, decision: dict[str, Any] | None = None,
                        backend=None, ood: dict[str, Any] | None = None) -> None:
    """The run record: the engine, the threshold used with where it came from, which runtime ran
    it (and how it was chosen), and whether the OOD gate was applied (and why not)."""
    from bonedeploy.util.fs import write_json

    if sha is not None:
        record = {"engine": str(config.engine), "engine_sha256": sha, "decision": decision, "ood": ood}
        if backend is not None:
            record.update(backend=backend.describe(), backend_choice=_choice(backend))
        write_json(run_record_path(Path(config.out)), record)


def ood_gate(config: InferConfig, backend):
    """The OOD gate this run applies (None: none) and, when none, why, in one line."""
    from bonedeploy.artefacts.ood import NO_GATE_NOTE

    gate = backend.card.ood
    if gate is None:
        return None, NO_GATE_NOTE
    if config.ood == "off":
        return None, (f"--ood off: the artefact's out-of-distribution gate ({gate.method} score > "
                      f"{gate.threshold:.4g}) is not applied; every image gets a label")
    if not backend.gives_ood_score:
        return None, (f"the {backend.name} backend returns no ood_score for {backend.label}: its "
                      "out-of-distribution gate cannot be applied and every image gets a label (re-export "
                      "it with this bonedeploy, or run it with another backend)")
    return gate, None


def ood_record(config: InferConfig, backend) -> dict[str, Any]:
    """What the run record says about the OOD gate."""
    gate, why = ood_gate(config, backend)
    card_gate = backend.card.ood
    return {"applied": gate is not None, "switch": config.ood, "why_not": why,
            "method": card_gate.method if card_gate else None,
            "threshold": card_gate.threshold if card_gate else None,
            "target_fpr": card_gate.target_fpr if card_gate else None,
            "n_images": card_gate.n_images if card_gate else None}


def _choice(backend) -> dict[str, Any] | None:
    choice = getattr(backend, "choice", None)
    return choice.to_dict() if choice is not None else None


def decision_rule(config: InferConfig, backend):
    """The card's temperature and operating point; ``--threshold`` overrides the threshold."""
    from bonedeploy.eval.decision import rule_for

    return rule_for(backend.card, config.threshold)


def open_reports(config: InferConfig, backend, engine_sha: str | None):
    """``--dicom-sr``: a ReportWriter deciding as the engine does, or None."""
    if config.dicom_sr is None:
        return None
    from bonedeploy.infer.dicom_sr import ReportWriter, algorithm_of

    return ReportWriter(Path(config.dicom_sr), algorithm_of(backend, engine_sha),
                        decision_rule(config, backend), backend.card)


def _run(config, backend, prefetcher, paths, skipped, progress, explainer=None, reports=None) -> InferResult:
    classes = list(backend.card.classes)
    labels = read_labels_csv(config.labels, classes, paths) if config.labels else folder_labels(paths, classes)
    store = PredictionStore(config.out, classes, with_label=bool(labels))
    previous = store.read_existing() if config.resume else []
    done = {path_key(r["path"]) for r in previous}
    todo = [p for p in paths if path_key(p) not in done]
    batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    n_err = sum(is_error(r) for r in previous)
    n_done = len(paths) - len(todo)
    progress = progress or Progress()
    progress.start("infer", total=len(paths), done=n_done)
    new_rows: list[dict[str, Any]] = []
    store.begin(previous)
    start = time.perf_counter()
    rule = decision_rule(config, backend)
    gate, _ = ood_gate(config, backend)
    n_explained = 0
    decoded_batches = (backend.iterate_files(batches) if config.remote_decode
                       else prefetcher.iterate(batches, backend.card.preprocess))
    try:
        for decoded in decoded_batches:
            logits, scores = batch_outputs(backend, decoded)
            if logits is not None and logits.shape != (len(decoded.ok), len(classes)):
                raise ArtefactError(f"{config.engine}: returned logits of shape {logits.shape} for "
                                    f"{len(decoded.ok)} images and {len(classes)} classes {classes}")
            rows = predict_rows(decoded.paths, decoded, logits, rule, scores, gate)
            _label_rows(rows, classes, labels, rule)
            if explainer is not None:
                n_explained += _explain_batch(explainer, rows, decoded, rule, config.explain_all)
            if reports is not None:
                reports.write(rows)
            store.append(rows)
            new_rows.extend(rows)
            n_done += len(rows)
            n_err += sum(is_error(r) for r in rows)
            progress.update(n_done, note=f"{n_err} failed" if n_err else "")
    finally:
        decoded_batches.close()
        store.close()
    seconds = time.perf_counter() - start
    result = _finish(config, backend, store, paths, previous, new_rows, labels, seconds, skipped, rule)
    result.explained, result.explain_dir = n_explained, config.explain
    if reports is not None:
        result.reports = reports.written
        if reports.not_dicom:
            result.notes.append(f"--dicom-sr: {len(reports.not_dicom)} inputs are not DICOM, so no report "
                                f"(first: {reports.not_dicom[0]})")
    return result


def _finish(config, backend, store, paths, previous, new_rows, labels, seconds, skipped, rule) -> InferResult:
    classes = list(backend.card.classes)
    by_key = {path_key(r["path"]): r for r in previous}
    by_key.update({path_key(r["path"]): r for r in new_rows})
    ordered = [by_key.pop(path_key(p)) for p in paths]
    extra = list(by_key.values())  # earlier rows for other inputs: kept, never dropped silently
    _label_rows(ordered + extra, classes, labels, rule)
    meta = {"engine": str(config.engine), "model": backend.card.model, "classes": classes,
            **rule.describe(), "backend": backend.describe()}
    store.finish(ordered + extra, meta)
    result = InferResult(
        out=config.out, total=len(paths), processed=len(new_rows), resumed=len(previous) - len(extra),
        ok=sum(r["status"] == "ok" for r in ordered),
        errors=[(r["path"], r["status"].removeprefix("error: ")) for r in ordered if is_error(r)],
        rejected=[(r["path"], r["status"]) for r in ordered if is_rejected(r)],
        backend=backend.describe(), seconds=seconds, skipped_inputs=skipped, extra_rows=len(extra),
        decision=rule.describe(), backend_choice=_choice(backend))
    result.ood = ood_record(config, backend)
    if result.ood["why_not"]:
        result.notes.append(result.ood["why_not"])
    if result.backend_choice and result.backend_choice.get("warning"):
        result.notes.append(result.backend_choice["warning"])
    if labels:
        _add_metrics(result, config, ordered, classes, meta, rule.threshold)
    return result


def _add_metrics(result: InferResult, config: InferConfig, rows, classes, meta, threshold) -> None:
    from bonedeploy.util.fs import write_json
    from bonedeploy.eval.metrics import classification_summary, metrics_file

    scored = [r for r in rows if r["status"] == "ok" and r["label"] is not None]
    unlabelled = sum(r["label"] is None for r in rows)
    if not scored:
        result.notes.append("labels known but no labelled image was predicted: no metrics")
        return
    y = [classes.index(r["label"]) for r in scored]
    summary = classification_summary(y, np.array([r["probs"] for r in scored]), classes, threshold)
    summary.update(n_unlabelled=unlabelled, n_errors=len(result.errors), n_rejected_ood=len(result.rejected),
                   label_source=str(config.labels) if config.labels else "class folders", **meta)
    result.metrics = _clean(summary)
    result.metrics_path = metrics_file(config.out)
    write_json(result.metrics_path, result.metrics)


def _clean(obj: Any) -> Any:
    """NaN -> None, so the metrics file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj
