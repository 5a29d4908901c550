"""Dataset importers: every source becomes one `Dataset`, a DataFrame of samples and its metadata.

Columns (all str, "" when unknown): ``path`` (a file, ``zip://<zip>!<member>``, or
``<csv>#line=<n>`` for FER2013 csv rows), ``label`` (canonical class), ``split``
(``train``/``val``/``test`` or ""), ``subject``, ``group`` (session or sequence), ``source``.
Some importers add columns: ``image`` (decoded uint8 48x48 for csv rows), ``frame`` etc. for
recordings. The `Dataset` carries ``resize_to`` (AffectNet), ``skipped`` and ``near_blank``/``excluded``.
"""
from __future__ import annotations

import csv
import os
import re
import threading
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ferlib.classes import CLASSES, UnknownClassError, canonical, from_code
from ferlib.data.dataset import Dataset
from ferlib.errors import InputError
from ferlib.faces.crops import resize_square  # noqa: F401 (part of ferlib.data's API)
from ferlib.io import IMAGE_EXTENSIONS, ensure_bgr, load_image

COLUMNS: tuple[str, ...] = ("path", "label", "split", "subject", "group", "source")
SPLIT_NAMES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val",
    "test": "test", "privatetest": "test",
}
FER2013_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_SIZE = 48
ZIP_SCHEME = "zip://"

# Zip-bomb limits: total uncompressed bytes, and compression ratio of any member over 1 MiB.
MAX_ZIP_TOTAL = 8 << 30
MAX_ZIP_RATIO = 200.0
_RATIO_MIN_SIZE = 1 << 20


# ----------------------------------------------------------------------------- safe zips
def check_zip(zf: zipfile.ZipFile, name: str, *, max_total: int = MAX_ZIP_TOTAL,
              max_ratio: float = MAX_ZIP_RATIO) -> None:
    """Refuse unsafe member paths (absolute, ``..``, drive letters) and zip bombs (InputError)."""
    total = 0
    for info in zf.infolist():
        member = info.filename
        parts = member.replace("\\", "/").split("/")
        if member.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member):
            raise InputError(f"zip {name}: unsafe member path {member!r} (absolute or '..')")
        total += info.file_size
        if info.file_size > _RATIO_MIN_SIZE and info.file_size > max_ratio * max(info.compress_size, 1):
            raise InputError(
                f"zip {name}: member {member!r} expands {info.file_size / max(info.compress_size, 1):.0f}x "
                f"(limit {max_ratio:.0f}x): refusing a possible zip bomb")
    if total > max_total:
        raise InputError(f"zip {name}: {total} bytes uncompressed exceeds the limit of {max_total} "
                         "bytes: refusing a possible zip bomb")


def open_zip(path: str | os.PathLike, **limits: Any) -> zipfile.ZipFile:
    """Open a zip after `check_zip`; InputError if missing, corrupt or unsafe."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputError(f"zip {path}: file not found") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"zip {path}: not a readable zip file ({e})") from None
    try:
        check_zip(zf, str(path), **limits)
    except InputError:
        zf.close()
        raise
    return zf


_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}
_ZIPS_LOCK = threading.Lock()


def _cached_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), path)  # a forked child must not share its parent's file offset
    with _ZIPS_LOCK:
        if key not in _ZIPS:
            _ZIPS[key] = open_zip(path)
        return _ZIPS[key]


def zip_path(zip_file: str | os.PathLike, member: str) -> str:
    """The sample path of a zip member: ``zip://<absolute zip>!<member>``."""
    return f"{ZIP_SCHEME}{Path(zip_file).resolve()}!{member}"


def split_zip_path(path: str) -> tuple[str, str] | None:
    """(zip file, member) of a ``zip://`` sample path, or None for a plain path."""
    if not str(path).startswith(ZIP_SCHEME):
        return None
    rest = str(path)[len(ZIP_SCHEME):]
    zip_file, sep, member = rest.partition("!")
    if not sep or not member:
        raise InputError(f"sample path {path!r}: expected zip://<zip>!<member>")
    return zip_file, member


