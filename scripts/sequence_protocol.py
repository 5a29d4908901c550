"""Short-sequence model vs EMA and the window vote, on held-out chunks of the committed Pexels clip.

    .venv/bin/python scripts/sequence_protocol.py --out benchmarks/2026-11-27-sequence

1. The real front end on every frame (ferlib.training.sequence.video_embeddings: the Pipeline's extractor in
   video mode, its model crop, its probabilities, and the base model's embedding of the main face).
2. Labels: sad (crying) 0-9 s, happy (laughing) from 11 s; 9-11 s is the change and is never
   scored or trained on. Each emotion's span is cut into --chunk-s blocks that alternate train /
   test; the first --gap-s of every block is left out, so no test frame is within --gap-s of a
   training frame (gap >= the window: no test window holds a training frame). Two folds: fold 0
   trains on the even blocks, fold 1 on the odd ones.
3. Per fold, every method labels every frame of the stream causally (smoothers and windows run
   through the whole clip, as on the Live page) and is scored on the test blocks: accuracy (a frame
   without a face counts as wrong) and label flips per second inside the test blocks (the true label
   never changes inside a block: every flip is a wrong one).
   Methods: the shipped model per frame; with EMA (ferlib.inference.pipeline.DEFAULT_SMOOTHING, the
   Smoother's default settings, exactly what `ferlib predict` uses); with the window vote (its
   default window); the personal head (ferlib.training.personal, default AdaptConfig) trained on the training
   blocks, per frame / EMA / vote; the sequence model (ferlib.training.sequence, default SequenceConfig) with
   windows of --windows frames (1 = the same model without temporal context), mean over --seeds.

One person, one recording, few blocks: a rough figure. Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ferlib.inference.checkpoint import card_tta_flip, load_checkpoint, read_checkpoint, resolve_checkpoint  # noqa: E402
from ferlib.inference.pipeline import DEFAULT_SMOOTHING, Smoother  # noqa: E402
from ferlib.inputs import Mirror, TensorSet  # noqa: E402
from ferlib.training.personal import AdaptConfig, adapt_model  # noqa: E402
from ferlib.training.sequence import (  # noqa: E402
    DEFAULT_BASE,
    SequenceConfig,
    n_parameters,
    predict_causal,
    train_sequence_model,
    video_embeddings,
)

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
SPANS = (("sad", 0.0, 9.0), ("happy", 11.0, float("inf")))


def blocks(t: np.ndarray, chunk_s: float, gap_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: emotion ('' outside the labelled spans), block number within the emotion's span
    (-1 outside), and whether the frame is in its block's leading gap."""
    emotion = np.full(len(t), "", dtype=object)
    block = np.full(len(t), -1)
    in_gap = np.zeros(len(t), bool)
    for name, start, end in SPANS:
        m = (t >= start) & (t < end)
        k = np.floor((t[m] - start) / chunk_s).astype(int)
        emotion[m], block[m] = name, k
        in_gap[m] = (t[m] - start - k * chunk_s) < gap_s
    return emotion, block, in_gap


def split(emotion, block, in_gap, fold: int) -> tuple[np.ndarray, np.ndarray]:
    scored = (emotion != "") & ~in_gap
    train = scored & ((block + fold) % 2 == 0)
    return train, scored & ~train


def runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the maximal runs of consecutive True frames."""
    idx = np.flatnonzero(mask)
    return [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(r)]


def smooth(probs: np.ndarray, detected: np.ndarray, kind: str) -> np.ndarray:
    """Labels (-1 without a face) of the stream smoothed causally by ferlib's Smoother, defaults."""
    sm = Smoother(kind)
    return np.array([int(np.argmax(sm(0, p))) if d else -1 for p, d in zip(probs, detected)])


def score(labels: np.ndarray, truth: np.ndarray, test: np.ndarray, fps: float) -> dict:
    chunks = runs(test)
    flips = sum(int((labels[r][1:] != labels[r][:-1]).sum()) for r in chunks)
    seconds = sum(len(r) for r in chunks) / fps
    return {"accuracy": round(float((labels[test] == truth[test]).mean()), 4),
            "flips_per_s": round(flips / seconds, 3), "flips": flips}


