"""Extract face-mesh landmarks of a whole dataset into the landmark cache and print detection rates.

    .venv/bin/python scripts/extract_fer2013.py                       # all 35,887 FER2013 images
    .venv/bin/python scripts/extract_fer2013.py --dataset affectnet   # affectnet_subset, resized to 48
    .venv/bin/python scripts/extract_fer2013.py --dataset ckplus

Run it again and it only hashes the images (cache hit). Cache: $FERLIB_CACHE or <repo>/cache.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from ferlib.data import extract_landmarks, import_affectnet, import_ckplus, import_fer2013  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATASETS = {
    "fer2013": (import_fer2013, "fer2013.zip"),
    "affectnet": (import_affectnet, "affectnet_subset.zip"),
    "ckplus": (import_ckplus, "ckplus48.zip"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="fer2013")
    ap.add_argument("--path", type=Path, help="dataset zip or folder (default: ../shared/data/<file>)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 2)")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args(argv)

    importer, filename = DATASETS[args.dataset]
    path = args.path or SHARED / filename
    t0 = time.perf_counter()
    ds = importer(path)
    print(f"{args.dataset}: {len(ds)} images from {path} (import {time.perf_counter() - t0:.1f} s)", flush=True)
    res = extract_landmarks(ds.table, cache_dir=args.cache_dir, workers=args.workers, resize_to=ds.resize_to)
    rate = res.n_extracted / res.seconds if res.n_extracted else float("nan")
    print(f"extracted {res.n_extracted}, from cache {res.n_cached}, unreadable {len(res.errors)}, "
          f"{res.seconds:.1f} s ({rate:.1f} new images/s)")
    print(res.summary.to_string())
    for path_, err in list(res.errors.items())[:20]:
        print(f"unreadable: {path_}: {err}")
    if args.json:
        args.json.write_text(json.dumps({
            "dataset": args.dataset, "images": len(ds), "extracted": res.n_extracted, "cached": res.n_cached,
            "seconds": round(res.seconds, 2), "detection_rate": res.detection_rate, "errors": res.errors,
            "summary": res.summary.reset_index().to_dict("records")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
