"""The benchmark's report: ratios and targets derived from the measured rows, the Markdown tables,
and the JSON + Markdown files."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ferlib.bench.config import ROLES, BenchConfig, Report
from ferlib.errors import InputError
from ferlib.fsutil import atomic_write_bytes, json_default


def _best(rows, **match) -> dict:
    cand = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not cand:
        raise InputError(f"no benchmark row matches {match}")
    return max(cand, key=lambda r: r.get("fps", r.get("faces_per_s", 0.0)))


def ratios_and_targets(rep: Report, cfg: BenchConfig) -> None:
    mesh = {r["key"]: r["fps"] for r in rep.mesh_alone}
    for b in cfg.batches:
        lmp, imp = _best(rep.pipeline, model="landmark", batch=b), _best(rep.pipeline, model="image", batch=b)
        rep.ratios.append({"batch": b, "landmark_fps": lmp["fps"], "image_fps": imp["fps"],
                           "landmark_over_image": lmp["fps"] / imp["fps"],
                           "landmark_over_face_mesh": lmp["fps"] / mesh["face_mesh"],
                           "landmark_over_extractor": lmp["fps"] / mesh["extractor"],
                           "landmark_over_floor": lmp["fps"] / mesh["decode+extractor"]})
    r1 = rep.ratios[0]
    raw1 = min((r for r in rep.raw_model if r["model"] == "landmark" and r["batch"] == cfg.batches[0]),
               key=lambda r: r["ms_per_face"])
    rawN = _best(rep.raw_model, model="landmark", batch=cfg.batches[-1])
    ft = rep.finetune[0]
    t = [("landmark pipeline (batch 1) / MediaPipe face mesh alone", ">= 0.85x", r1["landmark_over_face_mesh"],
          r1["landmark_over_face_mesh"] >= 0.85, "x"),
         ("landmark pipeline / image-baseline pipeline (batch 1)", ">= 3x", r1["landmark_over_image"],
          r1["landmark_over_image"] >= 3.0, "x"),
         (f"raw landmark model, batch {raw1['batch']} ({raw1['backend']}, {raw1['threads']} thr)", "<= 0.2 ms/face",
          raw1["ms_per_face"], raw1["ms_per_face"] <= 0.2, "ms/face"),
         (f"raw landmark model, batch {rawN['batch']} ({rawN['backend']}, {rawN['threads']} thr)", ">= 10,000 faces/s",
          rawN["faces_per_s"], rawN["faces_per_s"] >= 10000, "faces/s"),
         (f"fine-tuning {ft['samples']} samples x {ft['epochs']} epochs", "<= 60 s", ft["seconds"],
          ft["seconds"] <= 60.0, "s")]
    rep.targets = [{"target": name, "goal": goal, "measured": val, "unit": unit, "met": bool(ok)}
                   for name, goal, val, ok, unit in t]
    cls = {m: sum(r["mean_ms"] for r in rep.stages if r["model"] == m and r["stage"] in ("prepare", "model"))
           for m in ROLES}
    rep.notes.append(f"classification alone (prepare + model, mean per frame at batch 1): landmark "
                     f"{cls['landmark']:.2f} ms, image {cls['image']:.2f} ms ({cls['image'] / cls['landmark']:.1f}x); "
                     "both pipelines share the same decode and detection + face mesh stages")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "met" if v else "**not met**"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """Markdown table of `rows` with (key, header) columns."""
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def _header(rep: Report, command: str) -> list[str]:
    m = rep.meta
    return [f"# Benchmark {m['date']} {m['time_utc']} UTC",
            "",
            f"Command: `{command}`  ",
            f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
            f"onnxruntime {m['onnxruntime']}, mediapipe {m['mediapipe']}.  ",
            f"Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in m['load_avg_start'])}, "
            f"at end {', '.join(f'{x:.2f}' for x in m['load_avg_end'])}; run took {m['seconds']:.0f} s.  ",
            f"Clip: `{m['clip']['path']}`, {m['clip']['frames']} frames, {m['clip']['size']}.  "]


def to_markdown(rep: Report, command: str) -> str:
    if not rep.pipeline:  # `--only paths`
        return "\n".join(_header(rep, command) + paths_markdown(rep) + [""])
    ms = [("median_ms", "median ms"), ("p10_ms", "p10"), ("p90_ms", "p90")]
    out = [*_header(rep, command),
           "Models: " + "; ".join(f"{k}: {v}" for k, v in rep.models.items()) + ".",
           "", *[f"- {n}" for n in rep.notes],
           "", "## Targets", "",
           md_table(rep.targets, [("target", "target"), ("goal", "goal"), ("measured", "measured"),
                                  ("unit", "unit"), ("met", "status")]),
           "", "## MediaPipe alone (per frame)", "",
           md_table(rep.mesh_alone, [("what", "what"), *ms, ("fps", "FPS"), ("n", "frames")]),
           "", "Interleaved with the pipelines below (same frames, same load).",
           "", "## Pipeline FPS (decode -> detect/mesh -> normalise -> classify)", "",
           "All configurations and MediaPipe alone run interleaved frame by frame in one pass over the clip. "
           "Per-frame time = decode + the model's detect/mesh time of the frame + its share of its batch's "
           "prepare + model time (batch = frames whose faces go through the model in one call). "
           "FPS = 1000 / median; FPS overall = frames / total time.", "",
           md_table(rep.pipeline, [("model", "model"), ("backend", "backend"), ("threads", "threads"),
                                   ("batch", "batch"), *ms, ("fps", "FPS"), ("fps_overall", "FPS overall"),
                                   ("frames", "frames"), ("faces", "faces")]),
           "", "## Ratios (best thread count per batch size)", "",
           md_table(rep.ratios, [("batch", "batch"), ("landmark_fps", "landmark FPS"), ("image_fps", "image FPS"),
                                 ("landmark_over_image", "landmark / image"),
                                 ("landmark_over_face_mesh", "landmark / face mesh alone"),
                                 ("landmark_over_extractor", "landmark / LandmarkExtractor alone"),
                                 ("landmark_over_floor", "landmark / (decode + LandmarkExtractor)")]),
           "", "## Stage breakdown per frame (batch 1, with the Live page's overlay drawing)", "",
           md_table(rep.stages, [("model", "model"), ("backend", "backend"), ("stage", "stage"),
                                 ("median_ms", "median ms"), ("p90_ms", "p90"), ("mean_ms", "mean ms"),
                                 ("share", "share of mean total")]),
           "", "## Raw model on prepared tensors (real clip faces)", "",
           md_table(rep.raw_model, [("model", "model"), ("backend", "backend"), ("threads", "threads"),
                                    ("batch", "batch"), ("median_ms", "median ms/batch"), ("p10_ms", "p10"),
                                    ("p90_ms", "p90"), ("ms_per_face", "ms/face"), ("faces_per_s", "faces/s"),
                                    ("max_abs_diff_vs_torch", "max |diff| vs torch")]),
           "", "## Dataset import (FER2013 landmark extraction through ferlib.data.cache)", ""]
    if rep.dataset_import:
        out.append(md_table(rep.dataset_import, [("run", "run"), ("images", "images"), ("workers", "workers"),
                                                 ("extracted", "extracted"), ("cached", "cached"),
                                                 ("seconds", "seconds"), ("images_per_s", "images/s"),
                                                 ("detection_rate", "detection rate")]))
    else:
        out.append("Skipped: ../shared/data/fer2013.zip is absent.")
    out += ["", "## Fine-tuning (landmark model, real clip faces labelled sad/happy, Train page settings, "
            "early stopping off)", "",
            md_table(rep.finetune, [("samples", "samples"), ("train", "train"), ("val", "val"),
                                    ("epochs", "epochs"), ("batch_size", "batch"), ("threads", "threads"),
                                    ("seconds", "seconds"), ("s_per_epoch", "s/epoch")]), "",
            "Seconds include loading the base checkpoint, every epoch and its validation; not the one-time "
            f"import that a process's first torch optimizer triggers ({rep.finetune[0]['first_optimizer_s']:.1f} s "
            "in this run, before timing).", ""]
    out += paths_markdown(rep)
    return "\n".join(out)


def paths_markdown(rep: Report) -> list[str]:
    """The user-path tables (empty when the section did not run)."""
    if not rep.paths_predict:
        return []
    ms = [("median_ms", "median ms"), ("p10_ms", "p10"), ("p90_ms", "p90")]
    cfg = rep.meta.get("config", {})
    return ["", "## User paths (interleaved)", "",
            f"{cfg.get('path_rounds')} rounds; each round runs `ferlib predict` on the clip for every model x thread "
            "count (order rotated per round), then one in-process pass where every frame is decoded and goes "
            "through face mesh alone and through each Pipeline. Medians over rounds (predict) and frames (per frame).",
            "", "### `python -m ferlib predict CLIP --threads T` end to end", "",
            md_table(rep.paths_predict, [("name", "model"), ("backend", "runtime"), ("threads", "threads"),
                                         ("frames", "frames"), ("wall_s", "wall s"), ("startup_s", "start-up s"),
                                         ("loop_s", "frames s"), ("ms_per_frame", "ms/frame"), ("fps", "FPS"),
                                         ("runs", "runs")]),
            "", "Start-up = wall time - the frame loop's time (interpreter, imports, model export, MediaPipe graphs, "
            "CSV writing).", "", "### Per frame, in process", "",
            md_table(rep.paths_frames, [("path", "path"), ("threads", "threads"), ("backend", "runtime"), *ms,
                                        ("fps", "FPS"), ("faces_per_s", "faces/s"), ("n", "n")]),
            "", "### Ratios (speed relative to decode + face mesh alone; >= 0.85 is the goal)", "",
            md_table(rep.paths_ratios, [("name", "model"), ("threads", "threads"),
                                        ("predict_ms_per_frame", "predict ms/frame"),
                                        ("decode_face_mesh_ms", "decode + face mesh ms"),
                                        ("predict_over_floor", "predict speed / floor"),
                                        ("pipeline_ms_per_frame", "decode + Pipeline ms"),
                                        ("pipeline_over_floor", "Pipeline speed / floor"),
                                        ("landmark_over_image_speed", "landmark path speed / image path"),
                                        ("image_path_ms", "image path ms"), ("landmark_path_ms", "landmark path ms")])]


def write_report(rep: Report, out_dir, name: str, command: str) -> tuple[Path, Path, str]:
    """Write `<out_dir>/<date>-<name>.json` and `.md` atomically; returns (json, md, markdown)."""
    out_dir = Path(out_dir)
    stem = out_dir / f"{rep.meta['date']}-{name}"
    md = to_markdown(rep, command)
    data = {"command": command, **asdict(rep)}
    jpath, mpath = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_bytes(jpath, json.dumps(data, indent=1, default=json_default).encode())
    atomic_write_bytes(mpath, md.encode())
    return jpath, mpath, md
