"""Write models/<name>.md, a human-readable model card, from each shipped checkpoint's JSON card.

    .venv/bin/python scripts/write_model_cards.py

The JSON card (written by training) is the source of truth; this only renders it.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ferlib.faces.crops import FRONTAL_MIN_YAW  # noqa: E402
from ferlib.fsutil import atomic_write_bytes  # noqa: E402
from ferlib.inference.checkpoint import load_checkpoint  # noqa: E402
from ferlib.inference.pipeline import FRONTAL_MAX_FACES, shipped_models  # noqa: E402
from ferlib.models import count_parameters  # noqa: E402


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f} %"


TEST_SPLITS = {"fer2013": "FER2013 PrivateTest, the official test split as it is",
               "ferplus": "FER+ Test (= FER2013 PrivateTest) under its majority labels, images without one left out",
               "ckplus": "CK+ test subjects (subject split, seed 0)",
               "affectnet": "none (AffectNet has no test split here: its held-out crops are in docs/results.md)"}


def test_heading(data: dict) -> str:
    """What the card's test metrics are computed on, from its datasets."""
    kinds = [d.get("kind") for d in data.get("datasets", []) if d.get("use") == "splits"]
    parts = [TEST_SPLITS[k] for k in dict.fromkeys(kinds) if k in TEST_SPLITS and k != "affectnet"]
    if not parts:
        return "the data's test split"
    return parts[0] if len(parts) == 1 else "the test splits together: " + "; ".join(parts)


def targets_text(card: dict) -> str:
    """Soft or hard targets, class balance and classes, from the training config and data."""
    cfg = card.get("training", {}).get("config", {})
    kinds = {d.get("kind") for d in card.get("data", {}).get("datasets", [])}
    soft = cfg.get("soft_targets", True) and "ferplus" in kinds
    targets = ("soft: FER+ images learn their taggers' vote distribution (single votes dropped), the other "
               "datasets' images their one-hot label" if soft else "hard: one label per image")
    if cfg.get("class_weights", True):
        p = cfg.get("class_weight_power", 1.0)
        balance = (f"class-weighted loss, weights = inverse class frequency ** {p} (mean 1)"
                   + ("; frequency = summed target mass" if soft else ""))
    else:
        balance = "none (plain cross-entropy)"
    return (f"- targets: {targets}\n- class balance: {balance}"
            f"{'; weighted sampler' if cfg.get('weighted_sampler') else ''}\n"
            f"- classes ({len(card['classes'])}): {', '.join(card['classes'])}")


def lineage(card: dict) -> str | None:
    """Where the weights started, newest step first: the chain of `finetuned_from` / `widened_from`
    entries the training step of each card records (None for a model trained from scratch)."""
    steps, tr = [], card.get("training", {})
    while True:
        step = next(((verb, tr[key]) for key, verb in (("finetuned_from", "fine-tuned from"),
                                                       ("widened_from", "widened (scripts/widen_model.py) from"))
                     if isinstance(tr.get(key), dict)), None)
        if step is None:
            break
        verb, base = step
        kw = base.get("model", {}).get("kwargs", {})
        size = f", width {kw['width']}" if "width" in kw else ""
        steps.append(f"{verb} `{base.get('model', {}).get('name', '?')}` ({len(base.get('classes', []))} classes"
                     f"{size}, weights sha256 `{str(base.get('weights_sha256', '?'))[:12]}...`)")
        tr = base.get("training", {})
    return " <- ".join(steps) or None