@torch.no_grad()
def model_probs(model, inputs: dict, spec, flip: bool) -> np.ndarray:
    """Eager PyTorch probabilities, averaged with the mirrored faces' when the card says so
    (as Pipeline.probabilities does with its runner)."""
    model.eval()
    p = torch.softmax(model(inputs), 1)
    if flip:
        p = (p + torch.softmax(model(Mirror(spec)(inputs)), 1)) / 2
    return p.numpy()


def run_fold(ve, truth, train, test, windows_list, seeds, seq_config: SequenceConfig, base: str, flip: bool) -> dict:
    det = ve.detected
    classes = list(ve.classes)
    fps = ve.fps
    out: dict[str, dict] = {}
    timings: dict[str, float] = {}
    base_lab = smooth(ve.probs, det, "none")
    out["shipped model, per frame"] = score(base_lab, truth, test, fps)
    out[f"shipped model + {DEFAULT_SMOOTHING} (ferlib predict default)"] = score(
        smooth(ve.probs, det, DEFAULT_SMOOTHING), truth, test, fps)
    out["shipped model + window vote"] = score(smooth(ve.probs, det, "vote"), truth, test, fps)

    # personal head: ferlib.training.personal's default adaptation on the training blocks' frames
    rows = np.cumsum(det) - 1  # frame -> row of ve.inputs
    tr = rows[train & det]
    _, model, _card = read_checkpoint(base)
    data = TensorSet({k: v[torch.as_tensor(tr)] for k, v in ve.inputs.items()}, torch.as_tensor(truth[train & det]),
                     ve.spec)
    t0 = time.monotonic()
    report = adapt_model(model, data, classes, AdaptConfig())
    timings["personal_head_s"] = round(time.monotonic() - t0, 2)
    pp = np.full_like(ve.probs, np.nan)
    pp[det] = model_probs(model, ve.inputs, ve.spec, flip)
    out[f"personal head ({report['method']}), per frame"] = score(smooth(pp, det, "none"), truth, test, fps)
    out[f"personal head + {DEFAULT_SMOOTHING}"] = score(smooth(pp, det, DEFAULT_SMOOTHING), truth, test, fps)
    out["personal head + window vote"] = score(smooth(pp, det, "vote"), truth, test, fps)

    # sequence models: trained on runs of consecutive training frames with a face
    seqs = [(ve.embeddings[r], truth[r]) for r in runs(train & det)]
    emb = ve.embeddings[det]
    params = {}
    for w in windows_list:
        per_seed = []
        for seed in seeds:
            cfg = SequenceConfig(**{**seq_config.to_dict(), "window": w, "seed": seed})
            t0 = time.monotonic()
            seq, rep = train_sequence_model(seqs, classes, cfg)
            timings[f"sequence_T{w}_seed{seed}_s"] = round(time.monotonic() - t0, 2)
            params[w] = n_parameters(seq)
            lab = np.full(len(det), -1)
            lab[det] = predict_causal(seq, emb).argmax(1)
            per_seed.append(score(lab, truth, test, fps))
        name = f"sequence model, T={w}" + (" (no temporal context)" if w == 1 else "")
        out[name] = {k: round(float(np.mean([r[k] for r in per_seed])), 4) for k in ("accuracy", "flips_per_s", "flips")}
        out[name]["per_seed"] = per_seed
    return {"train_frames": int(train.sum()), "test_frames": int(test.sum()), "test_chunks": len(runs(test)),
            "methods": out, "timings": timings, "sequence_parameters": params}


