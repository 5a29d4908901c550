"""The model zoo: what each shipped model is, read from its card (`ferlib models`).

Every shipped model is a checkpoint in ferlib.locations.models_dir(): `<name>.safetensors` weights,
`<name>.json` card, usually `<name>.md` notes. `shipped()` summarises each card: task, inputs,
training data, test accuracy and macro F1 (faces MediaPipe missed count as wrong), and the model's
time per face at batch 1 on one thread: from the card's ``metrics.time_per_face_ms`` when it has one,
else from the newest ``benchmarks/*-models.json`` of a source checkout (scripts/bench_shipped_models.py),
else None ("-"). Any name listed here is accepted by every command and by ``Pipeline(model=...)``
(ferlib.inference.checkpoint.resolve_checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ferlib import locations

COLUMNS = ("name", "task", "inputs", "data", "accuracy", "macro_f1", "ms_per_face_torch", "ms_per_face_onnx")


def _inputs(card: dict) -> str:
    spec = card.get("input") or {}
    kind = spec.get("kind", "?")
    if kind in ("image", "hybrid"):
        size = spec.get("image_size")
        text = f"{kind} {size}x{size}" if size else kind
        return text + (" + landmarks" if kind == "hybrid" else "")
    if kind in ("landmarks", "distances"):
        return f"{kind} ({spec.get('method', '?')}, {spec.get('subset', '?')})"
    return kind


def _datasets(card: dict) -> str:
    names = (card.get("data") or {}).get("names") or []
    return ", ".join(Path(str(n)).stem for n in names) or "-"


def _benchmark_times() -> tuple[dict[str, dict[str, float]], str | None]:
    """{model: {backend: ms per face}} at batch 1 from the newest benchmarks/*-models.json of a
    source checkout, and that file's name; ({}, None) when there is none."""
    folder = locations.benchmarks_dir()
    files = sorted(folder.glob("*-models.json")) if folder else []
    for f in reversed(files):
        try:
            rows = json.loads(f.read_text(encoding="utf-8")).get("rows", [])
        except (OSError, ValueError, AttributeError):
            continue
        times: dict[str, dict[str, float]] = {}
        for r in rows:
            if r.get("batch") == 1 and r.get("ms_per_face") is not None:
                times.setdefault(str(r["model"]), {})[str(r["backend"])] = float(r["ms_per_face"])
        if times:
            return times, f.name
    return {}, None


def describe(card_path: Path, card: dict, bench: dict[str, dict[str, float]], bench_file: str | None) -> dict:
    """One zoo row of a card (COLUMNS, plus the files, classes and where the time comes from)."""
    name = card_path.stem
    metrics = card.get("metrics") or {}
    test = metrics["test"] if isinstance(metrics.get("test"), dict) else {}
    keypoints = "keypoints" in card
    row: dict[str, Any] = {
           "name": name, "task": "keypoints" if keypoints else "classification", "inputs": _inputs(card),
           "data": _datasets(card), "architecture": (card.get("model") or {}).get("name"),
           "classes": [] if keypoints else list(card.get("classes") or []),
           "accuracy": test.get("accuracy_all", test.get("accuracy")),
           "macro_f1": test.get("macro_f1_all", test.get("macro_f1")),
           "detection_rate": test.get("detection_rate"), "test_nme": metrics.get("test_nme"),
           "ms_per_face_torch": None, "ms_per_face_onnx": None, "time_source": None,
           "card": str(card_path), "weights": str(card_path.with_suffix(".safetensors")),
           "notes": str(card_path.with_suffix(".md")) if card_path.with_suffix(".md").is_file() else None}
    own = metrics.get("time_per_face_ms")
    source: str | None
    if isinstance(own, dict) and own:
        times, source = own, "card"
    else:
        times, source = bench.get(name, {}), bench_file
    if times:
        row["ms_per_face_torch"] = times.get("torch")
        row["ms_per_face_onnx"] = times.get("onnx")
        row["time_source"] = source
    return row


def shipped(models_dir: Path | None = None) -> list[dict]:
    """A row per shipped model (a card with its weights beside it), sorted by name."""
    folder = Path(models_dir) if models_dir is not None else locations.models_dir()
    bench, bench_file = _benchmark_times()
    rows = []
    for card_path in sorted(folder.glob("*.json")):
        if not card_path.with_suffix(".safetensors").is_file():
            continue
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(card, dict) and card.get("format") == "ferlib-checkpoint":
            rows.append(describe(card_path, card, bench, bench_file))
    return rows


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "f1":
        return f"{v:.3f}"
    if kind == "ms":
        return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"
    return str(v)


def table(rows: list[dict], default: str | None = None) -> str:
    """The rows as an aligned text table; `default` gets a `*`."""
    head = ("name", "task", "inputs", "data", "test acc.", "macro F1", "ms/face torch", "ms/face onnx")
    body = []
    for r in rows:
        acc = _fmt(r["accuracy"], "pct") if r["task"] == "classification" else (
            f"NME {r['test_nme']:.3f}" if r.get("test_nme") is not None else "-")
        body.append((r["name"] + (" *" if r["name"] == default else ""), r["task"], r["inputs"], r["data"], acc,
                     _fmt(r["macro_f1"], "f1"), _fmt(r["ms_per_face_torch"], "ms"), _fmt(r["ms_per_face_onnx"], "ms")))
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    return "\n".join(lines)
