"""MediaPipe graphs started quietly: BlazeFace detectors and face meshes.

MediaPipe's C++ start-up (TFLite, absl) writes warnings to fd 2 whatever GLOG_minloglevel says, so
each graph is built and run once on a blank image while fd 2 is muted. Graphs are not thread-safe:
whoever makes one owns it.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

_STDERR_LOCK = threading.Lock()
_BLANK = np.full((64, 64, 3), 128, np.uint8)


@contextmanager
def _native_stderr_silenced():
    """Mute fd 2 while MediaPipe's C++ graphs start. Python exceptions are unaffected."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _mediapipe():
    """The mediapipe module, its logging turned down (set before its first graph starts)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import mediapipe as mp
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    return mp


def _started(make):
    with _STDERR_LOCK, _native_stderr_silenced():
        graph = make()
        graph.process(_BLANK)
    return graph


def face_detection(full_range: bool, min_confidence: float):
    """BlazeFace: full range (faces up to about 5 m) or short range (faces within about 2 m)."""
    mp = _mediapipe()
    return _started(lambda: mp.solutions.face_detection.FaceDetection(
        model_selection=1 if full_range else 0, min_detection_confidence=min_confidence))


def face_mesh(static: bool, max_faces: int, min_confidence: float):
    """Refined face mesh (478 points): static (one image at a time) or tracking (video)."""
    mp = _mediapipe()
    return _started(lambda: mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
        min_detection_confidence=min_confidence))


def run(graph, rgb: np.ndarray) -> dict:
    """Run a solution graph on one RGB image: its output packets by stream name (a stream with no
    output this time is absent). This is the solution's own `process` without its per-call Python
    (it builds a namedtuple class and parses every output into Python protos on each call, about
    0.25 ms of a face mesh frame held under the GIL): the same packets, read by `landmark_lists` /
    `protos`. Uses the solution's internals of mediapipe 0.10.21, pinned in pyproject.toml
    (tests/test_landmarks.py compares both on the clip)."""
    kind = graph._input_stream_type_info[_INPUT_STREAM]
    graph._graph_outputs.clear()
    graph._simulated_timestamp += 33333  # as `process` does: 30 fps
    graph._graph.add_packet_to_input_stream(stream=_INPUT_STREAM,
                                            packet=graph._make_packet(kind, rgb).at(graph._simulated_timestamp))
    graph._graph.wait_until_idle()
    return graph._graph_outputs


_INPUT_STREAM = "image"  # the face detection and face mesh solutions' one input


def landmark_lists(packets: dict, stream: str = "multi_face_landmarks") -> list[bytes]:
    """The serialised NormalizedLandmarkLists of a `run`'s output stream (none: [])."""
    packet = packets.get(stream)
    return [] if packet is None or packet.is_empty() else list(_packet_getter()._get_serialized_proto_list(packet))


def protos(packets: dict, stream: str) -> list:
    """The proto messages of a `run`'s output stream (none: [])."""
    packet = packets.get(stream)
    return [] if packet is None or packet.is_empty() else _proto_reader().get_proto_list(packet)


@lru_cache(maxsize=1)
def _proto_reader():
    return _mediapipe().packet_getter


@lru_cache(maxsize=1)
def _packet_getter():
    _mediapipe()
    from mediapipe.python._framework_bindings import _packet_getter as getter

    return getter


def restart(graph) -> None:
    """Reset a tracking graph (forget its faces) with fd 2 muted."""
    with _STDERR_LOCK, _native_stderr_silenced():
        graph.reset()
        graph.process(_BLANK)