def markdown(res: dict) -> str:
    names = list(res["folds"][0]["methods"])
    f0, f1 = res["folds"]
    lines = [f"# Short-sequence model vs EMA and the window vote, {res['date']}", "",
             f"Command: `{res['command']}`", "",
             f"Clip `{res['clip']}` ({res['frames']} frames, {res['fps']:.2f} fps, faces found in "
             f"{res['faces_found']:.0%} of frames); base `{res['base']}`; sad 0-9 s, happy from 11 s, 9-11 s not "
             f"scored; {res['chunk_s']:g} s blocks alternating train/test per emotion, the first {res['gap_s']:g} s of "
             f"each block left out; two folds (even / odd blocks train). Test: fold 0 {f0['test_frames']} frames in "
             f"{f0['test_chunks']} chunks, fold 1 {f1['test_frames']} frames in {f1['test_chunks']} chunks.", "",
             "**One person, one recording, a handful of chunks: a rough figure, not a general result.**", "",
             "| method | accuracy fold 0 | accuracy fold 1 | **accuracy mean** | flips/s fold 0 | flips/s fold 1 "
             "| **flips/s mean** |", "|---|---|---|---|---|---|---|"]
    for n in names:
        a = [f["methods"][n]["accuracy"] for f in res["folds"]]
        fl = [f["methods"][n]["flips_per_s"] for f in res["folds"]]
        lines.append(f"| {n} | {a[0]:.3f} | {a[1]:.3f} | **{np.mean(a):.3f}** | {fl[0]:.2f} | {fl[1]:.2f} | "
                     f"**{np.mean(fl):.2f}** |")
    t = res["folds"][0]["timings"]
    seq_t = [v for k, v in t.items() if k.startswith("sequence_")]
    lines += ["", f"Sequence model: {res['sequence_config']} ({', '.join(f'T={w}: {p} parameters' for w, p in res['folds'][0]['sequence_parameters'].items())}). "
              f"Sequence model figures: mean over training seeds {res['seeds']} (per seed in the .json). "
              f"Training time, fold 0: personal head {t['personal_head_s']:.1f} s (embeddings of augmented copies "
              f"included), each sequence model {min(seq_t):.1f}-{max(seq_t):.1f} s; front end on the whole clip {res['front_end_s']:.1f} s (one core)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=str(CLIP))
    ap.add_argument("--base", default=DEFAULT_BASE)
    ap.add_argument("--chunk-s", type=float, default=2.0)
    ap.add_argument("--gap-s", type=float, default=0.75)
    ap.add_argument("--windows", default="1,8,16", help="sequence model windows (frames), comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="sequence model training seeds (figures are their mean)")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    windows_list = [int(w) for w in args.windows.split(",") if w.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    t0 = time.monotonic()
    ve = video_embeddings(args.clip, args.base)
    front_end_s = time.monotonic() - t0
    if args.gap_s * ve.fps < max(windows_list) - 1:
        print(f"note: a gap of {args.gap_s} s is shorter than the longest window: test windows may hold training "
              "frames", file=sys.stderr)
    emotion, block, in_gap = blocks(ve.t_s, args.chunk_s, args.gap_s)
    index = {c: i for i, c in enumerate(ve.classes)}
    truth = np.array([index.get(e, -1) for e in emotion])
    _, card = load_checkpoint(resolve_checkpoint(args.base))
    flip = card_tta_flip(card)
    cfg = SequenceConfig()
    folds = []
    for fold in (0, 1):
        train, test = split(emotion, block, in_gap, fold)
        folds.append({"fold": fold, **run_fold(ve, truth, train, test, windows_list, seeds, cfg, args.base, flip)})
        print(json.dumps(folds[-1]), flush=True)
    res = {"date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/sequence_protocol.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "clip": str(Path(args.clip).resolve().relative_to(ROOT)) if Path(args.clip).resolve().is_relative_to(ROOT)
           else args.clip,
           "base": args.base, "frames": len(ve.frame), "fps": ve.fps, "faces_found": float(ve.detected.mean()),
           "chunk_s": args.chunk_s, "gap_s": args.gap_s, "front_end_s": round(front_end_s, 1),
           "sequence_config": cfg.to_dict(), "seeds": seeds, "folds": folds}
    names = list(folds[0]["methods"])
    res["mean"] = {n: {k: round(float(np.mean([f["methods"][n][k] for f in folds])), 4)
                       for k in ("accuracy", "flips_per_s")} for n in names}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
