"""`python -m ferlib <command>`: predict, extract, train, finetune, evaluate, export, bench."""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ferlib.errors import FerError


def _write_csv(df, out: Path) -> None:
    from ferlib.store import atomic_write_bytes

    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(out, buf.getvalue().encode("utf-8"))


def cmd_predict(args) -> int:
    from ferlib.pipeline import Pipeline
    from ferlib.predict import predict

    with Pipeline(args.model, smoothing=args.smoothing) as pipe:
        print(f"model: {pipe.name} ({pipe.model_path or 'in memory'}), classes: {', '.join(pipe.classes)}",
              file=sys.stderr)
        report = predict(args.inputs, pipe, max_frames=args.max_frames)
    _write_csv(report.frame, Path(args.out))
    df = report.frame
    n_det = int(df["detected"].sum())
    print(f"wrote {len(df)} rows ({n_det} faces, {int((df['detected'] == 0).sum())} frames without a face) "
          f"to {args.out}", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if report.errors else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ferlib", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="emotion probabilities for every face in images, folders and videos")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or video files")
    p.add_argument("--model", default=None, help="checkpoint (.json/.safetensors/stem); default: the shipped default")
    p.add_argument("--out", required=True, help="CSV file to write (atomically)")
    p.add_argument("--smoothing", default="none", choices=("none", "ema", "vote"), help="temporal smoothing for videos")
    p.add_argument("--max-frames", type=int, default=None, help="stop each video after this many frames")
    p.set_defaults(func=cmd_predict)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
