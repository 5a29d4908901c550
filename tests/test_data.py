"""Dataset importers: folder/zip trees, FER2013 csv and layout, AffectNet, CK+, recordings, safe zips."""
from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ferlib.data import (
    COLUMNS,
    Dataset,
    import_affectnet,
    import_ckplus,
    import_fer2013,
    import_fer2013_csv,
    import_image_folder,
    import_recordings,
    open_zip,
    read_image,
    read_sample,
)
from ferlib.errors import InputError
from tests.helpers import shared_file


def _png(seed: int, size: int = 48, colour: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3) if colour else (size, size), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in files.items():
            z.writestr(rel, data)
    return path


FILES = {
    "set/happy/a.png": _png(1), "set/Happiness/b.png": _png(2), "set/sadness/c.png": _png(3),
    "set/afraid/d.png": _png(4, colour=True), "set/readme.txt": b"not an image",
}


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_folder_maps_class_names(tmp_path, as_zip):
    root = _zip(tmp_path / "set.zip", FILES) if as_zip else _tree(tmp_path, FILES) / "set"
    df = import_image_folder(root, source="mine").table
    assert list(df.columns) == list(COLUMNS)
    assert sorted(df["label"]) == ["fear", "happy", "happy", "sad"]
    assert set(df["source"]) == {"mine"} and set(df["split"]) == {""}
    if as_zip:
        assert all(p.startswith("zip://") and "!set/" in p for p in df["path"])
    # pixels survive the round trip through the zip or folder (PNG is lossless)
    row = df[df["path"].str.endswith("a.png")].iloc[0]
    want = cv2.imdecode(np.frombuffer(FILES["set/happy/a.png"], np.uint8), cv2.IMREAD_GRAYSCALE)
    img = read_image(row["path"])
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert np.array_equal(img[:, :, 0], want)
    assert read_image(row["path"], resize_to=96).shape == (96, 96, 3)


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_folder_unknown_classes_error_or_skip(tmp_path, as_zip):
    files = {**FILES, "set/misc/e.png": _png(5), "set/misc/f.png": _png(6), "set/loose.png": _png(7)}
    root = _zip(tmp_path / "set.zip", files) if as_zip else _tree(tmp_path, files) / "set"
    with pytest.raises(InputError, match=r"'misc' \(2 images\)"):
        import_image_folder(root)
    df = import_image_folder(root, on_unknown="skip")
    assert len(df) == 4
    # loose.png sits in no class folder: "<root>" of a folder tree, "set" inside the zip
    assert df.skipped == {"misc": 2, "set" if as_zip else "<root>": 1}


def test_dataset_keeps_its_metadata_across_a_new_table(tmp_path):
    root = _zip(tmp_path / "aff.zip", {"happy/a.png": _png(1), "sad/b.png": _png(2), "misc/c.png": _png(3)})
    ds = import_affectnet(root, resize_to=64, on_unknown="skip")
    assert len(ds) == 2 and ds.resize_to == 64 and ds.skipped == {"misc": 1} and ds.kind is None
    sub = ds.with_table(ds.table[ds.table["label"] == "sad"].reset_index(drop=True))
    assert len(sub) == 1 and (sub.resize_to, sub.skipped) == (64, {"misc": 1}) and len(ds) == 2
    assert Dataset.of(ds) is ds
    bare = Dataset.of(ds.table)
    assert bare.table is ds.table and (bare.kind, bare.root, bare.resize_to, bare.skipped) == (None, "", None, {})


def test_image_folder_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        import_image_folder(tmp_path / "absent")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="neither a folder nor a zip"):
        import_image_folder(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        import_image_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="on_unknown"):
        import_image_folder(tmp_path / "empty", on_unknown="ignore")
    z = _zip(tmp_path / "corrupt.zip", {"happy/a.png": b"\x89PNG garbage"})
    df = import_image_folder(z).table
    with pytest.raises(InputError, match=r"corrupt.zip!happy/a.png"):
        read_image(df["path"][0])


def test_split_from_ancestor_folders(tmp_path):
    root = _tree(tmp_path, {"d/train/happy/a.png": _png(1), "d/Validation/sad/b.png": _png(2),
                            "d/test/angry/c.png": _png(3)})
    df = import_image_folder(root / "d").table
    assert dict(zip(df["label"], df["split"])) == {"happy": "train", "sad": "val", "angry": "test"}


def _fer_files() -> dict[str, bytes]:
    files = {}
    for split in ("Training", "PublicTest", "PrivateTest"):
        for cls in ("angry", "happy", "surprise"):
            for i in range(2):
                files[f"fer2013/{split}/{cls}/{split}_{cls}{i}.jpg"] = cv2.imencode(
                    ".jpg", np.full((48, 48), 10 * i, np.uint8))[1].tobytes()
    files["fer2013/near_blank_images.txt"] = (b"Training/angry/Training_angry0.jpg\tmean=0.0\n"
                                              b"PrivateTest/happy/PrivateTest_happy0.jpg\tmean=0.0\n")
    return files


