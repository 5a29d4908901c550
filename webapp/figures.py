"""Plotly figures of the app's pages (pure functions of data; no st.* calls).

Figures are built from plain dict specs, without `make_subplots` or graph-object traces: the Live
and Studio pages rebuild them every second or so while streaming, on the same 2 cores (and the
same GIL) as the frame processing, and dict specs are several times cheaper.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ferlib.faces.pose import PITCH_EDGES, YAW_EDGES, bin_labels

_MARGIN = dict(l=10, r=10, t=60, b=10)


def _figure(data: list[dict], layout: dict) -> go.Figure:
    return go.Figure({"data": data, "layout": {"margin": _MARGIN, "height": 300, **layout}})


def _recent(history: Sequence[dict], key: str, seconds: float) -> tuple[list[dict], float]:
    rows = [h for h in history if h.get(key) is not None]
    if not rows:
        return [], 0.0
    t_end = rows[-1]["t"]
    return [h for h in rows if h["t"] >= t_end - seconds], t_end


def probability_timeline(history: Sequence[dict], seconds: float = 10.0, model: str | None = None) -> go.Figure:
    """Per-class probability of the main face over the last `seconds` (history: LiveProcessor items
    of one model, named in the title when given)."""
    rows, t_end = _recent(history, "probs", seconds)
    data = []
    if rows:
        t = [h["t"] - t_end for h in rows]
        classes = rows[-1]["classes"]
        data = [{"type": "scatter", "mode": "lines", "name": c, "x": t,
                 "y": [h["probs"][k] if h["classes"] == classes else None for h in rows]}
                for k, c in enumerate(classes)]
    title = "Class probabilities (main face)" + (f"<br><sup>{model}</sup>" if model else "")
    return _figure(data, {"title": {"text": title},
                          "xaxis": {"title": {"text": "seconds"}}, "yaxis": {"range": [0, 1]}})


def performance_chart(history: Sequence[dict], seconds: float = 10.0) -> go.Figure:
    """Processing FPS (1 s sliding window) and per-frame latency over the last `seconds`."""
    rows, t_end = _recent(history, "latency_ms", seconds)
    data = []
    if rows:
        ts = np.array([h["t"] for h in rows])
        fps = (np.searchsorted(ts, ts, side="right") - np.searchsorted(ts, ts - 1.0, side="right")).tolist()
        x = (ts - t_end).tolist()
        data = [{"type": "scatter", "mode": "lines", "name": "FPS", "x": x, "y": fps},
                {"type": "scatter", "mode": "lines", "name": "latency ms", "x": x, "yaxis": "y2",
                 "y": [h["latency_ms"] for h in rows]}]
    return _figure(data, {"title": {"text": "Processing FPS and latency"},
                          "xaxis": {"title": {"text": "seconds"}}, "yaxis": {"title": {"text": "FPS"}},
                          "yaxis2": {"title": {"text": "ms"}, "overlaying": "y", "side": "right"}})


def coverage_heatmap(cov: pd.DataFrame) -> go.Figure:
    """Samples per emotion (rows) x head-pose bin (columns): the yaw bins in the top row of panels,
    the pitch bins in the bottom row (each counts every sample once), one column of panels per
    condition.

    Zero cells (what is still missing) show as white with a 0; the colour scale starts at 0, so an
    empty session is all white."""
    conditions = list(dict.fromkeys(cov["condition"])) or ["indoor"]
    yb, pb = bin_labels(YAW_EDGES), bin_labels(PITCH_EDGES)
    if (cov["yaw_bin"] == "unknown").any():  # samples without a head pose (coverage() keeps them only if any)
        yb, pb = yb + ["unknown"], pb + ["unknown"]
    emotions = list(dict.fromkeys(cov["emotion"]))
    n, gap, vgap = len(conditions), 0.04, 0.16
    width, height = (1 - gap * (n - 1)) / n, (1 - vgap) / 2
    data, layout, notes, top = [], {}, [], 0
    for i, (axis, bins, col) in enumerate((("yaw", yb, "yaw_bin"), ("pitch", pb, "pitch_bin"))):
        y_lo = 1 - height if i == 0 else 0.0
        for j, cond in enumerate(conditions):
            part = cov[cov["condition"] == cond]
            z = (part.groupby(["emotion", col])["count"].sum().unstack().reindex(index=emotions, columns=bins)
                 .fillna(0).to_numpy().astype(int))
            top = max(top, int(z.max()) if z.size else 0)
            k = i * n + j + 1
            ax = "" if k == 1 else str(k)
            data.append({"type": "heatmap", "z": z.tolist(), "x": [f"{axis} {b}" for b in bins], "y": emotions,
                         "text": z.tolist(), "texttemplate": "%{text}", "coloraxis": "coloraxis",
                         "xaxis": f"x{ax}", "yaxis": f"y{ax}", "name": f"{cond}, {axis}",
                         "hovertemplate": "%{y}, %{x}: %{z}<extra>" + cond + "</extra>"})
            lo = j * (width + gap)
            layout[f"xaxis{ax}"] = {"domain": [lo, lo + width], "anchor": f"y{ax}"}
            layout[f"yaxis{ax}"] = {"domain": [y_lo, y_lo + height], "autorange": "reversed", "anchor": f"x{ax}",
                                    "showticklabels": j == 0}
            notes.append({"text": f"<b>{cond}</b>, {axis}",
                          "x": lo + width / 2, "y": y_lo + height, "xref": "paper", "yref": "paper",
                          "showarrow": False, "yanchor": "bottom"})
    rows = max(1, len(emotions))
    return go.Figure({"data": data, "layout": {
        **layout, "annotations": notes,
        "title": {"text": "Coverage: samples per emotion and head pose (0 = still missing)<br><sup>top: yaw, "
                          "head turned left/right; bottom: pitch, head tilted up/down (degrees)</sup>"},
        "coloraxis": {"colorscale": [[0, "white"], [1e-9, "#fde0c5"], [1, "#b2182b"]], "cmin": 0,
                      "cmax": max(1, top), "colorbar": {"title": {"text": "samples"}}},
        "height": 190 + 2 * 26 * rows, "margin": dict(l=10, r=10, t=90, b=10)}})


def training_curves(history: Sequence[dict]) -> go.Figure:
    """Loss and accuracy per epoch (history items: epoch, train_loss, val_loss, train_acc, val_acc)."""
    df = pd.DataFrame(list(history))
    data = []
    if len(df) and "epoch" in df:
        for col, ax in (("train_loss", ""), ("val_loss", ""), ("train_acc", "2"), ("val_acc", "2")):
            if col in df:
                data.append({"type": "scatter", "mode": "lines+markers", "name": col, "x": df["epoch"].tolist(),
                             "y": df[col].tolist(), "xaxis": f"x{ax}", "yaxis": f"y{ax}"})
    return _figure(data, {"xaxis": {"domain": [0, 0.45], "title": {"text": "epoch"}},
                          "yaxis": {"title": {"text": "loss"}},
                          "xaxis2": {"domain": [0.55, 1], "anchor": "y2", "title": {"text": "epoch"}},
                          "yaxis2": {"anchor": "x2", "title": {"text": "accuracy"}, "range": [0, 1.05],
                                     "tickformat": ".0%"}})


def pose_accuracy_bar(table: pd.DataFrame) -> go.Figure:
    """Accuracy per head-pose bin (table columns: model, pose_bin, accuracy (NaN: no sample), n).

    Every bar is labelled with its accuracy and n; a bin without samples has no bar and says
    "no data", so it never looks like 0 %."""
    bins = list(dict.fromkeys(table["pose_bin"]))
    data = []
    for model, part in table.groupby("model", sort=False):
        acc = [None if a != a else float(a) for a in part["accuracy"]]
        data.append({"type": "bar", "x": part["pose_bin"].tolist(), "y": [0.0 if a is None else a for a in acc],
                     "name": str(model), "textposition": "outside", "cliponaxis": False,
                     "text": ["no data" if a is None else f"{a:.0%} (n={n})" for a, n in zip(acc, part["n"])],
                     "marker": {"opacity": [0.0 if a is None else 1.0 for a in acc]},
                     "hovertemplate": "%{x}: %{text}<extra>" + str(model) + "</extra>"})
    return _figure(data, {"title": {"text": "Accuracy per head-pose bin (no data: no sample in that bin)"},
                          "yaxis": {"range": [0, 1.15], "tickformat": ".0%"}, "barmode": "group",
                          "xaxis": {"categoryorder": "array", "categoryarray": bins}, "height": 360})
