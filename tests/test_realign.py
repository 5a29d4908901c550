"""The keypoint regressor's use in the landmark path (ferlib.faces.realign) on real faces from the clip."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from ferlib.data.cache import extract_landmarks, extractor_settings
from ferlib.errors import ModelFileError
from ferlib.faces.landmarks import LandmarkExtractor, face_crop
from ferlib.faces.realign import TEMPLATE, KeypointRealigner, similarity_matrix
from ferlib.inference.keypoints import load_realigner
from ferlib.inference.pipeline import MODELS_DIR, Pipeline, shipped_keypoint_model, shipped_models
from ferlib.inputs import keypoint_targets
from ferlib.io import iter_video
from ferlib.training.evaluate import keypoint_nme

KP = shipped_keypoint_model()
pytestmark = pytest.mark.skipif(KP is None, reason="models/keypoint_regressor_fer2013 is not shipped")


@pytest.fixture(scope="module")
def crops(fixture_clip) -> list[np.ndarray]:
    """48x48 FER2013-style BGR face crops of 8 clip frames (crying and laughing)."""
    out = []
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for i, _, bgr in iter_video(fixture_clip, max_frames=480):
            if i % 60 == 0:
                (face,) = ex.process(bgr)
                out.append(cv2.cvtColor(face_crop(bgr, face, 48), cv2.COLOR_GRAY2BGR))
    assert len(out) == 8
    return out


@pytest.fixture(scope="module")
def realigner() -> KeypointRealigner:
    return load_realigner(KP)


@pytest.fixture(scope="module")
def extractor():
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        yield ex


def test_similarity_matrix_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 50, (4, 2))
    a, s, t = np.radians(23.0), 1.7, np.array([5.0, -3.0])
    r = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = similarity_matrix(src, src @ r.T + t)
    assert np.allclose(m[:, :2], r) and np.allclose(m[:, 2], t)
    with pytest.raises(Exception, match="collapse"):
        similarity_matrix(np.ones((4, 2)), src)


def test_keypoints_are_close_to_face_mesh_on_real_crops(crops, realigner, extractor):
    pred, target = [], []
    for c in crops:
        pts = extractor._find_small(c)
        assert pts is not None
        target.append(keypoint_targets(pts[None], 48)[0])
        pred.append(realigner.keypoints(c) / 48)
    nme = keypoint_nme(np.stack(pred), np.stack(target))
    mean = keypoint_nme(np.broadcast_to(TEMPLATE, (len(crops), 4, 2)).copy(), np.stack(target))
    assert nme < 0.2, f"normalised error {nme:.3f}"  # trained: 0.12 on FER2013 PrivateTest
    assert nme < mean


def test_retry_maps_points_back_to_the_input(crops, realigner, extractor):
    """A face found in the turned, re-framed crop lands where face mesh finds it in the crop itself."""
    for c in crops[:4]:
        direct = extractor._find_small(c)
        calls = []

        def find(img, calls=calls):  # bound now: each crop counts its own calls
            calls.append(img.shape)
            return extractor._find_small(img) if len(calls) == 2 else None  # the first try "fails"

        back = realigner.retry(c, find, angles=(0.0, 12.0))
        assert calls == [(48, 48, 3), (48, 48, 3)]
        assert back is not None and back.shape == (478, 3)
        iod = np.linalg.norm(direct[468, :2] - direct[473, :2])
        err = np.linalg.norm(back[:, :2] - direct[:, :2], axis=1).mean() / iod
        assert err < 0.08, f"mapped-back points off by {err:.3f} inter-ocular distances"


def test_retry_gives_up_without_a_face(realigner, extractor):
    noise = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    assert realigner.retry(noise, extractor._find_small) is None


def test_classifier_checkpoints_are_refused():
    with pytest.raises(ModelFileError, match="not a keypoint regressor"):
        load_realigner(MODELS_DIR / "landmark_cnn1d_fer2013")


def test_keypoint_model_is_not_listed_as_an_emotion_model():
    assert KP.stem not in {p.stem for p in shipped_models()}


def test_extraction_retries_only_the_misses_in_a_cache_of_their_own(tmp_path, crops):
    folder = tmp_path / "data"
    for i, c in enumerate(crops[:3]):
        (folder / "happy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "happy" / f"face{i}.png"), c)
    blank = np.full((48, 48, 3), 127, np.uint8)
    cv2.imwrite(str(folder / "happy" / "blank.png"), blank)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    df = pd.DataFrame({"path": paths, "label": "happy", "split": "test"})
    cache = tmp_path / "cache"
    base = extract_landmarks(df, cache_dir=cache, workers=1, progress=False)
    kw = {"keypoint_model": str(KP)}
    with_kp = extract_landmarks(df, cache_dir=cache, workers=1, progress=False, extractor_kwargs=kw)
    assert base.detected.tolist() == with_kp.detected.tolist() == [False, True, True, True]  # blank sorts first
    assert np.array_equal(base.landmarks[base.detected], with_kp.landmarks[base.detected])
    assert with_kp.n_cached == 4 and with_kp.n_extracted == 1, "faces come from the base cache; the miss is retried"
    again = extract_landmarks(df, cache_dir=cache, workers=1, progress=False, extractor_kwargs=kw)
    assert again.n_extracted == 0
    # the cache key is the regressor's content and the retry's settings, not its path
    settings = extractor_settings(kw)
    assert settings["extractor"]["keypoint_model"].startswith("sha256:")
    assert settings["extractor"]["realign"]["TEMPLATE_SCALE"] > 0
    assert settings != extractor_settings()


def test_pipeline_with_the_keypoint_retry_runs_on_a_frame(fixture_clip):
    _, _, bgr = next(iter_video(fixture_clip, max_frames=1))
    with Pipeline(mode="static", keypoint_model=KP) as pipe:
        res = pipe.process(bgr)
    assert len(res.predictions) == 1


def test_extractor_retry_can_be_switched_at_run_time():
    with Pipeline(mode="video", max_faces=1) as pipe:
        ex = pipe.extractor
        assert ex.keypoint_model is None
        pipe.set_keypoint_model(KP)
        first = ex._realign
        assert isinstance(first, KeypointRealigner) and ex.keypoint_model == str(KP)
        pipe.set_keypoint_model(KP)
        assert ex._realign is first, "the same checkpoint is not loaded twice"
        pipe.set_keypoint_model(None)
        assert ex._realign is None and ex.keypoint_model is None
        with pytest.raises(ModelFileError):
            pipe.set_keypoint_model(MODELS_DIR / "landmark_cnn1d_fer2013")