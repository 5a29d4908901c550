"""Plotly figures of the app's pages (pure functions of data; no st.* calls)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ferlib.store import PITCH_EDGES, YAW_EDGES, bin_labels

_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), height=300)


def probability_timeline(history: Sequence[dict], seconds: float = 10.0) -> go.Figure:
    """Per-class probability of the main face over the last `seconds` (history: LiveProcessor items)."""
    fig = go.Figure()
    rows = [h for h in history if h.get("probs")]
    if rows:
        t_end = rows[-1]["t"]
        rows = [h for h in rows if h["t"] >= t_end - seconds]
        t = [h["t"] - t_end for h in rows]
        classes = rows[-1]["classes"]
        for k, c in enumerate(classes):
            fig.add_trace(go.Scatter(x=t, y=[h["probs"][k] if h["classes"] == classes else None for h in rows],
                                     mode="lines", name=c))
    fig.update_layout(title="Class probabilities (main face)", xaxis_title="seconds", yaxis_range=[0, 1],
                      **_LAYOUT)
    return fig


def performance_chart(history: Sequence[dict], seconds: float = 10.0) -> go.Figure:
    """Processing FPS (1 s sliding window) and per-frame latency over the last `seconds`."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    rows = [h for h in history if "latency_ms" in h]
    if rows:
        t_end = rows[-1]["t"]
        rows = [h for h in rows if h["t"] >= t_end - seconds]
        ts = np.array([h["t"] for h in rows])
        fps = [float(np.sum((ts > t - 1.0) & (ts <= t))) for t in ts]
        fig.add_trace(go.Scatter(x=ts - t_end, y=fps, name="FPS", mode="lines"), secondary_y=False)
        fig.add_trace(go.Scatter(x=ts - t_end, y=[h["latency_ms"] for h in rows], name="latency ms",
                                 mode="lines"), secondary_y=True)
    fig.update_layout(title="Processing FPS and latency", xaxis_title="seconds", **_LAYOUT)
    fig.update_yaxes(title_text="FPS", secondary_y=False)
    fig.update_yaxes(title_text="ms", secondary_y=True)
    return fig


def coverage_heatmap(cov: pd.DataFrame) -> go.Figure:
    """Samples per emotion (rows) x yaw bin and pitch bin (columns), one panel per condition.

    Zero cells (what is still missing) show as white with a 0."""
    conditions = list(dict.fromkeys(cov["condition"])) or ["indoor"]
    fig = make_subplots(rows=1, cols=len(conditions), subplot_titles=conditions, shared_yaxes=True)
    yb, pb = bin_labels(YAW_EDGES), bin_labels(PITCH_EDGES)
    if (cov["yaw_bin"] == "unknown").any():  # samples without a head pose (coverage() keeps them only if any)
        yb, pb = yb + ["unknown"], pb + ["unknown"]
    cols = [f"yaw {b}" for b in yb] + [f"pitch {b}" for b in pb]
    emotions = list(dict.fromkeys(cov["emotion"]))
    for j, cond in enumerate(conditions, start=1):
        part = cov[cov["condition"] == cond]
        yaw = part.groupby(["emotion", "yaw_bin"])["count"].sum().unstack().reindex(index=emotions, columns=yb)
        pitch = part.groupby(["emotion", "pitch_bin"])["count"].sum().unstack().reindex(index=emotions, columns=pb)
        z = np.hstack([yaw.fillna(0).to_numpy(), pitch.fillna(0).to_numpy()]).astype(int)
        fig.add_trace(go.Heatmap(z=z.tolist(), x=cols, y=emotions, text=z.tolist(), texttemplate="%{text}", coloraxis="coloraxis",
                                 hovertemplate="%{y}, %{x}: %{z}<extra>" + cond + "</extra>"), row=1, col=j)
    fig.update_layout(title="Coverage: samples per emotion and head pose (0 = still missing)",
                      coloraxis=dict(colorscale=[[0, "white"], [1e-9, "#fde0c5"], [1, "#b2182b"]]),
                      height=120 + 28 * max(1, len(emotions)), margin=dict(l=10, r=10, t=60, b=10))
    fig.update_yaxes(autorange="reversed")
    return fig


def training_curves(history: Sequence[dict]) -> go.Figure:
    """Loss and accuracy per epoch (history items: epoch, train_loss, val_loss, train_acc, val_acc)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "accuracy"])
    df = pd.DataFrame(list(history))
    if len(df) and "epoch" in df:
        for col, c in (("train_loss", 1), ("val_loss", 1), ("train_acc", 2), ("val_acc", 2)):
            if col in df:
                fig.add_trace(go.Scatter(x=df["epoch"], y=df[col], mode="lines+markers", name=col), row=1, col=c)
    fig.update_layout(**_LAYOUT)
    return fig


def pose_accuracy_bar(table: pd.DataFrame) -> go.Figure:
    """Accuracy per head-pose bin (table columns: model, pose_bin, accuracy, n)."""
    fig = go.Figure()
    for model, part in table.groupby("model", sort=False):
        fig.add_trace(go.Bar(x=part["pose_bin"], y=part["accuracy"], name=str(model),
                             text=[f"n={n}" for n in part["n"]]))
    fig.update_layout(title="Accuracy per head-pose bin", yaxis_range=[0, 1], barmode="group", **_LAYOUT)
    return fig
