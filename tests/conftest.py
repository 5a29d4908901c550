"""Shared test fixtures and markers."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FIXTURE_CLIP


def _limit_threads() -> None:
    # Two cores on this machine and in CI: keep tests from oversubscribing them.
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass


_limit_threads()


@pytest.fixture(scope="session")
def fixture_clip() -> Path:
    assert FIXTURE_CLIP.exists(), f"committed fixture missing: {FIXTURE_CLIP}"
    return FIXTURE_CLIP


@pytest.fixture(scope="session")
def clip_dataset(tmp_path_factory, fixture_clip) -> Path:
    """A tiny real class-folder dataset cut from the committed clip: sad/ (crying, 0-9 s) and happy/
    (laughing, 10.5-19.5 s), 16 evenly spaced frames each, as 320x180 JPEGs."""
    import cv2

    from ferlib.io import iter_video

    fps, n = 23.98, 16
    want = {int(i * 9.0 * fps / n): "sad" for i in range(n)}
    want.update({int((10.5 + i * 9.0 / n) * fps): "happy" for i in range(n)})
    root = tmp_path_factory.mktemp("clip_dataset")
    for idx, _, bgr in iter_video(fixture_clip):
        if idx in want:
            folder = root / want[idx]
            folder.mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"frame{idx:04d}.jpg"), cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA))
        if idx > max(want):
            break
    return root
