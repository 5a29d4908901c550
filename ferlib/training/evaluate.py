"""Evaluation: accuracy, macro F1, per-class report, confusion matrices, detection rate with misses
counted as wrong, accuracy per head-pose bin, the occlusion test and the keypoint error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ferlib.classes import FER7
from ferlib.errors import InputError
from ferlib.faces.normalize import SUBSETS
from ferlib.faces.pose import PITCH_EDGES, YAW_EDGES, bin_labels
from ferlib.fsutil import atomic_write_bytes
from ferlib.inference.runtime import Runner
from ferlib.inputs import REGIONS, InputSpec, Mirror, TensorSet, spec_for_model
from ferlib.training.device import autocast, model_device, to_device


def _runner_spec(runner: Runner, spec: InputSpec | None, data: TensorSet) -> InputSpec:
    if spec is not None:
        return spec
    if data.spec is not None:
        return data.spec
    if runner.card and "input" in runner.card:
        return InputSpec.from_dict(runner.card["input"])
    raise InputError(f"{runner.name}: flip averaging needs the model's input spec (no card, no spec given)")


def _runner_outputs(runner: Runner, data: TensorSet, batch_size: int, tta_flip: bool,
                    spec: InputSpec | None) -> torch.Tensor:
    mirror = Mirror(_runner_spec(runner, spec, data)) if tta_flip and runner.task == "classification" else None
    outs = []
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size))
        out = runner(batch)
        if mirror is not None:
            out = (out + runner(mirror(batch))) / 2
        outs.append(torch.from_numpy(np.asarray(out, dtype=np.float32)))
    return torch.cat(outs)


@torch.no_grad()
def predict_outputs(model, data: TensorSet, batch_size: int = 512, tta_flip: bool = False,
                    spec: InputSpec | None = None) -> torch.Tensor:
    """Class probabilities (N, C) of a classifier, averaged with the mirrored input when tta_flip;
    (N, P, 2) points of a keypoint regressor. `model`: a torch model (training: batches go to its
    device, under bf16 autocast on CUDA) or any ferlib.inference.runtime Runner (ONNX Runtime, TorchScript,
    PyTorch). Float32 CPU tensors."""
    if isinstance(model, Runner):
        return _runner_outputs(model, data, batch_size, tta_flip, spec)
    was_training = model.training
    model.eval()
    mirror = Mirror(spec or data.spec or spec_for_model(model)) if tta_flip else None
    device = model_device(model)
    outs = []
    for i in range(0, len(data), batch_size):
        batch = to_device(data.batch(slice(i, i + batch_size)), device)
        with autocast(device):
            out = model(batch)
            if model.task == "classification":
                out = out.softmax(1)
                if mirror is not None:
                    out = (out + model(mirror(batch)).softmax(1)) / 2
        outs.append(out.float().cpu())
    model.train(was_training)
    return torch.cat(outs)


def confusion_counts(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted; predictions < 0 (misses) are skipped."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    ok = y_pred >= 0
    counts = np.bincount(y_true[ok] * num_classes + y_pred[ok], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def _per_class(cm: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(float)
    pred = cm.sum(0).astype(float)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    """Mean F1 over the classes that occur in y_true or y_pred (misses, y_pred < 0, count as wrong)."""
    y_true = np.asarray(y_true, int)
    cm = confusion_counts(y_true, y_pred, num_classes)
    support = np.bincount(y_true, minlength=num_classes).astype(float)
    _, _, f1 = _per_class(cm, support)
    used = (support > 0) | (cm.sum(0) > 0)
    return float(f1[used].mean()) if used.any() else 0.0


def mean_recall(y_true, y_pred, num_classes: int) -> float:
    """Mean recall (balanced accuracy) over the classes that occur in y_true (misses, y_pred < 0, wrong)."""
    y_true = np.asarray(y_true, int)
    cm = confusion_counts(y_true, y_pred, num_classes)
    support = np.bincount(y_true, minlength=num_classes).astype(float)
    used = support > 0
    return float((np.diag(cm)[used] / support[used]).mean()) if used.any() else 0.0


def _pose_accuracy(correct: np.ndarray, values: np.ndarray, edges) -> list[dict]:
    labels = bin_labels(edges)
    ok = np.isfinite(values)
    bins = np.searchsorted(np.asarray(edges, float), values[ok], side="right")
    c = correct[ok]
    return [{"bin": labels[b], "n": int((bins == b).sum()),
             "accuracy": float(c[bins == b].mean()) if (bins == b).any() else None} for b in range(len(labels))]


def evaluate(source, labels=None, classes=FER7, *, data: TensorSet | None = None, detected_mask=None,
             poses=None, tta_flip: bool = False, spec: InputSpec | None = None,
             yaw_edges=YAW_EDGES, pitch_edges=PITCH_EDGES) -> dict:
    """Metrics of a classifier.

    source: probabilities (N, C) (rows for undetected faces are ignored), or a model evaluated on
    `data` (a TensorSet of the detected faces, in order): a torch model or any ferlib.inference.runtime
    Runner (e.g. `load_runner("model.onnx")`). labels: (N,) class indices of ALL N test
    items (default data.labels). detected_mask: (N,) bool, False where no face was found; those
    count as wrong in `accuracy_all` and `macro_f1_all`; the other metrics are over detected faces.
    poses: (N, 3) yaw/pitch/roll degrees (NaN unknown) for accuracy per pose bin.
    """
    classes = list(classes)
    c = len(classes)
    if isinstance(source, (torch.nn.Module, Runner)):
        if data is None:
            raise InputError("evaluate(model, ...) needs data=TensorSet")
        probs = predict_outputs(source, data, tta_flip=tta_flip, spec=spec).numpy()
        labels = data.labels.numpy() if labels is None else labels
    else:
        probs = np.asarray(source.detach() if isinstance(source, torch.Tensor) else source, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(y)
    det = np.ones(n, bool) if detected_mask is None else np.asarray(detected_mask, bool).reshape(-1)
    if det.shape[0] != n:
        raise InputError(f"detected_mask has {det.shape[0]} entries for {n} labels")
    if probs.ndim != 2 or probs.shape[1] != c:
        raise InputError(f"probabilities must have shape (N, {c}) for classes {classes}, got {probs.shape}")
    if probs.shape[0] == int(det.sum()) and probs.shape[0] != n:
        full = np.zeros((n, c))
        full[det] = probs
        probs = full
    if probs.shape[0] != n:
        raise InputError(f"got {probs.shape[0]} probability rows for {n} labels ({int(det.sum())} detected)")
    if n == 0 or y.min() < 0 or y.max() >= c:
        raise InputError(f"labels must be non-empty class indices in [0, {c}), got range "
                         f"{(int(y.min()), int(y.max())) if n else 'empty'}")
    pred = np.where(det, probs.argmax(1), -1)
    correct = pred == y
    yd, pd_ = y[det], pred[det]
    cm = confusion_counts(yd, pd_, c)
    support = cm.sum(1).astype(float)
    precision, recall, f1 = _per_class(cm, support)
    n_det = int(det.sum())
    rows = cm.sum(1, keepdims=True)
    metrics = {
        "n": n, "n_detected": n_det, "detection_rate": n_det / n,
        "accuracy": float(correct[det].mean()) if n_det else 0.0,
        "macro_f1": macro_f1(yd, pd_, c) if n_det else 0.0,
        "accuracy_all": float(correct.mean()),
        "macro_f1_all": macro_f1(y, pred, c),
        "classes": classes,
        "per_class": {cls: {"precision": float(precision[i]), "recall": float(recall[i]),
                            "f1": float(f1[i]), "support": int(support[i])} for i, cls in enumerate(classes)},
        "confusion": cm.tolist(),
        "confusion_normalised": np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0).tolist(),
    }
    if poses is not None:
        p = np.asarray(poses, dtype=np.float64)
        if p.shape[0] != n or p.ndim != 2 or p.shape[1] < 2:
            raise InputError(f"poses must have shape (N, 3) with N={n}, got {p.shape}")
        p = p[det]
        metrics["pose_accuracy"] = {"yaw": _pose_accuracy(correct[det], p[:, 0], yaw_edges),
                                    "pitch": _pose_accuracy(correct[det], p[:, 1], pitch_edges)}
    return metrics


def read_prepared(model, prepared, *, tta_flip: bool = False, expert=None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (D, C), read by the expert (D,) bool) of the D evaluated rows of a prepared dataset
    (ferlib.data.tensors.Prepared), each face read as `predict` reads it: with a turned-face `expert` (a
    model or Runner with the same classes), the rows whose crop was frontalised (`prepared.frontal`,
    framing "frontal") are read by it and the others by `model`."""
    return _read(model, prepared, prepared.eval_inputs()["data"], tta_flip, expert)


