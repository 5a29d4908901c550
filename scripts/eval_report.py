"""One table per model from scripts/eval_predict.py's JSON files: every held-out set at once, per class.

    .venv/bin/python scripts/eval_report.py runs/eval TAG [TAG ...] [--markdown]

Reads DIR/<TAG>_<set>.json for the sets scripts/make_eval_sets.py builds and prints, per set, accuracy
with misses wrong, the detection rate and every class's recall; for FER+ Test the mean recall over
neutral, happy, surprise, sad, angry and fear (issue 22's target: >= 0.80, none below 0.65) and the
counts behind disgust and contempt; for the synthetic turns each yaw's accuracy over the frontal one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("ferplus_test", "fer2013_private", "affectnet_tight350", "ckplus_test350", "turns")
SIX = ("neutral", "happy", "surprise", "sad", "angry", "fear")
ORDER = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")


def load(folder: Path, tag: str) -> dict[str, dict]:
    out = {}
    for s in SETS:
        p = folder / f"{tag}_{s}.json"
        if p.is_file():
            out[s] = json.loads(p.read_text())
    return out


def summary(results: dict[str, dict]) -> dict:
    """The headline figures of one model's results."""
    row: dict = {}
    for s, r in results.items():
        a = r["all"]
        row[s] = {"accuracy_all": a["accuracy_all"], "found": a["found"], "images": a["images"],
                  "recall": a["recall"]}
        if s == "ferplus_test":
            six = [a["recall"].get(c, 0.0) for c in SIX]
            row[s]["mean_recall_six"] = sum(six) / len(six)
            row[s]["min_recall_six"] = min(six)
        if s == "turns" and "by_yaw" in r:
            front = r["by_yaw"]["0"]["accuracy_all"]
            row[s]["by_yaw_over_frontal"] = {y: (v["accuracy_all"] / front if front else float("nan"))
                                             for y, v in r["by_yaw"].items()}
            row[s]["by_yaw"] = {y: v["accuracy_all"] for y, v in r["by_yaw"].items()}
    return row


def markdown(tags: list[str], rows: list[dict]) -> str:
    lines = []
    for s in SETS:
        if not any(s in r for r in rows):
            continue
        classes = [c for c in ORDER if any(c in r.get(s, {}).get("recall", {}) for r in rows)]
        head = "| model | images | found | accuracy (misses wrong) | " + " | ".join(classes) + " |"
        extra = " mean recall of six | lowest of six |" if s == "ferplus_test" else ""
        lines += [f"**{s}**", "", head[:-1] + "|" + extra, "|---" * (4 + len(classes) + (2 if extra else 0)) + "|"]
        for tag, r in zip(tags, rows):
            if s not in r:
                continue
            x = r[s]
            cells = [tag, str(x["images"]), f"{x['found']:.3f}", f"{x['accuracy_all']:.3f}"]
            cells += [f"{x['recall'][c]:.2f}" if c in x["recall"] else "-" for c in classes]
            if extra:
                cells += [f"{x['mean_recall_six']:.3f}", f"{x['min_recall_six']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        if s == "turns":
            yaws = sorted({int(y) for r in rows for y in r.get(s, {}).get("by_yaw", {})})
            lines += ["", "| model | " + " | ".join(f"{y} deg" for y in yaws) + " | 30-45 over frontal |",
                      "|---" * (2 + len(yaws)) + "|"]
            for tag, r in zip(tags, rows):
                if s in r and "by_yaw" in r[s]:
                    by, ratio = r[s]["by_yaw"], r[s]["by_yaw_over_frontal"]
                    mid = (ratio.get("30", float("nan")) + ratio.get("45", float("nan"))) / 2
                    lines.append(f"| {tag} | " + " | ".join(f"{by[str(y)]:.3f}" for y in yaws) + f" | {mid:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("tags", nargs="+")
    ap.add_argument("--json", default=None, help="also write the summaries as JSON")
    args = ap.parse_args(argv)
    rows = [summary(load(Path(args.folder), t)) for t in args.tags]
    print(markdown(args.tags, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(zip(args.tags, rows)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
