"""`ferlib <command>` (or `python -m ferlib <command>`): predict, extract, train, finetune, evaluate, export,
bench, models."""
from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
from pathlib import Path

from ferlib import __version__
from ferlib.data.tensors import DATASET_KINDS
from ferlib.errors import FerError, InputError
from ferlib.locations import runs_dir
from ferlib.training.personal import DEFAULT_METHOD
from ferlib.training.personal import METHODS as ADAPT_METHODS
from ferlib.training.train import OPTIMIZERS, SCHEDULES
from ferlib.faces.crops import FRONTAL_MIN_YAW
from ferlib.inference.pipeline import BACKENDS, DEFAULT_SMOOTHING, SMOOTHING, shipped_keypoint_model, turned_expert_of


def _write_csv(df, out: Path) -> None:
    from ferlib.fsutil import atomic_write_bytes

    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(out, buf.getvalue().encode("utf-8"))


def cmd_predict(args) -> int:
    import time

    if args.engine == "ray":  # an actor pool, resumable shards (ferlib.scale)
        from ferlib.scale import predict_command

        return predict_command(args)
    if args.address or args.workers is not None or args.shard_dir:
        raise InputError("--address, --workers and --shard-dir are for --engine ray")
    t_start = time.perf_counter()
    from ferlib.inference.pipeline import Pipeline
    from ferlib.inference.predict import predict
    from ferlib.inference.runtime import freeze_heap, set_torch_threads

    set_torch_threads(args.threads)  # torch's own ops (inputs); the model runner gets args.threads too
    keypoint_model = {"auto": shipped_keypoint_model(), "none": None}.get(args.keypoint_model, args.keypoint_model)
    with Pipeline(args.model, smoothing=args.smoothing, keypoint_model=keypoint_model,
                  backend=args.backend, threads=args.threads, frontalize=False if args.no_frontalize else None) as pipe:
        fb = f"; faces without landmarks: {pipe.fallback.name}" if pipe.fallback else ""
        print(f"model: {pipe.name} ({pipe.model_path or 'in memory'}, {pipe.backend}, {args.threads} thread(s){fb}), "
              f"classes: {', '.join(pipe.classes)}; video smoothing: {pipe.smoother.kind}", file=sys.stderr)
        freeze_heap()  # no full garbage collection walks the loaded models while frames run
        t_ready = time.perf_counter()
        report = predict(args.inputs, pipe, max_frames=args.max_frames)
        t_done = time.perf_counter()
    _write_csv(report.table, Path(args.out))
    df = report.table
    n_det = int(df["detected"].sum())
    n_frames = len(df.drop_duplicates(["source", "frame"]))
    print(f"wrote {len(df)} rows ({n_det} faces, {int((df['detected'] == 0).sum())} frames without a face) "
          f"to {args.out}", file=sys.stderr)
    print(f"timing: model and graphs ready in {t_ready - t_start:.2f} s; {n_frames} frames/images in "
          f"{t_done - t_ready:.2f} s ({1e3 * (t_done - t_ready) / max(n_frames, 1):.1f} ms each)", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if report.errors else 0


# --------------------------------------------------------------------------- data helpers
def _datasets(args, attr: str = "data") -> list:
    """Import every --data DATASET with its --kind (one for all, or one per dataset) and splits."""
    from ferlib.data.tensors import import_dataset

    paths = getattr(args, attr) or []
    paths = [paths] if isinstance(paths, str) else paths
    kinds = [args.kind] if isinstance(args.kind, str) else (args.kind or ["auto"])
    if len(kinds) not in (1, len(paths)):
        raise InputError(f"--kind given {len(kinds)} times for {len(paths)} --data datasets: give it once "
                         "(for all) or once per --data")
    kinds = kinds * len(paths) if len(kinds) == 1 else kinds
    return [import_dataset(p, k, val_frac=args.val_frac, seed=args.seed) for p, k in zip(paths, kinds)]


def _classes(arg: str | None, datasets) -> list[str]:
    """--classes (comma list, 'fer7' or 'all'), else the canonical classes present in the data."""
    from ferlib.classes import CLASSES, FER7, UnknownClassError, canonical

    if arg:
        if arg.strip().lower() == "fer7":
            return list(FER7)
        if arg.strip().lower() == "all":
            return list(CLASSES)
        try:
            names = [canonical(c) for c in arg.split(",") if c.strip()]
        except UnknownClassError as e:
            raise InputError(f"--classes: {e}") from None
        if len(names) < 2 or len(set(names)) != len(names):
            raise InputError(f"--classes needs at least two distinct classes, got {names}")
        return names
    present = set().union(*(set(df.table["label"]) for df in datasets))
    return [c for c in CLASSES if c in present]


def _extractor_kwargs(args) -> dict | None:
    """LandmarkExtractor options from --keypoint-model (the keypoint-aligned retry of misses)."""
    kp = getattr(args, "keypoint_model", None)
    return None if kp is None else {"keypoint_model": str(kp)}


def _prepare_options(args):
    from ferlib.training.workflow import PrepareOptions

    return PrepareOptions(drop_unknown=args.drop_unknown, workers=args.workers, cache_dir=args.cache_dir,
                          extractor_kwargs=_extractor_kwargs(args))


def _progress():
    from ferlib.training.workflow import Progress

    return Progress(log=lambda text: print(text, file=sys.stderr), on_event=_log_epoch, bars=True)


def _training_data(args):
    from ferlib.training.workflow import TrainingData

    return TrainingData(_datasets(args), _datasets(args, "extra_train"))


def _train_config(args):
    from ferlib.training.train import TrainConfig

    return TrainConfig(epochs=30 if args.epochs is None else args.epochs, patience=args.patience,
                       batch_size=args.batch_size, lr=1e-4 if args.lr is None else args.lr,
                       optimizer=args.optimizer, schedule=args.schedule, weight_decay=args.weight_decay,
                       label_smoothing=args.label_smoothing, weighted_sampler=args.weighted_sampler,
                       class_weights=not args.no_class_weights, class_weight_power=args.class_weight_power,
                       soft_targets=not args.hard_labels,
                       augment=not args.no_augment, tta_flip=args.tta, seed=args.seed, num_threads=args.threads,
                       monitor=args.monitor, freeze_backbone=getattr(args, "freeze_backbone", False),
                       device=args.device, **_distill_pose_options(args)).resolved()  # "auto" -> the device used; fails before the data work


def _distill_pose_options(args) -> dict:
    """TrainConfig fields of train's --teacher/--distill-weight/--distill-temperature/--pose-augment."""
    if getattr(args, "teacher", None) is None:
        if getattr(args, "distill_weight", None):
            raise InputError("--distill-weight needs --teacher CHECKPOINT")
        weight = 0.0
    else:
        weight = 0.5 if args.distill_weight is None else args.distill_weight
        if weight <= 0:
            raise InputError("--teacher with --distill-weight 0 would ignore the teacher")
    return {"distill_weight": weight, "distill_temperature": getattr(args, "distill_temperature", 2.0),
            "pose_augment": getattr(args, "pose_augment", 0.0)}


def _log_epoch(ev: dict) -> None:
    if ev["event"] == "resumed":
        print(f"resumed after epoch {ev['epoch']} ({ev['elapsed_s']:.0f} s of training so far)", file=sys.stderr)
    if ev["event"] == "epoch":
        f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"epoch {ev['epoch']}: train_loss {f(ev['train_loss'])} val_loss {f(ev['val_loss'])} "
              f"val_acc {f(ev['val_acc'])} val_f1 {f(ev['val_f1'])} val_recall {f(ev.get('val_recall'))} "
              f"({ev['elapsed_s']:.0f} s)", file=sys.stderr)