# ----------------------------------------------------------------------------- reading
def read_bytes(path: str) -> bytes:
    """Raw bytes of a sample file or zip member (InputError when missing)."""
    zp = split_zip_path(path)
    if zp is None:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise InputError(f"image {path}: cannot read ({e.strerror or e})") from None
    zip_file, member = zp
    try:
        return _cached_zip(zip_file).read(member)
    except KeyError:
        raise InputError(f"image {path}: no member {member!r} in {zip_file}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(f"image {path}: corrupt zip member ({e})") from None


def read_image(path: str, resize_to: int | None = None) -> np.ndarray:
    """BGR uint8 image of a sample path (file or ``zip://`` member), optionally resized square."""
    if split_zip_path(path) is None:
        image = load_image(path)
    else:
        try:
            image = load_image(read_bytes(path))
        except InputError as e:
            raise InputError(f"image {path}: {str(e).partition(': ')[2] or e}") from None
    return resize_square(image, resize_to) if resize_to else image


def read_sample(row: Mapping[str, Any], resize_to: int | None = None) -> np.ndarray:
    """BGR uint8 image of one DataFrame row: its decoded ``image`` if present, else its path."""
    image = row.get("image") if hasattr(row, "get") else None
    if isinstance(image, np.ndarray):
        bgr = ensure_bgr(image, name=str(row.get("path", "image")))
        return resize_square(bgr, resize_to) if resize_to else bgr
    return read_image(str(row["path"]), resize_to)


# ----------------------------------------------------------------------------- listing
def _list_images(root: str | os.PathLike) -> list[tuple[str, tuple[str, ...]]]:
    """(sample path, path parts relative to root) of every image under a folder or in a zip.

    Hidden files and __MACOSX are ignored.
    """
    root = Path(root)
    out: list[tuple[str, tuple[str, ...]]] = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).parts
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(rel):
                out.append((str(p.resolve()), rel))
        return out
    zf = _dataset_zip(root)
    for name in sorted(zf.namelist()):
        rel = tuple(PurePosixPath(name).parts)
        if not name.endswith("/") and PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS \
                and not _hidden(rel):
            out.append((zip_path(root, name), rel))
    return out


def _dataset_zip(root: Path) -> zipfile.ZipFile:
    """The (cached, checked) zip of a dataset that is not a folder; InputError when it is missing or not a zip."""
    if not root.exists():
        raise InputError(f"dataset {root}: no such file or folder")
    if not zipfile.is_zipfile(root):
        raise InputError(f"dataset {root}: neither a folder nor a zip file")
    return _cached_zip(str(root.resolve()))