def render(name: str, model, card: dict, expert_for: str | None = None) -> str:
    inp, tr, data, met = card["input"], card.get("training", {}), card.get("data", {}), card.get("metrics", {})
    test = met.get("test") or {}
    val = met.get("val") or {}
    best = met.get("val_at_best_epoch") or {}
    cfg = tr.get("config", {})
    lines = [f"# {name}", "",
             f"`{card['model']['name']}` ({count_parameters(model):,} parameters), kwargs "
             f"`{card['model'].get('kwargs', {})}`.", "",
             "## Intended use", "",
             "Facial expression classification of one face at a time, as the default or a base model for "
             "fine-tuning on a person's own recordings (Studio -> Train). Trained on posed and in-the-wild "
             "research datasets of mostly frontal faces; it is not a measure of anyone's inner state.", "",
             *([f"In `ferlib predict` and Live, faces turned {FRONTAL_MIN_YAW:.0f} degrees or more (in images and "
                f"frames of at most {FRONTAL_MAX_FACES} faces) are frontalised and read by `{card['turned_expert']}` "
                "(the card's `turned_expert`; docs/results.md, \"Turned heads\").", ""]
               if card.get("turned_expert") else []),
             *([f"It is the `turned_expert` of `{expert_for}`: fine-tuned with 3-D turned, frontalised crops of the "
                "training images (scripts/make_turned_train.py), it reads the faces that model hands over, "
                f"frontalised (turned {FRONTAL_MIN_YAW:.0f} degrees or more); on frontal faces the other model reads "
                "better (docs/results.md, \"Turned heads\").", ""] if expert_for else []),
             "## Input", "",
             f"- classes, in output order: {', '.join(card['classes'])}",
             f"- kind: {inp['kind']}; keys: {', '.join(inp['keys'])}"]
    if inp["kind"] in ("landmarks", "hybrid", "distances"):
        lines.append(f"- landmarks: MediaPipe face mesh (478 points), normalisation `{inp['method']}`, "
                     f"subset `{inp['subset']}`")
    if "canonical_face_sha256" in card:
        lines.append(f"- canonical face sha256: `{card['canonical_face_sha256'][:16]}...`")
    if "image" in inp["keys"]:
        lines.append(f"- image: grey {inp['image_size']}x{inp['image_size']} face crop, "
                     f"(x/255 - {inp['mean']}) / {inp['std']}")
        if sigma := card["model"].get("kwargs", {}).get("eval_blur"):
            lines.append(f"- read blurred in eval mode (Gaussian, sigma {sigma} px; `eval_blur`, chosen on validation "
                         "by scripts/fit_eval_blur.py): the training augmentation resampled every crop it saw")
    lines += ["", "## Data and split", ""]
    for k, v in data.items():
        lines.append(f"- {k}: `{v}`")
    lines += ["", "## Training", "", f"- command: `{tr.get('command', 'n/a')}`"]
    if steps := lineage(card):
        lines.append(f"- lineage: {steps}")
    if tr.get("note"):
        lines.append(f"- note: {tr['note']}")
    for k in ("epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "class_weights",
              "class_weight_power", "soft_targets", "label_smoothing", "weighted_sampler", "augment", "tta_flip",
              "patience", "monitor", "seed"):
        if k in cfg:
            lines.append(f"- {k}: {cfg[k]}")
    for k in ("epochs_run", "best_epoch", "elapsed_s"):
        if k in tr:
            lines.append(f"- {k}: {tr[k]}")
    lines += ["", "## Targets and class balance", "", targets_text(card), "",
              f"## Metrics ({test_heading(data)})", ""]
    if test:
        lines += ["| metric | value |", "|---|---|",
                  f"| accuracy, missed faces counted as wrong (headline) | {pct(test.get('accuracy_all'))} |",
                  f"| face-detection rate (MediaPipe) | {pct(test.get('detection_rate'))} |",
                  f"| accuracy on detected faces | {pct(test.get('accuracy'))} |",
                  f"| macro F1, misses wrong | {pct(test.get('macro_f1_all'))} |",
                  f"| validation accuracy, misses wrong | {pct(val.get('accuracy_all'))} |",
                  f"| validation accuracy on detected faces, best epoch | {pct(best.get('val_acc'))} |",
                  ""]
        per = test.get("per_class") or {}
        if per:
            lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            lines += [f"| {c} | {pct(v['precision'])} | {pct(v['recall'])} | {pct(v['f1'])} | {v['support']} |"
                      for c, v in per.items()]
    else:
        lines.append("No test metrics recorded.")
    if met.get("eval_blur_note"):
        lines += ["", f"Note: {met['eval_blur_note']}."]
    kinds = {d.get("kind") for d in data.get("datasets", [])}
    first = ("- FER+ gives FER2013's 48x48 grey, mostly frontal faces 10 taggers' votes each; disgust (116 train "
             "images with a majority) and contempt (120) stay rare, and contempt is read poorly. Figures on held-out "
             "posed faces and head turns, per class, through `ferlib predict`: docs/results.md."
             if "ferplus" in kinds else
             "- FER2013 is 48x48 grey, mostly frontal, with label noise (588 groups of identical images with "
             "conflicting labels); disgust has few examples and the lowest recall.")
    lines += ["", "## Limitations", "", first,
              "- Landmark models need MediaPipe to find the face: a missed face is a wrong answer in the "
              "headline figure above.",
              "- Fine-tune on your own recordings for your face, lighting and camera."]
    return "\n".join(lines) + "\n"


def main() -> None:
    loaded = {cpath: load_checkpoint(cpath) for cpath in shipped_models()}
    expert_for = {card["turned_expert"]: cpath.stem for cpath, (_, card) in loaded.items() if card.get("turned_expert")}
    for cpath, (model, card) in loaded.items():
        out = cpath.with_suffix(".md")
        atomic_write_bytes(out, render(cpath.stem, model, card, expert_for.get(cpath.stem)).encode())
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
