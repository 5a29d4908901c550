"""One parametrised test over every registered model: forward, backward, save/load round trip; the eval blur
of the image classifiers and scripts/fit_eval_blur.py."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from ferlib.classes import CLASSES, FER7
from ferlib.errors import InputError
from ferlib.inference.checkpoint import load_checkpoint, make_card, save_checkpoint
from ferlib.inputs import build_batch, spec_for_model
from ferlib.models import count_parameters, create_model, list_models
from ferlib.models.blocks import EvalBlur
from tests.helpers import ROOT

VARIANTS = [("hybrid_heatmap", {"patches": True, "heatmap_channels": 10}),  # one per iris point
            ("distance_mlp", {"n_strata": 3, "num_features": 45}),
            ("resnet18_attention", {"width": 16})]
SPEC_OVERRIDES = {"hybrid_heatmap": {"heatmap_subset": "irises"}, "distance_mlp": {"clarity_edges": (10.0, 100.0)}}
CASES = [(name, {}) for name in list_models()] + VARIANTS
SMALL_ENOUGH = {"landmark_cnn1d": 1_000_000, "image_cnn": 1_000_000}


def synthetic_batch(model, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hp = model.hparams
    shapes = {"landmarks": (n, 3, hp.get("num_points", 102)), "image": (n, 1, 48, 48),
              "heatmaps": (n, hp.get("heatmap_channels", 1), 48, 48), "patches": (n, 3, 24, 24),
              "distances": (n, hp.get("num_features", 0))}
    batch = {k: torch.rand(shapes[k], generator=g) for k in model.input_keys if k != "stratum"}
    if "stratum" in model.input_keys:
        batch["stratum"] = torch.tensor([0, 1, 2, 2])[:n]
    return batch


def test_every_registered_model_is_covered():
    assert {"landmark_cnn1d", "image_cnn", "resnet18_attention", "hybrid_heatmap", "hybrid_fusion",
            "distance_mlp", "keypoint_regressor"} <= set(list_models())


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}{'-' + '-'.join(kw) if kw else ''}" for n, kw in CASES])
def test_model_forward_backward_roundtrip(name, kwargs, tmp_path, record_property):
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(FER7), **kwargs)
    n_params = count_parameters(model)
    record_property("params", n_params)
    print(f"{name} {kwargs}: {n_params} parameters")
    if name in SMALL_ENOUGH and not kwargs:
        assert n_params < SMALL_ENOUGH[name]
    batch = synthetic_batch(model)
    model.train()
    out = model(batch)
    expected = (4, model.hparams["num_keypoints"], 2) if model.task == "keypoints" else (4, len(FER7))
    assert tuple(out.shape) == expected
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # backbone / head split covers every parameter exactly once
    assert len(model.backbone_parameters()) + len(list(model.head.parameters())) == len(list(model.parameters()))

    model.eval()
    with torch.no_grad():
        before = model(batch)
    classes = [] if model.task == "keypoints" else FER7
    spec = spec_for_model(model, **(SPEC_OVERRIDES.get(name, {}) if kwargs else {}))
    save_checkpoint(model, tmp_path / name, make_card(model, classes, spec))
    loaded, card = load_checkpoint(tmp_path / f"{name}.safetensors")
    assert type(loaded) is type(model) and card["model"]["name"] == name
    with torch.no_grad():
        after = loaded(batch)
    assert torch.equal(before, after)


def test_missing_batch_key_is_a_clear_error():
    model = create_model("image_cnn")
    with pytest.raises(InputError, match="image"):
        model({"landmarks": torch.zeros(2, 3, 102)})


def test_unknown_model_and_bad_kwargs():
    with pytest.raises(InputError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(InputError, match="bad arguments"):
        create_model("image_cnn", colour=True)


def test_replace_head_keeps_backbone():
    torch.manual_seed(0)
    model = create_model("landmark_cnn1d", num_classes=7)
    backbone = [p.clone() for p in model.backbone_parameters()]
    model.replace_head(3)
    assert model.num_classes == 3 and model.head.out_features == 3
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.backbone_parameters()))
    assert model({"landmarks": torch.rand(2, 3, 102)}).shape == (2, 3)


@pytest.mark.parametrize("name", [n for n in list_models() if n != "keypoint_regressor"])
def test_build_batch_feeds_every_classifier(name):
    """The inputs build_batch makes from real-shaped landmarks and crops fit each model."""
    from tests.helpers import faces_px

    model = create_model(name).eval()
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    batch = build_batch(spec_for_model(model), faces_px(3), crops)
    with torch.no_grad():
        assert model(batch).shape == (3, len(FER7))
    assert set(batch) == set(model.input_keys)


IMAGE_CLASSIFIERS = ["image_cnn", "resnet18_attention", "hybrid_fusion", "hybrid_heatmap"]


def test_eval_blur_is_a_gaussian_in_eval_mode_only():
    """EvalBlur: the identity at sigma 0 and in training; in eval mode a separable Gaussian with
    replicated edges, the same as OpenCV's (an independent reference); outside the state dict."""
    x = torch.rand(3, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    blur = EvalBlur(0.5).eval()
    ref = np.stack([cv2.GaussianBlur(im[0], (5, 5), 0.5, borderType=cv2.BORDER_REPLICATE) for im in x.numpy()])
    np.testing.assert_allclose(blur(x)[:, 0].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(blur.train()(x), x) and torch.equal(EvalBlur(0.0).eval()(x), x)
    assert not blur.state_dict()
    with pytest.raises(InputError, match="eval_blur"):
        EvalBlur(-1.0)


@pytest.mark.parametrize("name", IMAGE_CLASSIFIERS)
def test_image_classifiers_take_eval_blur(name, tmp_path):
    """Every classifier that reads the grey face takes eval_blur: in its kwargs (so the card
    rebuilds it), the weights file unchanged, its image branch reading the blurred crop in eval mode."""
    plain = create_model(name, num_classes=3).eval()
    blurred_model = create_model(name, num_classes=3, eval_blur=0.5).eval()
    blurred_model.load_state_dict(plain.state_dict())  # the same weights, strict
    assert "eval_blur" not in plain.config()["kwargs"]
    assert blurred_model.config()["kwargs"]["eval_blur"] == 0.5
    batch = synthetic_batch(plain)
    with torch.no_grad():
        blurred = dict(batch, image=blurred_model.blur(batch["image"]))
        torch.testing.assert_close(blurred_model(batch), plain(blurred))
        assert not torch.allclose(blurred_model(batch), plain(batch))
    save_checkpoint(blurred_model, tmp_path / "m", make_card(blurred_model, FER7[:3], spec_for_model(blurred_model)))
    loaded, card = load_checkpoint(tmp_path / "m")
    assert card["model"]["kwargs"]["eval_blur"] == 0.5 and loaded.blur.sigma == 0.5


def clip_val_folder(folder):
    """A tiny class-folder validation set: frames of the committed Pexels clip (crying until about 9 s,
    laughing after 11 s), one every 80."""
    cap = cv2.VideoCapture(str(ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"))  # 24 fps
    for i in range(470):  # 472 frames
        ok, frame = cap.read()
        assert ok
        if i % 80 == 40:
            label = "sad" if i < 216 else "happy" if i > 264 else None
            if label:
                (folder / label).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / label / f"{i}.png"), frame)
    return folder


def test_fit_eval_blur_writes_the_chosen_sigma_into_the_card(tmp_path):
    """scripts/fit_eval_blur.py on a tiny checkpoint and a tiny folder read whole as validation (frames of the
    committed Pexels clip, crying and laughing): it scores each sigma, and --write puts the chosen one in the
    card's kwargs (with the fit's record) while the weights file stays byte for byte the same."""
    clip_val_folder(tmp_path / "val")
    model = create_model("resnet18_attention", num_classes=8, width=4).eval()
    spec = spec_for_model(model)
    wpath, cpath = save_checkpoint(model, tmp_path / "m", make_card(model, CLASSES, spec,
                                                                   training={"config": {"tta_flip": True}}))
    before = wpath.read_bytes()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fit_eval_blur.py"), str(cpath),
                          "--val-folder", str(tmp_path / "val"), "--grid", "0", "0.5",
                          "--report", str(tmp_path / "r.json"), "--write"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["sigma"] for r in report["grid"]] == [0.0, 0.5] and report["chosen"] in (0.0, 0.5)
    card = json.loads(cpath.read_text())
    assert card["model"]["kwargs"].get("eval_blur", 0.0) == report["chosen"]
    assert card["training"]["eval_blur"]["val_folders"] == ["val"] and "eval_blur_note" in card["metrics"]
    assert wpath.read_bytes() == before
    loaded, _ = load_checkpoint(cpath)
    assert loaded.blur.sigma == report["chosen"]


def test_average_weights_is_the_mean_of_float_tensors_and_keeps_the_first_models_counters():
    sys.path.insert(0, str(ROOT / "scripts"))
    from val_ensembles import average_weights
    a = create_model("resnet18_attention", num_classes=3, width=4)
    b = create_model("resnet18_attention", num_classes=3, width=4)
    with torch.no_grad():
        for value in b.state_dict().values():
            value.add_(1) if value.is_floating_point() else value.fill_(7)
    avg = average_weights([a, b], weights=[3, 1])
    assert avg.keys() == a.state_dict().keys()
    for key, value in a.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(avg[key], 0.75 * value + 0.25 * b.state_dict()[key])
        else:
            assert torch.equal(avg[key], value) and not torch.equal(avg[key], b.state_dict()[key])


def test_val_ensembles_of_one_model_twice_score_as_the_model(tmp_path):
    """scripts/val_ensembles.py on two copies of one tiny checkpoint: their ensemble and both weight averages
    compute exactly what the model computes, so every row of the report has the model's objective."""
    model = create_model("resnet18_attention", num_classes=8, width=4, eval_blur=0.5).eval()
    card = make_card(model, CLASSES, spec_for_model(model), training={"config": {"tta_flip": True}})
    paths = [str(save_checkpoint(model, tmp_path / name, card)[1]) for name in ("m1", "m2")]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "val_ensembles.py"), *paths,
                          "--val-folder", str(clip_val_folder(tmp_path / "val")), "--report", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["eval_blur"] == 0.5 and report["val_folders"] == ["val"]
    assert list(report["members_and_ensembles"]) == [*paths, " + ".join(paths)]
    assert [k.split(":")[0] for k in report["weight_averages"]] == ["uniform", "greedy"]
    one = report["members_and_ensembles"][paths[0]]["objective"]
    rows = [*report["members_and_ensembles"].values(), *report["weight_averages"].values()]
    assert all(abs(r["objective"] - one) < 1e-6 for r in rows)