def write_zip_subset(source: str | os.PathLike, members: Iterable[str], out: str | os.PathLike,
                     contents: dict[str, bytes] | None = None) -> Path:
    """Copy `members` of the zip `source` byte for byte into a new zip `out` (same layout), atomically:
    a dataset's part (CK+ train subjects, AffectNet without its held-out crops) for `--data`/`--extra-train`.
    contents: new bytes for some of the members (a rewritten label file), the rest copied as they are."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    contents = contents or {}
    with open_zip(source) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for m in members:
            dst.writestr(src.getinfo(m), contents[m] if m in contents else src.read(m))
    tmp.replace(out)
    return out


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _table(rows: list[dict[str, Any]], extra: Iterable[str] = ()) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS) + [c for c in extra if c not in COLUMNS])


def _class_of(folder: str, codes: str | None) -> str:
    if codes and folder.isdigit():
        return from_code(codes, int(folder))
    return canonical(folder)


def import_image_folder(root: str | os.PathLike, *, source: str | None = None,
                        on_unknown: str = "error", codes: str | None = None,
                        split: str = "") -> Dataset:
    """Class-per-folder tree or zip (``.../<class>/<image>``).

    Class = the image's parent folder through `canonical` (or numeric folders through
    ``from_code(codes, n)``). A train/val/test-like ancestor folder (Training, PublicTest, ...)
    sets ``split``; otherwise `split` is used. Unknown class folders raise InputError listing
    them, or with ``on_unknown="skip"`` are dropped and counted in ``Dataset.skipped``.
    """
    if on_unknown not in ("error", "skip"):
        raise InputError(f"on_unknown={on_unknown!r}: expected 'error' or 'skip'")
    files = _list_images(root)
    source = source or Path(root).stem
    rows: list[dict[str, Any]] = []
    unknown: Counter[str] = Counter()
    for path, rel in files:
        folder = rel[-2] if len(rel) >= 2 else "<root>"
        try:
            label = _class_of(folder, codes)
        except UnknownClassError:
            unknown[folder] += 1
            continue
        sp = next((SPLIT_NAMES[p.lower()] for p in rel[:-2] if p.lower() in SPLIT_NAMES), split)
        rows.append({"path": path, "label": label, "split": sp, "subject": "", "group": "",
                     "source": source})
    if unknown and on_unknown == "error":
        listed = ", ".join(f"{k!r} ({v} images)" for k, v in sorted(unknown.items()))
        raise InputError(f"dataset {root}: folders that are not emotion classes: {listed}; "
                         "rename them or pass on_unknown='skip'")
    if not rows:
        raise InputError(f"dataset {root}: no images in class folders")
    return Dataset(_table(rows), skipped=dict(unknown))


# ----------------------------------------------------------------------------- FER2013
def import_fer2013(root: str | os.PathLike, *, exclude_near_blank: bool = False) -> Dataset:
    """FER2013 folder/zip layout ``fer2013/{Training,PublicTest,PrivateTest}/<class>/*.jpg``.

    Split is the official one (train/val/test). ``Dataset.near_blank`` lists the near-blank
    images named by the archive's ``near_blank_images.txt`` (if present); with
    `exclude_near_blank` they are dropped and also listed in ``Dataset.excluded``.
    """
    ds = import_image_folder(root, source="fer2013")
    df = ds.table
    if (df["split"] == "").any():
        bad = df.loc[df["split"] == "", "path"].iloc[0]
        raise InputError(f"dataset {root}: not the FER2013 layout, {bad} is not under "
                         "Training/, PublicTest/ or PrivateTest/")
    near = _near_blank(root, df)
    if exclude_near_blank and near:
        return replace(ds, table=df[~df["path"].isin(set(near))].reset_index(drop=True),
                       near_blank=near, excluded=near)
    return replace(ds, near_blank=near, excluded=[])


def _near_blank(root: str | os.PathLike, df: pd.DataFrame) -> list[str]:
    """Sample paths listed in the archive's near_blank_images.txt (paths relative to its folder)."""
    root = Path(root)
    if root.is_dir():
        lists = sorted(root.rglob("near_blank_images.txt"))
        if not lists:
            return []
        text, base = lists[0].read_text(), lambda rel: str((lists[0].parent / rel).resolve())
    else:
        zf = _cached_zip(str(root.resolve()))
        names = [n for n in zf.namelist() if n.endswith("near_blank_images.txt")]
        if not names:
            return []
        prefix = names[0][: -len("near_blank_images.txt")]
        text = zf.read(names[0]).decode("utf-8", "replace")
        base = lambda rel: zip_path(root, prefix + rel)  # noqa: E731
    known = set(df["path"])
    listed = [base(line.split("\t")[0].strip()) for line in text.splitlines() if line.strip()]
    return [p for p in listed if p in known]


def _csv_lines(reader, path: Path) -> Iterator[list[str]]:
    try:
        yield from reader
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"FER2013 csv {path} line {reader.line_num + 1}: not a UTF-8 text csv ({e})") from None


def import_fer2013_csv(path: str | os.PathLike) -> Dataset:
    """The FER2013 csv (``emotion,pixels,Usage``); images decoded into the ``image`` column.

    InputError names the line for a wrong header, unknown code, bad pixel string or usage.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    n_px = FER2013_SIZE * FER2013_SIZE
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"FER2013 csv {path}: cannot open ({e.strerror or e})") from None
    with fh:
        reader = csv.reader(fh)
        lines = _csv_lines(reader, path)
        header = next(lines, None)
        if header is None or [h.strip().lower() for h in header] != ["emotion", "pixels", "usage"]:
            raise InputError(f"FER2013 csv {path} line 1: header {header!r}, expected emotion,pixels,Usage")
        for fields in lines:
            line = reader.line_num
            if not fields:
                continue
            where = f"FER2013 csv {path} line {line}"
            if len(fields) != 3:
                raise InputError(f"{where}: {len(fields)} fields, expected 3")
            code, pixels, usage = (f.strip() for f in fields)
            try:
                label = from_code("fer2013", int(code))
            except (ValueError, UnknownClassError):
                raise InputError(f"{where}: emotion {code!r} is not a FER2013 code 0-6") from None
            try:
                values = np.array(pixels.split(), dtype=np.int64)
            except ValueError:
                raise InputError(f"{where}: pixels are not space-separated integers") from None
            if values.size != n_px or values.min() < 0 or values.max() > 255:
                raise InputError(f"{where}: expected {n_px} pixel values in 0-255, got {values.size}"
                                 + (f" in {values.min()}-{values.max()}" if values.size else ""))
            if usage not in FER2013_USAGE:
                raise InputError(f"{where}: Usage {usage!r}, expected one of {list(FER2013_USAGE)}")
            rows.append({"path": f"{path.resolve()}#line={line}", "label": label,
                         "split": FER2013_USAGE[usage], "subject": "", "group": "",
                         "source": "fer2013",
                         "image": values.astype(np.uint8).reshape(FER2013_SIZE, FER2013_SIZE)})
    if not rows:
        raise InputError(f"FER2013 csv {path}: no data rows")
    return Dataset(_table(rows, extra=["image"]))


# ----------------------------------------------------------------------------- FER+
FERPLUS_VOTES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                  "contempt", "unknown", "NF")
"""The ten vote columns of a FER+ label.csv row, in file order (eight emotions, unknown, not a face)."""
FERPLUS_SPLITS: dict[str, str] = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
TARGET_PREFIX = "t_"
"""Soft-target columns: ``t_<class>`` for every class of ferlib.classes.CLASSES (a row's label
distribution, summing to 1); `ferlib.data.tensors.prepare` reads them when present."""


def target_columns() -> list[str]:
    """The soft-target columns of a table, one per canonical class (CLASSES order)."""
    return [TARGET_PREFIX + c for c in CLASSES]


def ferplus_label(votes: Sequence[float]) -> tuple[str | None, np.ndarray | None, str]:
    """The FER+ reference rule on one row's ten votes (FERPLUS_VOTES order).

    Votes of 1 are dropped as outliers; the label is the emotion holding more than half of the remaining
    votes; the soft target is the remaining emotion votes over the eight emotions (CLASSES order),
    normalised. Returns (label or None, target (8,) or None, reason when the label is None:
    "unknown", "not a face", "no majority" or "no votes")."""
    v = np.asarray(votes, dtype=np.float64)
    if v.shape != (len(FERPLUS_VOTES),) or not np.isfinite(v).all() or (v < 0).any():
        raise InputError(f"FER+ votes must be {len(FERPLUS_VOTES)} counts >= 0, got {list(votes)}")
    kept = np.where(v > 1, v, 0.0)
    total = kept.sum()
    emotions = kept[:8]
    target = None
    if emotions.sum() > 0:
        target = np.zeros(len(CLASSES), np.float32)
        for name, n in zip(FERPLUS_VOTES[:8], emotions):
            target[CLASSES.index(canonical(name))] = n
        target /= target.sum()
    if total <= 0:
        return None, target, "no votes"
    top = int(np.argmax(kept))
    if kept[top] <= 0.5 * total:
        return None, target, "no majority"
    if top >= 8:
        return None, target, "unknown" if top == 8 else "not a face"
    return canonical(FERPLUS_VOTES[top]), target, ""


def _ferplus_tables(root: str | os.PathLike) -> Iterator[tuple[str, str, str]]:
    """(split folder, label.csv text, sample path prefix) of each FER+ split under a folder or zip."""
    root = Path(root)
    if root.is_dir():
        for csv_path in sorted(root.rglob("label.csv")):
            folder = csv_path.parent
            if folder.name in FERPLUS_SPLITS:
                yield folder.name, csv_path.read_text(encoding="utf-8"), str(folder.resolve()) + os.sep
        return
    zf = _dataset_zip(root)
    for name in sorted(zf.namelist()):
        parts = PurePosixPath(name).parts
        if len(parts) >= 2 and parts[-1] == "label.csv" and parts[-2] in FERPLUS_SPLITS:
            prefix = name[: -len("label.csv")]
            yield parts[-2], zf.read(name).decode("utf-8", "replace"), zip_path(root, prefix)


def import_ferplus(root: str | os.PathLike) -> Dataset:
    """FER+ in its published layout: ``FER2013{Train,Valid,Test}/*.png`` + ``label.csv`` per folder
    (no header: image name, face box, then the ten FERPLUS_VOTES counts), a folder or a zip.

    Split: Train -> train, Valid (= FER2013 PublicTest) -> val, Test (= PrivateTest) -> test. Every row
    keeps its ten votes (``votes_<name>`` columns) and its soft target (``t_<class>``, `ferplus_label`);
    ``label`` is the majority label. Rows without one (unknown or not-a-face majority, no majority) are
    left out and counted by reason in ``Dataset.skipped``; their paths are in ``Dataset.excluded``.
    Images listed in a label.csv but absent from the archive are an InputError."""
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    excluded: list[str] = []
    members = {p for p, _ in _list_images(root)}
    seen = False
    for folder, text, prefix in _ferplus_tables(root):
        seen = True
        for line_no, fields in enumerate(csv.reader(text.splitlines()), start=1):
            if not fields:
                continue
            where = f"FER+ {folder}/label.csv line {line_no}"
            if len(fields) != 2 + len(FERPLUS_VOTES):
                raise InputError(f"{where}: {len(fields)} fields, expected {2 + len(FERPLUS_VOTES)} "
                                 "(image name, face box, ten vote counts)")
            name = fields[0].strip()
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise InputError(f"{where}: image name {name!r} is not a plain file name")
            try:
                votes = [float(x) for x in fields[2:]]
            except ValueError:
                raise InputError(f"{where}: vote counts {fields[2:]} are not numbers") from None
            label, target, reason = ferplus_label(votes)
            path = prefix + name
            if path not in members:
                raise InputError(f"{where}: image {name} is listed but not in {folder}/")
            if label is None:
                skipped[f"{FERPLUS_SPLITS[folder]}: {reason}"] += 1
                excluded.append(path)
                continue
            row: dict[str, Any] = {"path": path, "label": label, "split": FERPLUS_SPLITS[folder], "subject": "",
                                   "group": "", "source": "ferplus"}
            row.update({f"votes_{v}": votes[i] for i, v in enumerate(FERPLUS_VOTES)})
            assert target is not None  # a majority emotion has votes
            row.update(dict(zip(target_columns(), map(float, target))))
            rows.append(row)
    if not seen:
        raise InputError(f"dataset {root}: not the FER+ layout (no FER2013Train/, FER2013Valid/ or "
                         "FER2013Test/ folder with a label.csv)")
    if not rows:
        raise InputError(f"dataset {root}: no FER+ image has a majority label")
    extra = [f"votes_{v}" for v in FERPLUS_VOTES] + target_columns()
    return Dataset(_table(rows, extra=extra), skipped=dict(skipped), excluded=excluded)


# ----------------------------------------------------------------------------- AffectNet, CK+
def import_affectnet(root: str | os.PathLike, *, resize_to: int = 48,
                     on_unknown: str = "error") -> Dataset:
    """Kaggle AffectNet layout: class-name folders or numeric folders (AFFECTNET_CODES).

    Resolution is mixed (48 and 96 px in our subset and it leaks the class), so
    ``Dataset.resize_to`` tells readers to bring every image to one size.
    """
    ds = import_image_folder(root, source="affectnet", codes="affectnet", on_unknown=on_unknown)
    return replace(ds, resize_to=int(resize_to))


_CK_NAME = re.compile(r"^(S\d+)_(\d+)_")


def import_ckplus(root: str | os.PathLike, *, on_unknown: str = "error") -> Dataset:
    """CK+ folders (``<class>/S055_003_00000012.png``): subject S055, group S055_003 (sequence)."""
    ds = import_image_folder(root, source="ckplus", codes="ckplus", on_unknown=on_unknown)
    df = ds.table
    names = df["path"].map(lambda p: PurePosixPath(str(p).rpartition("!")[2]).name)
    m = names.str.extract(_CK_NAME)
    if m[0].isna().any():
        bad = names[m[0].isna()].iloc[0]
        raise InputError(f"dataset {root}: CK+ file name {bad!r} does not start with S<subject>_<seq>_")
    df["subject"] = m[0].astype(str)
    df["group"] = (m[0] + "_" + m[1]).astype(str)
    return ds


# ----------------------------------------------------------------------------- recordings
RECORDING_EXTRA = ("frame", "condition", "pose", "yaw", "pitch", "roll", "landmarks_path", "sample_id")


def import_recordings(store_or_rows: Any) -> Dataset:
    """Studio recordings as samples, from a `ferlib.store.Store` or plain dict rows.

    Row keys (the Store's sample columns): ``session``, ``emotion``, ``landmarks_path`` and/or
    ``crop_path``, ``frame_index`` (or ``frame``; else order by ``timestamp``), optional
    ``condition``, ``pose_bin`` (or ``pose``), ``yaw``/``pitch``/``roll``, ``id``. Store-relative
    paths become absolute. ``path`` is the crop ("" for landmarks-only samples), ``group`` the
    session, ``frame`` the order within the session; use `splits.chunked_split` for splits.
    """
    if hasattr(store_or_rows, "samples") and hasattr(store_or_rows, "path_of"):
        table = store_or_rows.samples()
        rows = table.to_dict("records")
        resolve = lambda p: str(store_or_rows.path_of(p)) if _given(p) else ""  # noqa: E731
    else:
        rows = [dict(r) for r in store_or_rows]
        resolve = lambda p: str(p) if _given(p) else ""  # noqa: E731
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        where = f"recording row {i}"
        if not _given(r.get("session")) or not _given(r.get("emotion")):
            raise InputError(f"{where}: needs 'session' and 'emotion'")
        if not (_given(r.get("crop_path")) or _given(r.get("landmarks_path"))):
            raise InputError(f"{where}: needs 'crop_path' or 'landmarks_path'")
        try:
            label = canonical(r["emotion"])
        except UnknownClassError as e:
            raise InputError(f"{where}: {e}") from None
        frame = r.get("frame_index", r.get("frame"))
        order = frame if _given(frame) else r.get("timestamp")
        if not _given(order):
            raise InputError(f"{where}: needs 'frame_index' or 'timestamp' to order the session")
        out.append({"path": resolve(r.get("crop_path")), "label": label, "split": "",
                    "subject": str(r.get("subject") or ""), "group": str(r["session"]),
                    "source": "studio", "_order": (float(order), i),
                    "condition": str(r.get("condition") or ""),
                    "pose": str(r.get("pose_bin") or r.get("pose") or ""),
                    "yaw": _num(r.get("yaw")), "pitch": _num(r.get("pitch")), "roll": _num(r.get("roll")),
                    "landmarks_path": resolve(r.get("landmarks_path")),
                    "sample_id": int(r["id"]) if _given(r.get("id")) else i})
    if not out:
        raise InputError("recordings: no samples")
    # frame = 0-based order within the session by (frame index or timestamp, row)
    by_session: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        by_session.setdefault(r["group"], []).append(i)
    for idx in by_session.values():
        for rank, i in enumerate(sorted(idx, key=lambda j: out[j]["_order"])):
            out[i]["frame"] = rank
    for r in out:
        del r["_order"]
    return Dataset(_table(out, extra=RECORDING_EXTRA))


def _given(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v) != ""


def _num(v: Any) -> float:
    return float(v) if _given(v) else float("nan")