def _save(outcome, args, run_dir: Path) -> int:
    from ferlib.training.workflow import save_outcome

    if args.no_save:
        print(f"not saved (--no-save); metrics in {run_dir}", file=sys.stderr)
        return 0
    w, c = save_outcome(outcome, args.out, command="python -m ferlib " + shlex.join(sys.argv[1:]))
    print(f"saved {w} and {c}; run folder {run_dir}", file=sys.stderr)
    return 0


def cmd_extract(args) -> int:
    from ferlib.data.tensors import import_dataset, landmarks_of
    from ferlib.data.cache import detection_summary
    from ferlib.scale import extract_runner

    report = {}
    with extract_runner(args.engine, args.address, args.workers) as runner:  # None: the local process pool
        for path in args.datasets:
            df = import_dataset(path, args.dataset_kind)
            lm, found, ex = landmarks_of(df, workers=args.workers, cache_dir=args.cache_dir, progress=True,
                                         extractor_kwargs=_extractor_kwargs(args), runner=runner)
            summary = detection_summary(df.table, found)
            print(f"{path} ({df.kind}): {len(df)} images, detection rate {found.mean():.4f}"
                  + (f"; {ex.n_extracted} extracted, {ex.n_cached} cached, {ex.seconds:.1f} s" if ex else
                     "; landmarks stored with the recordings"))
            print(summary.to_string())
            errors = ex.errors if ex else {}
            for p, why in list(errors.items())[:10]:
                print(f"unreadable: {p}: {why}", file=sys.stderr)
            report[str(path)] = {"kind": df.kind, "images": len(df), "detection_rate": float(found.mean()),
                                 "errors": errors,
                                 "summary": [{"split": s, "label": lab, **{k: (float(v) if k == "rate" else int(v))
                                                                          for k, v in row.items()}}
                                             for (s, lab), row in summary.iterrows()]}
    if args.json:
        _write_json(report, Path(args.json))
    return 0


