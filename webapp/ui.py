"""Small pure helpers of the pages' wording and defaults (no st.* calls, so tests can call them)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from ferlib.classes import CLASSES, FER7
from ferlib.errors import FerError
from ferlib.inference.checkpoint import checkpoint_paths
from ferlib.inference.pipeline import DEFAULT_MODELS

ROUGH_BELOW = 50
"""Figures resting on fewer samples than this carry a caveat."""


def few_samples_note(n: int, what: str = "test samples") -> str | None:
    """A caveat for a figure resting on `n` samples (None when there are enough)."""
    n = int(n)
    if n >= ROUGH_BELOW:
        return None
    if n <= 0:
        return f"no {what}: no figure"
    return (f"n={n} {what}: a rough figure (one sample moves accuracy by {100 / n:.0f} points); "
            f"record more samples per emotion for a firmer one")


def error_text(e: BaseException) -> str:
    """A sentence for the user: ferlib's own errors are already worded for people; anything else
    keeps its exception type."""
    return str(e) if isinstance(e, FerError) else f"{type(e).__name__}: {e}"


def card_of(path: str | Path) -> dict:
    """The JSON model card of a checkpoint path (stem, .json or .safetensors); {} when unreadable."""
    try:
        return json.loads(checkpoint_paths(path)[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def default_model_index(choices: Sequence) -> int:
    """Index of the shipped default model (`ferlib.inference.pipeline.DEFAULT_MODELS`, first present) in
    `choices` (ModelChoice items), else 0."""
    stems = [Path(str(c.path)).with_suffix("").name if c.store_id is None else None for c in choices]
    for stem in DEFAULT_MODELS:
        if stem in stems:
            return stems.index(stem)
    return 0


def learnable_classes(card_paths: Sequence[str | Path]) -> list[str]:
    """Emotions that at least one of these models knows, in canonical order (FER7 when none is
    readable): what the Studio offers, since training keeps a base model's classes and a model
    trained from scratch learns FER7."""
    known = set(FER7)
    for p in card_paths:
        known.update(card_of(p).get("classes", []))
    return [c for c in CLASSES if c in known]


def training_plan(samples: pd.DataFrame, classes: Sequence[str], needs_crop: bool,
                  model_name: str = "the base model") -> tuple[dict[str, int], list[str]]:
    """(usable samples per emotion, sentences on the samples training leaves out and why) for the
    Studio samples `samples` (store.samples rows) and a model with `classes`, needing face images
    when `needs_crop`."""
    if samples.empty:
        return {}, []
    dropped = []
    known = samples["emotion"].isin(list(classes))
    for emo, part in samples[~known].groupby("emotion", sort=True):
        where = ", ".join(sorted(set(part["session"])))
        dropped.append(f"{len(part)} {emo} samples ({where}): {model_name} has no '{emo}' class, so they "
                       f"are left out")
    use = samples[known]
    if needs_crop:
        no_img = use["crop_path"].isna()
        if no_img.any():
            where = ", ".join(sorted(set(use.loc[no_img, "session"])))
            dropped.append(f"{int(no_img.sum())} landmarks-only samples ({where}): {model_name} reads face "
                           f"images, so they are left out")
        use = use[~no_img]
    counts = use.groupby("emotion").size()
    return {c: int(counts[c]) for c in classes if c in counts.index}, dropped


def clock(t) -> str:
    """A Unix time as 'YYYY-MM-DD HH:MM:SS' (local), '' when missing."""
    try:
        if t is None or t != t:
            return ""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))
    except (TypeError, ValueError, OverflowError):
        return ""


def runs_table(store, limit: int = 50) -> pd.DataFrame:
    """The Train page's runs: readable start and end times, duration, test accuracy (with its
    sample count), and the error of a failed run; newest first."""
    rows = []
    for r in store.runs().head(limit).itertuples(index=False):
        run = store.get_run(int(r.id))
        m = run.get("metrics") or {}
        test = m.get("test") or {}
        best = m.get("best") or {}
        dur = (float(r.ended) - float(r.started)) if r.ended == r.ended and r.ended is not None else None
        rows.append({
            "run": int(r.id), "model": r.model_name, "status": r.status, "started": clock(r.started),
            "ended": clock(r.ended), "duration (s)": round(dur) if dur is not None else None,
            "test accuracy": test.get("accuracy"), "test samples": test.get("n"),
            "best val accuracy": best.get("val_acc"),
            "error": m.get("error", "") if r.status == "failed" else ""})
    return pd.DataFrame(rows, columns=["run", "model", "status", "started", "ended", "duration (s)",
                                       "test accuracy", "test samples", "best val accuracy", "error"])


def sessions_table(sessions: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The Review tab's sessions: name, condition, images or landmarks only, created, the total and
    one count column per recorded emotion (canonical order)."""
    per = (samples.groupby(["session_id", "emotion"]).size().unstack(fill_value=0) if len(samples)
           else pd.DataFrame(index=pd.Index([], name="session_id")))
    emotions = [c for c in CLASSES if c in per.columns] + sorted(set(per.columns) - set(CLASSES))
    out = pd.DataFrame({
        "session": sessions["name"].to_numpy(), "condition": sessions["condition"].to_numpy(),
        "stores": ["landmarks only" if v else "images + landmarks" for v in sessions["landmarks_only"]],
        "created": [clock(t)[:16] for t in sessions["created"]],
        "samples": sessions["samples"].astype(int).to_numpy()})
    for e in emotions:
        out[e] = [int(per.at[i, e]) if i in per.index else 0 for i in sessions["id"]]
    return out
