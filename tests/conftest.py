"""Shared test fixtures and markers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_CLIP = FIXTURES / "WolfgangLanger_Pexels.mp4"
SHARED = Path(os.environ.get("FERLIB_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"


def _limit_threads() -> None:
    # Two cores on this machine and in CI: keep tests from oversubscribing them.
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass


_limit_threads()


def shared_file(name: str) -> Path:
    """Path of a dataset under ../shared/data, or skip the test with a clear reason."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"dataset {p} is absent (../shared/data is only on the developers' and CI machines)")
    return p


@pytest.fixture(scope="session")
def fixture_clip() -> Path:
    assert FIXTURE_CLIP.exists(), f"committed fixture missing: {FIXTURE_CLIP}"
    return FIXTURE_CLIP