def cmd_train(args) -> int:
    import torch

    from ferlib.models import create_model
    from ferlib.training.workflow import train_new, training_spec

    model_kw = _json_arg(args.model_kw, "--model-kw")
    config = _train_config(args)
    data = _training_data(args)
    classes = _classes(args.classes, [*data.datasets, *data.train_only])
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(classes), **model_kw)
    overrides = {"method": args.method, "subtract_baseline": args.subject_conditioning}
    if args.subset:
        overrides["subset"] = args.subset
    run_dir = Path(args.run_dir or runs_dir() / Path(args.out).name)
    outcome = train_new(model, training_spec(model, **overrides), classes, data, config, run_dir=run_dir,
                        options=_prepare_options(args), progress=_progress(), teacher=args.teacher,
                        processes=args.ddp, resume=args.resume)
    return _save(outcome, args, run_dir)


FEW_SHOT_MAX = 5000  # --adapt auto: up to this many adaptation samples, personal adaptation


def cmd_finetune(args) -> int:
    from ferlib.inference.checkpoint import load_checkpoint, resolve_checkpoint

    args.checkpoint = str(resolve_checkpoint(args.checkpoint))  # a path or a shipped model's name
    _, base = load_checkpoint(args.checkpoint)
    data = _training_data(args)
    method = _adapt_method(args, base, data.datasets, data.train_only)
    if method == "train":
        return _finetune_train(args, base, data)
    return _finetune_personal(args, method, base, data)


def _adapt_method(args, base: dict, datasets, extra) -> str:
    """--adapt auto: the classic fine-tune for new classes, --freeze-backbone or more than
    FEW_SHOT_MAX adaptation rows (a dataset, not a person); else ferlib.training.personal.DEFAULT_METHOD."""
    if args.adapt != "auto":
        return args.adapt
    n = sum(int((df.table["split"].astype(str) != "test").sum()) if "split" in df.table else len(df) for df in datasets) \
        + sum(len(df) for df in extra)
    new_classes = bool(args.classes) and _classes(args.classes, []) != list(base["classes"])
    method = "train" if new_classes or args.freeze_backbone or n > FEW_SHOT_MAX else DEFAULT_METHOD
    why = ("new classes" if new_classes else "--freeze-backbone" if args.freeze_backbone
           else f"{n} samples > {FEW_SHOT_MAX}" if n > FEW_SHOT_MAX else f"{n} samples <= {FEW_SHOT_MAX}")
    print(f"--adapt auto: {method} ({why})", file=sys.stderr)
    return method


