"""Landmark extraction cache and crop cache on real faces (frames of the committed Pexels clip)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlib.data import extract_crops, extract_landmarks, import_fer2013, import_image_folder
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.io import iter_video
from tests.helpers import shared_file

FRAMES = (0, 100, 300, 400)


@pytest.fixture(scope="module")
def clip_frames(fixture_clip) -> dict[int, np.ndarray]:
    return {i: f for i, _, f in iter_video(fixture_clip, max_frames=max(FRAMES) + 1) if i in FRAMES}


@pytest.fixture
def dataset(tmp_path, clip_frames) -> Path:
    """sad/ and happy/ clip frames (640x360 JPEG), a 48x48 grey face crop, a duplicate, a blank image."""
    root = tmp_path / "ds"
    for cls, idx in (("sad", (0, 100)), ("happy", (300, 400))):
        (root / cls).mkdir(parents=True)
        for i in idx:
            cv2.imwrite(str(root / cls / f"f{i}.jpg"), clip_frames[i])
    (root / "surprise").mkdir()
    (root / "surprise" / "dup.jpg").write_bytes((root / "happy" / "f300.jpg").read_bytes())
    face = cv2.cvtColor(clip_frames[300][54:320, 319:585], cv2.COLOR_BGR2GRAY)  # the face's box
    cv2.imwrite(str(root / "happy" / "small.png"), cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA))
    (root / "neutral").mkdir()
    cv2.imwrite(str(root / "neutral" / "blank.png"), np.full((120, 160, 3), 128, np.uint8))
    return root


@pytest.fixture(autouse=True)
def _no_repo_cache(tmp_path, monkeypatch):
    """Whatever a test leaves in the default cache goes to its tmp folder, never <repo>/cache."""
    monkeypatch.setenv("FERLIB_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def count_calls(monkeypatch) -> list[int]:
    calls = [0]
    real = LandmarkExtractor.process

    def counting(self, bgr, timestamp_ms=None):
        calls[0] += 1
        return real(self, bgr, timestamp_ms)

    monkeypatch.setattr(LandmarkExtractor, "process", counting)
    return calls


def test_extraction_is_cached_and_misses_accounted(tmp_path, dataset, count_calls):
    df = import_image_folder(dataset).table
    assert len(df) == 7
    seen = []
    first = extract_landmarks(df, cache_dir=tmp_path / "cache", workers=1, progress=False,
                              callback=lambda done, total: seen.append((done, total)))
    assert count_calls[0] == 6  # the duplicate's bytes are extracted once
    assert first.n_extracted == 6 and first.n_cached == 0
    assert seen[-1] == (7, 7) and seen[0] == (0, 7)
    blank = df.index[df["path"].str.endswith("blank.png")][0]
    assert first.detected.sum() == 6 and not first.detected[blank]
    assert np.isnan(first.landmarks[blank]).all() and np.isnan(first.score[blank])
    ok = first.detected
    assert first.landmarks.shape == (7, 478, 3) and first.landmarks.dtype == np.float32
    assert np.isfinite(first.landmarks[ok]).all()
    # landmarks lie on the face, in the image's own pixels
    big = df.index[df["path"].str.endswith("f300.jpg")][0]
    x0, y0, x1, y1 = first.box[big]
    pts = first.landmarks[big]
    assert 300 < pts[:, 0].mean() < 600 and 50 < pts[:, 1].mean() < 330 and x1 - x0 > 150
    small = df.index[df["path"].str.endswith("small.png")][0]
    assert first.detected[small] and first.landmarks[small][:, :2].max() < 60
    s = first.summary
    assert s.loc[("", "neutral"), "missed"] == 1 and s.loc[("all", "all"), "images"] == 7
    assert s.loc[("all", "all"), "detected"] == 6 and abs(first.detection_rate - 6 / 7) < 1e-9

    count_calls[0] = 0
    again = extract_landmarks(df, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert count_calls[0] == 0 and again.n_extracted == 0 and again.n_cached == 7
    np.testing.assert_array_equal(again.landmarks, first.landmarks)  # NaN rows compare equal
    np.testing.assert_array_equal(again.detected, first.detected)
    np.testing.assert_array_equal(again.score, first.score)

    # a changed setting is a different cache entry; a new image is the only extraction
    extract_landmarks(df.iloc[:2], cache_dir=tmp_path / "cache", workers=1, progress=False, resize_to=320)
    assert count_calls[0] == 2
    cv2.imwrite(str(dataset / "sad" / "new.jpg"), cv2.flip(cv2.imread(str(dataset / "sad" / "f0.jpg")), 1))
    third = extract_landmarks(import_image_folder(dataset).table, cache_dir=tmp_path / "cache", workers=1,
                              progress=False)
    assert count_calls[0] == 3 and third.n_extracted == 1 and third.n_cached == 7


def test_unreadable_image_is_a_miss_and_not_cached(tmp_path, dataset, count_calls):
    (dataset / "sad" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    df = import_image_folder(dataset).table
    res = extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False)
    broken = [p for p in res.errors if p.endswith("broken.jpg")]
    assert broken and "broken.jpg" in broken[0] and "broken.jpg" in res.errors[broken[0]]
    assert res.detected.sum() == 6 and res.summary.loc[("all", "all"), "missed"] == 2
    again = extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert list(again.errors) == broken and again.n_cached == 7


def test_shards_survive_a_corrupt_shard(tmp_path, dataset):
    df = import_image_folder(dataset).table.iloc[:3]
    extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False, shard_size=1)
    shards = sorted((tmp_path / "c").rglob("*.npz"))
    assert len(shards) == 3
    shards[0].write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        res = extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert res.n_extracted == 1 and res.n_cached == 2


def test_an_array_some_shards_lack_is_left_out(tmp_path):
    """Shards written by another version may lack an array: it is left out, never misaligned with the keys."""
    from ferlib.data.cache import ShardStore

    store = ShardStore(tmp_path)
    store.write(["a", "b"], images=np.zeros((2, 2)))
    store.write(["c"], images=np.ones((1, 2)), frontal=np.array([True]))
    index, arrays = store.load()
    assert index == {"a": 0, "b": 1, "c": 2} and set(arrays) == {"images"} and arrays["images"].shape == (3, 2)


def test_cancel_from_callback_keeps_finished_work(tmp_path, dataset):
    df = import_image_folder(dataset).table

    def cancel(done, total):  # f300.jpg (2 rows: dup.jpg has its bytes), then f400.jpg
        if done >= 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False, callback=cancel)
    res = extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert res.n_cached == 3 and res.n_extracted == 4


def test_cache_dir_from_environment(tmp_path, dataset):
    df = import_image_folder(dataset).table.iloc[:1]
    extract_landmarks(df, workers=1, progress=False)
    assert list((tmp_path / "default-cache" / "landmarks").rglob("*.npz"))


@pytest.mark.slow
def test_two_worker_processes_match_one(tmp_path, dataset):
    frame = cv2.imread(str(dataset / "sad" / "f0.jpg"))
    for i in range(2):  # 8 distinct images: enough for the process pool
        cv2.imwrite(str(dataset / "sad" / f"extra{i}.jpg"), cv2.resize(frame, (480 + 40 * i, 270 + 22 * i)))
    df = import_image_folder(dataset).table
    two = extract_landmarks(df, cache_dir=tmp_path / "a", workers=2, progress=False)
    one = extract_landmarks(df, cache_dir=tmp_path / "b", workers=1, progress=False)
    assert two.n_extracted == 8 and two.detected.sum() == 8
    np.testing.assert_array_equal(two.detected, one.detected)
    np.testing.assert_allclose(two.landmarks, one.landmarks, atol=1e-3)


def test_crops_whole_small_images_face_crops_of_large(tmp_path, dataset, count_calls):
    df = import_image_folder(dataset).table
    crops = extract_crops(df, size=48, cache_dir=tmp_path / "crops", progress=False, workers=1)
    assert crops.images.shape == (7, 48, 48) and crops.images.dtype == np.uint8
    name = df["path"].map(lambda p: Path(p).name)
    small = cv2.imread(str(dataset / "happy" / "small.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(crops.images[name == "small.png"][0], small)  # the image itself
    assert crops.cropped[name.str.startswith("f")].all() and not crops.cropped[name == "blank.png"].any()
    # a face crop of a 640x360 frame is face-sized: much less uniform than a squashed whole frame
    assert crops.images[name == "f300.jpg"][0].std() > 20
    calls = count_calls[0]
    again = extract_crops(df, size=48, cache_dir=tmp_path / "crops", progress=False, workers=1)
    assert count_calls[0] == calls and again.n_cached == 7
    np.testing.assert_array_equal(again.images, crops.images)
    whole = extract_crops(df, size=32, mode="image", cache_dir=tmp_path / "crops", progress=False)
    assert whole.images.shape == (7, 32, 32) and not whole.cropped.any()


@pytest.mark.data
def test_real_fer2013_sample_detection(tmp_path):
    df = import_fer2013(shared_file("fer2013.zip")).table.sample(24, random_state=0).reset_index(drop=True)
    res = extract_landmarks(df, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert res.detection_rate >= 0.7  # ~87% over the whole set (docs/data.md)
    assert np.nanmax(res.landmarks[res.detected][:, :, :2]) < 80  # 48x48 pixel coordinates
    crops = extract_crops(df, cache_dir=tmp_path / "k", progress=False)
    assert not crops.cropped.any()  # FER2013 images are the crops


def test_the_cache_key_follows_the_front_ends_numbers_not_its_flags(monkeypatch):
    from ferlib.data.cache import extractor_settings
    from ferlib.faces import landmarks

    before = extractor_settings()
    monkeypatch.setattr(landmarks, "TYPE_CHECKING", False, raising=False)  # a flag, e.g. typing's
    assert extractor_settings() == before
    monkeypatch.setattr(landmarks, "CROP_MARGIN", landmarks.CROP_MARGIN + 0.1)  # a tuning number
    assert extractor_settings() != before