@pytest.mark.parametrize("as_zip", [False, True])
def test_fer2013_layout_official_split_and_near_blank(tmp_path, as_zip):
    files = _fer_files()
    root = _zip(tmp_path / "fer2013.zip", files) if as_zip else _tree(tmp_path / "x", files)
    df = import_fer2013(root)
    assert len(df) == 18 and set(df.table["source"]) == {"fer2013"}
    assert df.table.groupby("split").size().to_dict() == {"train": 6, "val": 6, "test": 6}
    assert len(df.near_blank) == 2 and df.excluded == []
    assert all(p in set(df.table["path"]) for p in df.near_blank)
    kept = import_fer2013(root, exclude_near_blank=True)
    assert len(kept) == 16 and sorted(kept.excluded) == sorted(df.near_blank)
    assert not set(kept.table["path"]) & set(kept.excluded)


def test_fer2013_layout_rejects_other_trees(tmp_path):
    root = _tree(tmp_path, {"x/happy/a.png": _png(1)})
    with pytest.raises(InputError, match="not the FER2013 layout"):
        import_fer2013(root / "x")


def _fer_csv(path: Path, lines: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _px(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 2304)))


def test_fer2013_csv_decodes_images(tmp_path):
    p = _fer_csv(tmp_path / "fer.csv", [f"0,{_px(0)},Training", f"3,{_px(1)},PublicTest",
                                         f'6,"{_px(2)}",PrivateTest'])
    df = import_fer2013_csv(p).table
    assert list(df["label"]) == ["angry", "happy", "neutral"]
    assert list(df["split"]) == ["train", "val", "test"]
    assert df["path"][1].endswith("fer.csv#line=3")
    want = np.array(_px(1).split(), np.uint8).reshape(48, 48)
    assert np.array_equal(df["image"][1], want)
    img = read_sample(df.iloc[1])
    assert img.shape == (48, 48, 3) and np.array_equal(img[:, :, 1], want)
    assert read_sample(df.iloc[1], resize_to=64).shape == (64, 64, 3)


@pytest.mark.parametrize("lines,header,match", [
    ([], "emotion,pixel,Usage", "line 1: header"),
    (["0,1 2 3,Training"], None, "line 2: expected 2304 pixel values"),
    ([f"0,{_px(0)},Training", f"0,x {_px(0)},Training"], None, "line 3: pixels are not"),
    ([f"0,{_px(0)} 7,Training"], None, "line 2: expected 2304 pixel values in 0-255, got 2305"),
    ([f"9,{_px(0)},Training"], None, "line 2: emotion '9'"),
    ([f"1,{_px(0)},Validation"], None, "line 2: Usage 'Validation'"),
    ([f"1,{_px(0)}"], None, "line 2: 2 fields"),
    ([], None, "no data rows"),
])
def test_fer2013_csv_errors_name_the_line(tmp_path, lines, header, match):
    p = _fer_csv(tmp_path / "bad.csv", lines, header or "emotion,pixels,Usage")
    with pytest.raises(InputError, match=match):
        import_fer2013_csv(p)


def test_fer2013_csv_out_of_range_pixel(tmp_path):
    px = _px(0).split()
    px[5] = "300"
    with pytest.raises(InputError, match="line 2: .*0-255"):
        import_fer2013_csv(_fer_csv(tmp_path / "bad.csv", [f"2,{' '.join(px)},Training"]))


def test_affectnet_numeric_folders_and_resize(tmp_path):
    root = _tree(tmp_path, {"aff/0/a.png": _png(1, 96, True), "aff/7/b.png": _png(2, 48, True),
                            "aff/surprise/c.png": _png(3, 96, True)})
    df = import_affectnet(root / "aff")
    assert sorted(df.table["label"]) == ["contempt", "neutral", "surprise"]
    assert df.resize_to == 48
    assert {read_sample(r, resize_to=df.resize_to).shape for _, r in df.table.iterrows()} == {(48, 48, 3)}


def test_ckplus_subjects_and_sequences(tmp_path):
    root = _tree(tmp_path, {"ck/anger/S010_004_00000017.png": _png(1), "ck/sadness/S011_002_00000005.png": _png(2),
                            "ck/anger/S010_004_00000018.png": _png(3)})
    df = import_ckplus(root / "ck").table
    assert sorted(zip(df["label"], df["subject"], df["group"])) == [
        ("angry", "S010", "S010_004"), ("angry", "S010", "S010_004"), ("sad", "S011", "S011_002")]
    _tree(tmp_path, {"ck/happy/photo.png": _png(4)})
    with pytest.raises(InputError, match="photo.png"):
        import_ckplus(root / "ck")