def _finetune_train(args, base: dict, data) -> int:
    """--adapt train: the classic fine-tune (validation split, early stopping): for big datasets."""
    from ferlib.training.workflow import finetune_base

    config = _train_config(args)
    classes = _classes(args.classes, []) if args.classes else list(base["classes"])
    run_dir = Path(args.run_dir or runs_dir() / Path(args.out).name)
    outcome = finetune_base(args.checkpoint, data, config, classes=classes, run_dir=run_dir,
                            options=_prepare_options(args), progress=_progress(), resume=args.resume)
    return _save(outcome, args, run_dir)


def _finetune_personal(args, method: str, base: dict, data) -> int:
    """--adapt prototype|head|full: few-shot personal adaptation on every train and val row, a fixed
    schedule, no early stopping; a test split, when the data has one (studio sessions), is reported."""
    from ferlib.training.personal import AdaptConfig
    from ferlib.training.workflow import adapt_personal

    if args.resume:
        raise InputError(f"--resume is for the epoch-by-epoch runs (train, finetune --adapt train); --adapt {method} "
                         "takes seconds and starts over")
    if args.classes and _classes(args.classes, []) != list(base["classes"]):
        raise InputError(f"--adapt {method} keeps the base model's classes {base['classes']}; "
                         "new classes need --adapt train")
    config = AdaptConfig(method=method, seed=args.seed, threads=args.threads,
                         **({"epochs": args.epochs} if args.epochs is not None else {}),
                         **({"full_lr": args.lr} if args.lr is not None else {}))
    run_dir = Path(args.run_dir or runs_dir() / Path(args.out).name)
    outcome = adapt_personal(args.checkpoint, data, config, run_dir=run_dir, options=_prepare_options(args),
                             progress=_progress())
    return _save(outcome, args, run_dir)


def cmd_evaluate(args) -> int:
    from ferlib.inference.checkpoint import card_spec
    from ferlib.data.tensors import prepare
    from ferlib.training.evaluate import confusion_figure, evaluate_prepared, occlusion_test, save_metrics
    from ferlib.inference.runtime import load_runner

    model = load_runner(args.checkpoint, backend=args.backend, threads=args.threads)
    card = model.card
    if not card or "classes" not in card or "input" not in card:
        raise InputError(f"{args.checkpoint}: no model card with classes and input spec (export it from a checkpoint)")
    if model.task != "classification":
        raise InputError(f"{args.checkpoint}: a {model.task} model; evaluate scores emotion classifiers")
    print(f"model: {model.name} ({model.backend}, {model.threads} thread(s))", file=sys.stderr)
    classes, spec = list(card["classes"]), card_spec(card)
    regions = [r.strip() for r in args.occlusion.split(",") if r.strip()] if args.occlusion else []
    bad = [r for r in regions if r not in ("eyes", "mouth")]
    if bad:
        raise InputError(f"--occlusion regions {bad} are not among eyes, mouth")
    (df,) = _datasets(args)
    if args.split != "all":
        present = sorted(set(df.table["split"]))
        if args.split not in present:
            raise InputError(f"dataset {args.data[0]} has no {args.split!r} rows (splits: {present}); "
                             "choose another --split or --split all")
        df = df.with_table(df.table[df.table["split"] == args.split].reset_index(drop=True))
    expert = None if args.no_frontalize else turned_expert_of(card)
    prep = prepare(df, spec, classes, drop_unknown=args.drop_unknown, workers=args.workers,
                   cache_dir=args.cache_dir, progress=True, extractor_kwargs=_extractor_kwargs(args),
                   framing="frontal" if expert is not None else None)
    runner = None if expert is None else load_runner(expert, backend=args.backend, threads=args.threads)
    metrics = evaluate_prepared(model, prep, tta_flip=args.tta, expert=runner)
    if regions:
        data = prep.eval_inputs()["data"]  # the faces the metrics above read
        metrics["occlusion"] = {r: occlusion_test(model, spec, data, region=r) for r in regions}
    metrics.update({"checkpoint": str(args.checkpoint), "backend": model.backend,
                    "dataset": df.root, "kind": df.kind,
                    "split": args.split, "tta_flip": bool(args.tta), "dropped_labels": prep.info["dropped_labels"]})
    print(_report(metrics))
    if args.out:
        save_metrics(metrics, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.figure:
        from ferlib.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(args.figure), confusion_figure(metrics).to_html(include_plotlyjs=True).encode())
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