def _read(model, prepared, data: TensorSet, tta_flip: bool, expert) -> tuple[np.ndarray, np.ndarray]:
    """`read_prepared` of `data`, the TensorSet of `prepared`'s evaluated rows."""
    probs = predict_outputs(model, data, tta_flip=tta_flip).numpy()
    if expert is None:
        return probs, np.zeros(len(probs), bool)
    if prepared.frontal is None:
        raise InputError("a turned-face expert reads frontalised crops: prepare the data with framing='frontal'")
    theirs = prepared.frontal[prepared.evaluated]
    rows = np.flatnonzero(theirs)
    if len(rows):
        out = predict_outputs(expert, data.subset(rows), tta_flip=tta_flip).numpy()
        if out.shape[1] != probs.shape[1]:
            raise InputError(f"turned-face expert {getattr(expert, 'name', '')} gives {out.shape[1]} classes, "
                             f"the model {probs.shape[1]} ({list(prepared.classes)})")
        probs[rows] = out
    return probs, theirs


def evaluate_prepared(model, prepared, *, tta_flip: bool = False, expert=None) -> dict:
    """`evaluate` (misses count as wrong, accuracy per pose bin) of a prepared dataset read as `predict`
    reads it (`read_prepared`); with an expert, metrics["turned_expert"] = {"model", "faces"} says which
    model read how many faces."""
    inputs = prepared.eval_inputs()
    probs, theirs = _read(model, prepared, inputs.pop("data"), tta_flip, expert)
    metrics = evaluate(probs, classes=prepared.classes, **inputs)
    if expert is not None:
        metrics["turned_expert"] = {"model": str(getattr(expert, "name", None) or type(expert).__name__),
                                    "faces": int(theirs.sum())}
    return metrics