def test_recordings_from_rows_and_store(tmp_path):
    rows = [{"session": "s1", "emotion": "Happiness", "frame_index": 5, "crop_path": "/x/5.png",
             "landmarks_path": "/x/5.npy", "condition": "indoor", "pose_bin": "yaw -10..10|pitch -8..8"},
            {"session": "s1", "emotion": "happy", "frame_index": 2, "crop_path": "/x/2.png"},
            {"session": "s2", "emotion": "sad", "timestamp": 3.0, "landmarks_path": "/y/1.npy"}]
    df = import_recordings(rows).table
    assert list(df["frame"]) == [1, 0, 0] and list(df["group"]) == ["s1", "s1", "s2"]
    assert list(df["label"]) == ["happy", "happy", "sad"] and df["pose"][0].startswith("yaw")
    assert df["path"][2] == "" and df["landmarks_path"][2] == "/y/1.npy"
    with pytest.raises(InputError, match="row 0: .*'crop_path' or 'landmarks_path'"):
        import_recordings([{"session": "s", "emotion": "happy", "frame": 1}])
    with pytest.raises(InputError, match="row 0: .*unknown emotion"):
        import_recordings([{"session": "s", "emotion": "bored", "frame": 1, "crop_path": "a"}])

    from ferlib.store import Store

    store = Store(tmp_path / "data")
    sid = store.create_session("me", "indoor")
    pts = np.random.default_rng(0).random((478, 3)).astype(np.float32) * 100
    for i, emo in enumerate(["happy", "happy", "surprise"]):
        store.add_sample(sid, emo, pts, crop=np.zeros((48, 48), np.uint8), pose=(0, 0, 0), frame_index=10 - i)
    df = import_recordings(store).table
    assert list(df["frame"]) == [2, 1, 0] and set(df["group"]) == {"me"}
    assert all(Path(p).is_file() for p in df["path"]) and all(Path(p).is_file() for p in df["landmarks_path"])
    assert read_image(df["path"][0]).shape == (48, 48, 3)
    store.close()


@pytest.mark.parametrize("member", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png",
                                    "..\\evil.png"])
def test_zip_with_unsafe_paths_rejected(tmp_path, member):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("happy/ok.png", _png(1))
        zf.writestr(zipfile.ZipInfo(member), _png(2))
    with pytest.raises(InputError, match="unsafe member path"):
        import_image_folder(z)


def test_zip_bomb_rejected(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("happy/ok.png", _png(1))
        zf.writestr("happy/zeros.png", bytes(20 << 20))  # 20 MiB of zeros compress ~1000x
    with pytest.raises(InputError, match="zip bomb"):
        import_image_folder(z)
    small = _zip(tmp_path / "ok.zip", {"happy/a.png": _png(1), "sad/b.png": _png(2)})
    open_zip(small).close()
    with pytest.raises(InputError, match="exceeds the limit"):
        open_zip(small, max_total=1000)


def test_bad_zip_files(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="fake.zip"):
        open_zip(tmp_path / "fake.zip")
    with pytest.raises(InputError, match="not found"):
        open_zip(tmp_path / "absent.zip")


# ----------------------------------------------------------------------------- real data
FER_COUNTS = {  # shared/README.md: Training / PublicTest / PrivateTest
    "angry": (3995, 467, 491), "disgust": (436, 56, 55), "fear": (4097, 496, 528), "happy": (7215, 895, 879),
    "neutral": (4965, 607, 626), "sad": (4830, 653, 594), "surprise": (3171, 415, 416),
}


@pytest.mark.data
def test_real_fer2013_layout_and_counts():
    df = import_fer2013(shared_file("fer2013.zip"))
    assert df.table.groupby("split").size().to_dict() == {"train": 28709, "val": 3589, "test": 3589}
    got = df.table.groupby(["label", "split"]).size()
    for label, (tr, va, te) in FER_COUNTS.items():
        assert (got[label, "train"], got[label, "val"], got[label, "test"]) == (tr, va, te), label
    assert len(df.near_blank) == 12
    assert len(import_fer2013(shared_file("fer2013.zip"), exclude_near_blank=True)) == 35887 - 12
    img = read_image(df.table["path"][0])
    assert img.shape == (48, 48, 3) and (img[:, :, 0] == img[:, :, 2]).all()


@pytest.mark.data
def test_real_affectnet_and_ckplus():
    aff = import_affectnet(shared_file("affectnet_subset.zip"))
    assert len(aff) == 6378 and "contempt" not in set(aff.table["label"])
    sizes = {read_image(p).shape[0] for p in aff.table.groupby("label")["path"].first()}
    assert sizes == {48, 96}  # the mixed resolution the importer's resize_to removes
    assert {read_sample(r, aff.resize_to).shape for _, r in aff.table.groupby("label").head(1).iterrows()} \
        == {(48, 48, 3)}
    ck = import_ckplus(shared_file("ckplus48.zip")).table
    assert len(ck) == 981 and ck["subject"].nunique() == 118 and ck["group"].nunique() == 327
    assert set(ck["label"]) == {"angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"}
    assert pd.api.types.is_string_dtype(ck["subject"])