def _report(m: dict) -> str:
    """Metrics as text: headline figures, per-class report, confusion matrix (rows true)."""
    classes = m["classes"]
    w = max(8, *(len(c) for c in classes))
    lines = [f"accuracy {m['accuracy_all']:.4f} over {m['n']} samples (misses counted as wrong); "
             f"detection rate {m['detection_rate']:.4f} ({m['n_detected']} faces)",
             f"accuracy on detected faces {m['accuracy']:.4f}; macro F1 {m['macro_f1_all']:.4f} "
             f"(detected only {m['macro_f1']:.4f})", "",
             f"{'class':<{w}} precision  recall      f1  support"]
    for c in classes:
        r = m["per_class"][c]
        lines.append(f"{c:<{w}} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:7.3f} {r['support']:8d}")
    lines += ["", "confusion (rows true, columns predicted; detected faces):",
              " " * w + "".join(f"{c[:7]:>8}" for c in classes)]
    for c, row in zip(classes, m["confusion"]):
        lines.append(f"{c:<{w}}" + "".join(f"{v:8d}" for v in row))
    for axis, bins in m.get("pose_accuracy", {}).items():
        lines.append(f"accuracy by {axis}: " + ", ".join(
            f"{b['bin']} {b['accuracy']:.3f} (n={b['n']})" for b in bins if b["n"]))
    if m.get("turned_expert"):
        lines.append(f"faces turned {FRONTAL_MIN_YAW:.0f} degrees or more, frontalised and read by the turned-face "
                     f"expert {m['turned_expert']['model']}: {m['turned_expert']['faces']}")
    for r, o in m.get("occlusion", {}).items():
        lines.append(f"occlusion {r}: accuracy {o['accuracy']:.4f} -> {o['accuracy_occluded']:.4f} "
                     f"(drop {o['drop']:.4f})")
    return "\n".join(lines)


def _json_arg(text: str, what: str) -> dict:
    try:
        v = json.loads(text)
    except ValueError as e:
        raise InputError(f"{what} is not valid JSON ({e}): {text!r}") from None
    if not isinstance(v, dict):
        raise InputError(f"{what} must be a JSON object, got {text!r}")
    return v


def _write_json(obj, out: Path) -> None:
    from ferlib.fsutil import atomic_write_bytes

    atomic_write_bytes(out, json.dumps(obj, indent=2, default=float).encode())


# --------------------------------------------------------------------------- parser
def _data_options(p, multiple: bool = True) -> None:
    p.add_argument("--data", required=True, action="append" if multiple else "store",
                   help="dataset: class folders or zip, FER2013 zip/csv, AffectNet, CK+, or a studio data folder"
                   + (" (repeat for several)" if multiple else ""))
    p.add_argument("--kind", action="append" if multiple else "store", choices=DATASET_KINDS,
                   help="dataset kind (default auto: by name / layout)" + (
                       "; once for all --data or once per --data" if multiple else ""))
    p.add_argument("--drop-unknown", action="store_true", help="leave out samples whose class the model lacks")
    p.add_argument("--val-frac", type=float, default=0.1,
                   help="validation share of train when a dataset has no val split")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and training")
    p.add_argument("--workers", type=int, default=None, help="landmark extraction processes (default: cores, max 2)")
    p.add_argument("--cache-dir", default=None,
                   help="cache folder (landmarks/, crops/); default $FERLIB_CACHE or $FERLIB_HOME/cache")
    _keypoint_option(p)


def _runtime_options(p, why: str) -> None:
    """--backend and --threads of the model runner (ferlib.inference.runtime.load_runner)."""
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="model runtime: auto (default) = ONNX Runtime where the model exports, else PyTorch; "
                        "onnx, torchscript (traced in memory) or torch (eager); every model family's export is "
                        "checked against PyTorch in the tests and by `ferlib export`")
    p.add_argument("--threads", type=int, default=1,
                   help=f"intra-op threads of the model runner and of torch (default {why})")


