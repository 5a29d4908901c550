"""Cached resources and small shared helpers of the pages: store, model list, pipelines, ICE servers."""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from ferlib.errors import InputError
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.inference.checkpoint import load_checkpoint
from ferlib.inference.pipeline import DEFAULT_MODELS, Pipeline, shipped_models
from ferlib.inference.runtime import freeze_heap
from ferlib.models import create_model, list_models
from ferlib.store import Store, default_root
from webapp import jobs
from webapp.video import drain

SMOOTHING = {"none": "none", "EMA": "ema", "window vote": "vote"}


@st.cache_resource(show_spinner=False)
def _store_for(root: str) -> Store:
    store = Store(Path(root))
    store.check(active_run_ids=jobs.active_ids())
    return store


def get_store() -> Store:
    """The Store of the data folder ($FERLIB_DATA or <repo>/data), checked once at start-up."""
    return _store_for(str(default_root()))


def ice_servers() -> list[dict]:
    """ICE servers from $FERLIB_ICE_SERVERS (a JSON list of RTCIceServer dicts); none by default."""
    raw = os.environ.get("FERLIB_ICE_SERVERS", "").strip()
    if not raw:
        return []
    try:
        servers = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"FERLIB_ICE_SERVERS is not valid JSON: {e}") from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        raise InputError('FERLIB_ICE_SERVERS must be a JSON list like [{"urls": ["stun:host:3478"]}]')
    return servers


def rtc_configuration() -> dict:
    """The RTCConfiguration of every stream: no external STUN unless configured."""
    return {"iceServers": ice_servers()}


@dataclass(frozen=True)
class ModelChoice:
    label: str
    path: str           # the checkpoint's path (.safetensors or .json)
    store_id: int | None = None
    is_live: bool = False


def model_choices(store: Store) -> list[ModelChoice]:
    """Fine-tuned models of the store (live one first), then the shipped models (default first)."""
    out: list[ModelChoice] = []
    for r in store.models().itertuples(index=False):
        m = store.get_model(r.id)
        out.append(ModelChoice(f"{r.name} v{r.version}" + (" (live)" if r.is_live else ""),
                               m["abs_path"], int(r.id), bool(r.is_live)))
    out.sort(key=lambda c: not c.is_live)
    rank = {stem: i for i, stem in enumerate(DEFAULT_MODELS)}
    for p in sorted(shipped_models(), key=lambda p: (rank.get(p.stem, len(rank)), p.stem)):
        out.append(ModelChoice(f"shipped: {p.stem}", str(p)))
    return out


def require_models(store: Store) -> list[ModelChoice]:
    """`model_choices(store)`, or an error message and st.stop() when there is no model at all."""
    choices = model_choices(store)
    if not choices:
        st.error("No model found: the shipped models belong in `models/` (see README), "
                 "or train one on the Train page.")
        st.stop()
    return choices


def drain_results(proc, error_key: str) -> list[dict]:
    """The results a video processor queued since the last call (`video.drain(proc.results)`); an
    ``{"error": message}`` item goes to ``st.session_state[error_key]`` instead."""
    out = []
    for item in drain(proc.results):
        if "error" in item:
            st.session_state[error_key] = item["error"]
        else:
            out.append(item)
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def load_model(path: str):
    """(model, card) of a checkpoint, loaded once (safetensors, validated)."""
    return load_checkpoint(path)


_IDLE: dict[tuple, list] = {}
_IDLE_LOCK = threading.Lock()
MAX_IDLE = 4


def _pooled(key: tuple, build: Callable[[], Any]):
    """An idle Pipeline/LandmarkExtractor that a closed stream left under `key`, else a new one whose
    close() parks it for the next stream (up to MAX_IDLE per key). MediaPipe keeps a few MB for every
    graph it builds, even closed (docs/reliability.md), so a long-running app reuses graphs instead
    of building new ones per stream. A parked object belongs to no stream: never two at once."""
    with _IDLE_LOCK:
        idle = _IDLE.get(key)
        obj = idle.pop() if idle else None
    if obj is None:
        obj = build()
        close = obj.close

        def park() -> None:
            with _IDLE_LOCK:
                idle = _IDLE.setdefault(key, [])
                if obj not in idle and len(idle) < MAX_IDLE:
                    idle.append(obj)
                    return
            close()

        obj.close = park
    obj.reset()
    return obj


def make_pipeline(model_path: str, smoothing: str = "none"):
    """A Pipeline (its own MediaPipe graph) for one stream, reset; called in the stream's worker thread."""
    pipe = _pooled(("pipeline", str(model_path)), lambda: Pipeline(model_path, smoothing=smoothing,
                                                                            backend="auto"))
    pipe.set_smoothing(smoothing)
    pipe.set_neutral_baseline(None)
    freeze_heap()
    return pipe


def make_extractor():
    """A LandmarkExtractor for one Studio stream, reset."""
    # samples store landmarks: faces face mesh cannot read are not offered
    extractor = _pooled(("extractor",), lambda: LandmarkExtractor(mode="video", max_faces=1, keep_unmeshed=False))
    freeze_heap()
    return extractor


@st.cache_resource(show_spinner=False)
def classifier_types() -> list[str]:
    """Registry names of the classification models (the Train page's model types)."""
    out = []
    for name in list_models():
        try:
            if create_model(name).task == "classification":
                out.append(name)
        except Exception:  # a family that cannot be built here is simply not offered
            continue
    return out


@st.cache_resource(show_spinner=False)
def model_input_kind(name: str) -> str:
    """The `input_kind` of registry model `name` ("landmarks", "image", "hybrid", "distances")."""
    return create_model(name).input_kind