def save_metrics(metrics: dict, path) -> Path:
    """Write metrics JSON atomically."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(metrics, indent=2).encode())
    return path


def confusion_figure(metrics: dict, normalised: bool = True):
    """Plotly heatmap of the confusion matrix (rows true, columns predicted)."""
    import plotly.graph_objects as go

    z = np.asarray(metrics["confusion_normalised" if normalised else "confusion"], dtype=float)
    classes = metrics["classes"]
    text = [[f"{v:.2f}" if normalised else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=classes, text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1 if normalised else None))
    fig.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      title=f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")
    return fig


OCCLUSION_SUBSETS = {"eyes": ("eyes", "irises", "eyebrows"), "mouth": ("lips",)}


def occlude(batch: dict[str, torch.Tensor], spec: InputSpec, region: str) -> dict[str, torch.Tensor]:
    """The batch with `region` ("eyes" | "mouth") hidden: the REGIONS band of images and heatmaps
    set to 0 (the normalised mean), and the region's landmarks replaced by their batch mean."""
    if region not in OCCLUSION_SUBSETS:
        raise InputError(f"occlusion region {region!r} is not one of {sorted(OCCLUSION_SUBSETS)}")
    out = dict(batch)
    y0, y1, x0, x1 = REGIONS[region]
    for k in ("image", "heatmaps"):
        if k in out:
            v = out[k].clone()
            s = v.shape[-1]
            v[..., round(y0 * s):round(y1 * s), round(x0 * s):round(x1 * s)] = 0.0
            out[k] = v
    if "landmarks" in out:
        region_idx = set().union(*(SUBSETS[name] for name in OCCLUSION_SUBSETS[region]))
        cols = [i for i, v in enumerate(SUBSETS[spec.subset]) if v in region_idx]
        v = out["landmarks"].clone()
        v[:, :, cols] = v[:, :, cols].mean(dim=0, keepdim=True)
        out["landmarks"] = v
    return out


@torch.no_grad()
def occlusion_test(model, spec: InputSpec, data: TensorSet, region: str = "eyes", batch_size: int = 512) -> dict:
    """Accuracy with and without `region` occluded, and the drop (percentage points / 100).
    `model`: a torch model or a ferlib.inference.runtime Runner."""
    model.eval()
    run = model.outputs if isinstance(model, Runner) else (lambda b: model(b).float().cpu().numpy())
    correct = correct_occ = 0
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size))
        y = data.labels[i:i + batch_size].numpy()
        correct += int((run(batch).argmax(1) == y).sum())
        correct_occ += int((run(occlude(batch, spec, region)).argmax(1) == y).sum())
    n = len(data)
    return {"region": region, "n": n, "accuracy": correct / n, "accuracy_occluded": correct_occ / n,
            "drop": (correct - correct_occ) / n}


def keypoint_nme(pred, target) -> float:
    """Mean point error normalised by the inter-ocular distance (first two points: the eye centres)."""
    p = torch.as_tensor(pred, dtype=torch.float64)
    t = torch.as_tensor(target, dtype=torch.float64)
    if p.shape != t.shape or p.dim() != 3 or p.shape[1] < 2:
        raise InputError(f"keypoints must be matching (N, P, 2) arrays, got {tuple(p.shape)} and {tuple(t.shape)}")
    iod = (t[:, 0] - t[:, 1]).norm(dim=1).clamp_min(1e-6)
    return float(((p - t).norm(dim=2).mean(dim=1) / iod).mean())