def _engine_options(p) -> None:
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (default): this machine's processes; ray: a Ray actor pool (pip install -e .[scale]; "
                        "docs/scale.md)")
    p.add_argument("--address", default=None,
                   help="--engine ray: the cluster to join (HOST:PORT, ray://HOST:PORT or auto); default: start a "
                        "local one on 127.0.0.1")


def _keypoint_option(p) -> None:
    p.add_argument("--keypoint-model", default=None, metavar="PATH",
                   help="keypoint_regressor checkpoint: retry faces face mesh missed, keypoint-aligned "
                        "(e.g. models/keypoint_regressor_fer2013)")


def _train_options(p, lr: float | None) -> None:
    p.add_argument("--extra-train", action="append", default=[], metavar="DATASET",
                   help="dataset used for training only (every sample; e.g. the AffectNet subset); repeatable")
    p.add_argument("--classes", default=None, help="comma list, 'fer7' or 'all' (the eight: fer7 + contempt) "
                   "(default: the classes in the data; finetune: the checkpoint's)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default 30 (train, finetune --adapt train), 15 (finetune --adapt full)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=lr,
                   help="default: train 1e-3; finetune --adapt train/full 1e-4")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    p.add_argument("--schedule", default="linear", choices=SCHEDULES)
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 (adam, sgd) or decoupled decay (adamw)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--weighted-sampler", action="store_true", help="WeightedRandomSampler-style class balancing")
    p.add_argument("--no-class-weights", action="store_true",
                   help="plain cross-entropy (default: normalised inverse-frequency class weights)")
    p.add_argument("--class-weight-power", type=float, default=1.0, metavar="P",
                   help="class weights = inverse class frequency ** P (default 1: full balance; 0.5: square root)")
    p.add_argument("--hard-labels", action="store_true",
                   help="train on the hard labels only, ignoring label distributions (FER+ votes) in the data")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--tta", action="store_true", help="test-time flip averaging (validation and metrics)")
    p.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--monitor", default="val_acc", choices=("val_acc", "val_f1", "val_recall", "val_loss"),
                   help="validation figure that picks the best epoch and drives early stopping "
                        "(val_recall: mean recall over the classes, balanced accuracy)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="training device (default auto: cuda when torch sees a CUDA GPU, else cpu); "
                        "cuda runs forward passes in bf16 autocast")
    p.add_argument("--out", required=True, help="checkpoint stem: writes STEM.safetensors and STEM.json")
    p.add_argument("--run-dir", default=None, help="run folder (config, curves, metrics); default $FERLIB_HOME/runs/<stem name>")
    p.add_argument("--no-save", action="store_true", help="only report and write the run folder (comparison runs)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the run folder's last finished epoch (resume.pt, written after every epoch): "
                        "a run killed or stopped at a session's end continues with the same command plus --resume")


def cmd_export(args) -> int:
    from ferlib.inference.export import export_checkpoint

    out, diff = export_checkpoint(args.model, args.format, args.out)
    print(f"wrote {out} ({args.format}); max |output - PyTorch| on example batches: {diff:.1e}", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from ferlib.bench import BenchConfig, run_bench, run_paths_bench, write_report

    cfg = BenchConfig.quick_config() if args.quick else BenchConfig()
    report = run_paths_bench(cfg) if args.only == "paths" else run_bench(cfg)
    only = f" --only {args.only}" if args.only else ""
    command = f"python -m ferlib bench{' --quick' if args.quick else ''}{only} --out {args.out}"
    default = ("paths" if args.only else "bench") + ("-quick" if args.quick else "")
    jpath, mpath, md = write_report(report, args.out, args.name or default, command)
    print(md)
    print(f"wrote {jpath} and {mpath}", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    from ferlib import locations
    from ferlib.inference import zoo
    from ferlib.inference.pipeline import DEFAULT_MODELS

    rows = zoo.shipped()
    default = next((n for n in DEFAULT_MODELS if any(r["name"] == n for r in rows)), None)
    if args.json:
        print(json.dumps({"models_dir": str(locations.models_dir()), "default": default, "models": rows}, indent=2))
        return 0
    if not rows:
        print(f"no shipped models in {locations.models_dir()} (set FERLIB_MODELS to their folder)", file=sys.stderr)
        return 2
    print(zoo.table(rows, default))
    sources = sorted({r["time_source"] for r in rows if r["time_source"]})
    print(f"\n{len(rows)} models in {locations.models_dir()}; * = the default of predict and the app. A classifier's "
          "name goes to predict --model, finetune, evaluate, export or Pipeline(model=...); the keypoint regressor's "
          "to --keypoint-model.\ntest acc. / macro F1: the card's test "
          "split, faces MediaPipe missed counted as wrong; ms/face: the model alone, batch 1, 1 thread "
          f"({', '.join(sources) if sources else 'not measured here'}).", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ferlib", description=__doc__)
    ap.add_argument("--version", action="version", version=f"ferlib {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="emotion probabilities for every face in images, folders and videos")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or video files")
    p.add_argument("--model", default=None, help="checkpoint (.json/.safetensors/stem); default: the shipped default")
    p.add_argument("--out", required=True, help="CSV file to write (atomically)")
    p.add_argument("--smoothing", default=DEFAULT_SMOOTHING, choices=SMOOTHING,
                   help=f"temporal smoothing of each face over a video's frames (default {DEFAULT_SMOOTHING}: "
                        "docs/cli.md says how it was chosen; stills are never smoothed)")
    _runtime_options(p, "1: MediaPipe's graphs run threads of their own on the same cores")
    p.add_argument("--max-frames", type=int, default=None, help="stop each video after this many frames")
    p.add_argument("--keypoint-model", default="auto", metavar="PATH",
                   help="keypoint_regressor checkpoint for the keypoint-aligned retry of faces the cascade "
                        "or face mesh missed; default auto = the shipped one (FER2013 PrivateTest: faces "
                        "found 97.1 -> 97.9 %%; it runs only on misses), none = off")
    p.add_argument("--no-frontalize", action="store_true",
                   help="crop turned faces as they are (default, for a model whose card names a turned_expert as "
                        "the default's does: a face turned 20 degrees or more, in an image or frame of at most 2 "
                        "faces, is frontalised with its face mesh and read by that expert; docs/results.md "
                        "'Turned heads')")
    _engine_options(p)
    p.add_argument("--workers", type=int, default=None,
                   help="--engine ray: actors, one Pipeline and one CPU each (default: local cluster 2 at most, "
                        "else the cluster's CPUs)")
    p.add_argument("--shard-dir", default=None,
                   help="--engine ray: folder of finished-task shards, for resuming (default OUT.shards)")
    p.add_argument("--image-batch", type=int, default=16, help="--engine ray: images per task (default 16)")
    p.add_argument("--keep-shards", action="store_true", help="--engine ray: keep the shards after the CSV")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("extract", help="fill the landmark cache of datasets and print detection rates")
    p.add_argument("datasets", nargs="+", metavar="DATASET")
    p.add_argument("--dataset-kind", default="auto", choices=DATASET_KINDS)
    p.add_argument("--workers", type=int, default=None, help="extraction processes (default: cores, max 2)")
    p.add_argument("--cache-dir", default=None,
                   help="cache folder (landmarks/ inside); default $FERLIB_CACHE or $FERLIB_HOME/cache")
    p.add_argument("--json", default=None, help="also write the detection report as JSON")
    _keypoint_option(p)
    _engine_options(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="train a registered model on datasets; writes a checkpoint with its card")
    p.add_argument("--model", required=True, help="registered model name (ferlib.models.list_models())")
    p.add_argument("--model-kw", default="{}", help="JSON keyword arguments of create_model")
    p.add_argument("--method", default="proposed", choices=("proposed", "minmax", "similarity"),
                   help="landmark normalisation")
    p.add_argument("--subset", default=None, help="landmark subset (default: the model's)")
    p.add_argument("--subject-conditioning", action="store_true",
                   help="subtract each session's neutral landmarks (studio recordings)")
    _data_options(p)
    _train_options(p, lr=1e-3)
    p.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                   help="knowledge distillation from this classifier (a path or a shipped model's name): its "
                        "probabilities of every training sample, computed once on its own inputs")
    p.add_argument("--distill-weight", type=float, default=None,
                   help="w in (1-w) CE(label) + w T^2 KL(teacher_T || student_T); default 0.5 with --teacher")
    p.add_argument("--distill-temperature", type=float, default=2.0, help="T (default 2)")
    p.add_argument("--pose-augment", type=float, default=0.0, metavar="DEG",
                   help="turn faces up to +-DEG yaw while training: landmark inputs in 3-D before normalisation "
                        "(pitch a third, with perspective; ferlib.inputs.PoseAugmenter), face crops as a plane "
                        "(half of them; ferlib.inputs.Augmenter); 0 = off")
    p.add_argument("--ddp", type=int, default=1, metavar="N",
                   help="data-parallel training on N CPU processes (torch DDP, gloo on the loopback; ferlib.training.ddp): "
                        "each takes 1/N of every batch, gradients averaged; --threads per process (default 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="adapt a checkpoint to a person's samples (default), or fine-tune it on "
                                           "datasets (--adapt train; new head when --classes differ)")
    p.add_argument("checkpoint", help="checkpoint (.json/.safetensors/stem) or a shipped model's name")
    p.add_argument("--adapt", default="auto", choices=("auto", *ADAPT_METHODS, "train"),
                   help=f"{'/'.join(ADAPT_METHODS)}: few-shot personal adaptation on every sample, a fixed schedule "
                        "(docs/results.md 'Personal models' compares them); train: the classic fine-tune with a validation "
                        f"split and early stopping, for datasets; auto (default): {DEFAULT_METHOD} up to "
                        f"{FEW_SHOT_MAX} samples, train for more, for new --classes or with --freeze-backbone")
    p.add_argument("--freeze-backbone", action="store_true", help="--adapt train: train the final layer only")
    p.add_argument("--pose-augment", type=float, default=0.0, metavar="DEG",
                   help="--adapt train: turn faces up to +-DEG yaw while training (landmark inputs in 3-D, face "
                        "crops as a plane); 0 = off")
    _data_options(p)
    _train_options(p, lr=None)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="accuracy, macro F1, per-class report and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint (.json/.safetensors/stem or a shipped name), or an exported "
                                      ".onnx / TorchScript .pt file (ferlib export keeps the card in it)")
    _runtime_options(p, "1")
    _data_options(p, multiple=False)
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--tta", action="store_true", help="test-time flip averaging")
    p.add_argument("--no-frontalize", action="store_true",
                   help="one model, plain crops (default, as `ferlib predict`: for a model whose card names a "
                        "turned_expert, a face in a large image turned 20 degrees or more is frontalised and read by "
                        "that expert; the occlusion test reads plain crops with the model alone)")
    p.add_argument("--occlusion", default=None, help="comma list of regions to occlude: eyes,mouth")
    p.add_argument("--out", default=None, help="metrics JSON to write (atomically)")
    p.add_argument("--figure", default=None, help="confusion matrix as a plotly HTML file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a checkpoint's model to ONNX or TorchScript (checked against PyTorch)")
    p.add_argument("model", help="checkpoint (.json/.safetensors/stem) or the name of a model in models/")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="file to write (atomically)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="benchmark pipeline, models, dataset import and fine-tuning; Markdown + JSON")
    p.add_argument("--quick", action="store_true", help="a few seconds on a few frames (checks the plumbing)")
    p.add_argument("--out", default="benchmarks", help="folder for <date>-<name>.json and .md (default: benchmarks)")
    p.add_argument("--only", default=None, choices=("paths",),
                   help="paths: only the user paths (ferlib predict on the clip end to end, Pipeline per frame, "
                        "face mesh alone, image vs landmark path, a group photo; 1 and 2 threads, interleaved)")
    p.add_argument("--name", default=None, help="file name part (default: bench or paths, -quick with --quick)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("models", help="the shipped models: task, inputs, test accuracy, time per face (from their cards)")
    p.add_argument("--json", action="store_true", help="print every card's summary as JSON")
    p.set_defaults(func=cmd_models)

    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
