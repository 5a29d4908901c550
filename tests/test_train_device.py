"""The training device option (TrainConfig.device, --device): validation, "auto" resolution, the
device helpers on the CPU, CPU training unchanged by the option (pinned from the code before it),
the resolved device in run folders and cards, scripts/gpu_train.py's pack, run and assembly on the CPU, and the
GPU recipe's SGD and one-cycle schedule."""
from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import ferlib.training.evaluate
import ferlib.training.train
from ferlib.classes import CLASSES
from ferlib.cli import build_parser, main
from ferlib.errors import InputError
from ferlib.faces.normalize import canonical_face
from ferlib.inference.checkpoint import make_card, read_checkpoint, save_checkpoint
from ferlib.inputs import InputSpec, TensorSet, spec_for_model
from ferlib.models import create_model, list_models
from ferlib.training.device import autocast, model_device, resolve_device, to_device
from ferlib.training.evaluate import predict_outputs
from ferlib.training.train import TrainConfig, _on_device, finetune, train
from tests.helpers import ROOT
from tests.test_ferplus import make_ferplus, zip_folder
from webapp import jobs

HAS_CUDA = torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="on a CUDA machine 'auto' trains on the GPU")

# Computed with the code before the device option (commit 5cb2555), 1 torch thread:
# sha256 of the state dict after `_tiny_run(name)`, and the epochs' training losses.
PINNED = {
    "image": ("f34fc76f8881fa481e69503eef1886b20ed5c9fc4cfc48dfd1fe117696a57340",
              [1.177706281344096, 1.1190273364384968]),
    "landmarks": ("25a3d53c3a5b1b8f51101ecd67e5499e4b70afca7b0baa6591ef5fd24b4076b6",
                  [0.9636858503023783, 0.9518732031186422]),
}
# Bit-exact weights are only promised for the same torch build and CPU kernels as the pin's.
PINNED_PLATFORM = ("2.13.0+cpu", "AVX2")


# ----------------------------------------------------------------------------- tiny runs
def image_set(n: int, seed: int) -> TensorSet:
    """3 classes told apart by which third of a 24x24 image is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    img = torch.randn(n, 1, 24, 24, generator=g) * 0.5
    for c in range(3):
        img[y == c, :, :, 8 * c:8 * (c + 1)] += 1.5
    return TensorSet({"image": img}, y, InputSpec(kind="image", image_size=24))


def landmark_set(n: int, seed: int) -> TensorSet:
    """3 classes told apart by the height of the first 20 landmarks of the default subset."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    lm = torch.rand(n, 3, 102, generator=g) * 0.5
    lm[:, 1, :20] += 0.3 * y[:, None].float()
    return TensorSet({"landmarks": lm}, y, InputSpec(kind="landmarks"))


RUNS = {  # name: (model factory, data factory, TrainConfig options); augmentation on in both
    "image": (lambda: create_model("resnet18_attention", num_classes=3, width=4), image_set,
              dict(tta_flip=True, optimizer="adamw", schedule="cosine", label_smoothing=0.1)),
    "landmarks": (lambda: create_model("landmark_cnn1d", num_classes=3), landmark_set,
                  dict(weighted_sampler=True, dropout=0.2)),
}


def _tiny_run(name: str, **extra):
    """(model, result) of 2 seeded epochs of a tiny model on synthetic data, 1 thread."""
    make, data, kw = RUNS[name]
    torch.manual_seed(0)
    model = make()
    config = TrainConfig(epochs=2, batch_size=16, patience=0, augment=True, num_threads=1, seed=3, **kw, **extra)
    return model, train(model, data(48, 1), data(24, 2), config)


def _digest(model) -> str:
    """sha256 of a model's state dict (names and raw bytes, sorted by name)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- config and resolution
def test_train_config_device_is_validated_and_old_configs_load():
    assert TrainConfig().device == "auto"
    with pytest.raises(InputError, match="device must be one of"):
        TrainConfig(device="gpu")
    old = TrainConfig().to_dict()
    del old["device"]  # a card written before the option
    assert TrainConfig.from_dict(old).device == "auto"
    assert TrainConfig.from_dict(TrainConfig(device="cpu").to_dict()).device == "cpu"


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(InputError, match="not one of"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
    assert TrainConfig().resolved().device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="sees no CUDA GPU.*--device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        TrainConfig(device="cuda").resolved()


def test_cuda_without_a_gpu_fails_before_training_and_leaves_the_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = create_model("landmark_cnn1d", num_classes=3)
    before = _digest(model)
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        train(model, landmark_set(8, 0), landmark_set(4, 1), TrainConfig(epochs=1, batch_size=4, device="cuda"))
    assert _digest(model) == before and model_device(model).type == "cpu"


# ----------------------------------------------------------------------------- helpers on the CPU
def test_device_helpers_are_no_ops_on_the_cpu():
    batch = {"image": torch.randn(2, 1, 8, 8), "stratum": torch.tensor([0, 1])}
    moved = to_device(batch, torch.device("cpu"))
    assert all(moved[k] is batch[k] for k in batch), "no copies on the CPU"
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    data = landmark_set(4, 0)
    assert _on_device(data, torch.device("cpu")) is data
    assert model_device(create_model("landmark_cnn1d", num_classes=3)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # a CPU-only torch disables it, as expected
def test_autocast_on_cuda_is_bf16():
    ctx = autocast("cuda")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def test_predict_outputs_gives_cpu_float32_from_low_precision_outputs():
    model = create_model("landmark_cnn1d", num_classes=3).eval()
    data = landmark_set(10, 0)
    want = predict_outputs(model, data, batch_size=4)
    forward = model.forward
    model.forward = lambda batch: forward(batch).to(torch.bfloat16)  # what autocast hands back on CUDA
    got = predict_outputs(model, data, batch_size=4, tta_flip=True)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == want.shape
    assert torch.allclose(got.sum(1), torch.ones(10), atol=1e-2)


def _bf16_cpu_autocast(device):
    """CPU bf16 autocast standing in for CUDA's: the same low-precision outputs reach the losses,
    the validation and the models' own code."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


SMALL_KW = {"resnet18_attention": {"width": 4}, "image_cnn": {"width": 8}, "hybrid_heatmap": {"width": 8},
            "hybrid_fusion": {"width": 8}, "keypoint_regressor": {"width": 8}, "distance_mlp": {"n_strata": 2}}


def _model_data(name: str, n: int = 8) -> tuple:
    """(model, TensorSet) of a registered model on n synthetic faces (landmarks, crops, strata)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = create_model(name, **SMALL_KW.get(name, {}))
    spec = spec_for_model(model, **({"clarity_edges": (50.0,)} if name == "distance_mlp" else {}))
    lm = ((canonical_face() * 80 + np.array([200, 220, 0]))[None] + rng.normal(0, 2, (n, 478, 3))).astype(np.float32)
    labels = (rng.uniform(0, 1, (n, 4, 2)).astype(np.float32) if model.task == "keypoints"
              else np.arange(n) % model.num_classes)
    data = TensorSet.build(spec, labels, landmarks_px=lm, crops=rng.integers(0, 255, (n, 48, 48), dtype=np.uint8),
                           stratum=np.arange(n) % 2)
    return model, data


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_and_validates_under_bf16_autocast(name, monkeypatch):
    monkeypatch.setattr(ferlib.training.train, "autocast", _bf16_cpu_autocast)
    monkeypatch.setattr(ferlib.training.evaluate, "autocast", _bf16_cpu_autocast)
    model, data = _model_data(name)
    result = train(model, data, data, TrainConfig(epochs=1, batch_size=4, tta_flip=model.task == "classification",
                                                  num_threads=1, device="cpu"))
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.history[0]["val_loss"])
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


# ----------------------------------------------------------------------------- CPU results unchanged
@needs_no_cuda
@pytest.mark.parametrize("name", sorted(RUNS))
def test_cpu_and_auto_train_identical_weights(name):
    cpu_model, cpu_result = _tiny_run(name, device="cpu")
    auto_model, auto_result = _tiny_run(name)
    assert cpu_result.device == auto_result.device == "cpu"
    for k, v in cpu_model.state_dict().items():
        assert torch.equal(v, auto_model.state_dict()[k]), k
    untimed = lambda history: [{k: v for k, v in h.items() if k != "elapsed_s"} for h in history]  # noqa: E731
    assert untimed(cpu_result.history) == untimed(auto_result.history)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_cpu_training_is_unchanged_by_the_device_option(name):
    torch.set_num_threads(1)
    digest, losses = PINNED[name]
    model, result = _tiny_run(name, device="cpu")
    assert [h["train_loss"] for h in result.history] == pytest.approx(losses, rel=1e-4), \
        "CPU training draws or computes differently from before the device option"
    if (torch.__version__, torch.backends.cpu.get_cpu_capability()) == PINNED_PLATFORM:
        assert _digest(model) == digest, "CPU weights differ from those of the code before the device option"


# ----------------------------------------------------------------------------- device in run folder and cards
def test_resolved_device_in_run_folder_result_and_finetuned_card(tmp_path):
    used = resolve_device("auto")
    model = create_model("landmark_cnn1d", num_classes=3)
    result = train(model, landmark_set(16, 0), landmark_set(8, 1), TrainConfig(epochs=1, batch_size=8),
                   run_dir=tmp_path / "run")
    assert result.device == used and model_device(model).type == "cpu", "the model ends on the CPU"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["device"] == used
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["device"] == used
    _, card_path = save_checkpoint(model, tmp_path / "m", make_card(model, ["angry", "happy", "sad"],
                                                                     InputSpec(kind="landmarks")))
    _, card, ft = finetune(card_path, landmark_set(16, 2), landmark_set(8, 3), TrainConfig(epochs=1, batch_size=8))
    assert card["training"]["config"]["device"] == used == ft.device


def test_cli_device_option():
    ap = build_parser()
    base = ["--data", "d", "--out", "o"]
    assert ap.parse_args(["train", "--model", "landmark_cnn1d", *base]).device == "auto"
    assert ap.parse_args(["train", "--model", "landmark_cnn1d", *base, "--device", "cpu"]).device == "cpu"
    assert ap.parse_args(["finetune", "ckpt", *base, "--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        ap.parse_args(["train", "--model", "landmark_cnn1d", *base, "--device", "gpu"])


def test_cli_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["train", "--model", "landmark_cnn1d", "--data", str(tmp_path / "none"), "--out",
               str(tmp_path / "m"), "--device", "cuda"])
    assert rc == 2 and "sees no CUDA GPU" in capsys.readouterr().err


def test_train_page_shows_the_run_device(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "data"))
    job = jobs.TrainJob(run_id=987654, spec=jobs.TrainSpec(name="x", session_ids=[]), status="done",
                        device="cuda")
    monkeypatch.setitem(jobs._JOBS, job.run_id, job)
    at = AppTest.from_file(str(ROOT / "pages" / "Train.py"), default_timeout=60)
    at.session_state["train_run"] = job.run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [c.value for c in at.caption if c.value.startswith("Device")] == ["Device: cuda"]


# ----------------------------------------------------------------------------- scripts/gpu_train.py
def _gpu_train():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "scripts" / "gpu_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_train_mosaic_round_trip():
    gt = _gpu_train()
    yy, xx = np.mgrid[0:48, 0:48]
    crops = np.stack([((xx * (i % 5 + 1) + yy * (i % 3)) % 256).astype(np.uint8) for i in range(70)])
    blob, psnr = gt.encode_mosaic(crops, quality=95)
    back = gt.decode_mosaic(blob, 70, 48)
    assert back.shape == crops.shape and back.dtype == np.uint8
    assert psnr > 35 and np.abs(back.astype(int) - crops).mean() < 2
    with pytest.raises(InputError, match="holds"):
        gt.decode_mosaic(blob, 64 * 2 + 1, 48)
    lossless, inf = gt.encode_mosaic(crops, quality=None)  # the validation crops travel as they are
    assert inf == float("inf") and np.array_equal(gt.decode_mosaic(lossless, 70, 48), crops)


def test_gpu_train_packs_trains_and_assembles_on_the_cpu(tmp_path, capsys, monkeypatch):
    """The three steps on a tiny FER+ layout: pack (the default's spec and eight classes, soft targets),
    a 1-epoch SGD/one-cycle run on the CPU whose weights leave in parts, and the join back into a
    checkpoint that reads and predicts as the trained model did."""
    gt = _gpu_train()
    src = zip_folder(make_ferplus(tmp_path / "src"), tmp_path / "ferplus.zip")
    pack = tmp_path / "pack.npz"
    assert gt.main(["--pack", "--source", str(src), "--data", str(pack)]) == 0
    assert "wrote" in capsys.readouterr().out
    meta, sets = gt.load_pack(pack)
    assert meta["classes"] == list(CLASSES) and meta["counts"] == {"train": 3, "val": 1}
    assert meta["data"]["names"] == ["ferplus.zip"] and meta["psnr_db"] > 20
    targets = sets["train"].targets
    assert targets is not None and targets.shape == (3, 8)
    assert torch.allclose(targets.sum(1), torch.ones(3))
    assert list(sets["train"].tensors["image"].shape) == [3, 1, 48, 48]
    out = tmp_path / "out"
    monkeypatch.setattr(gt, "PART_BYTES", 4000)  # several parts from a tiny model
    rc = gt.main(["--data", str(pack), "--out", str(out), "--device", "cpu", "--model-kw", '{"width": 4}',
                  "--epochs", "1", "--batch-size", "2"])
    assert rc == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    card = json.loads((out / "model.json").read_text())
    report = json.loads((out / "report.json").read_text())
    parts = sorted(out.glob("model.safetensors.part*"))
    assert len(parts) == len(report["parts"]) > 1 and all(p.stat().st_size <= 4000 for p in parts)
    assert card["training"]["config"]["optimizer"] == "sgd" and card["training"]["config"]["schedule"] == "onecycle"
    assert card["training"]["epochs_run"] == 1 and card["data"]["names"] == ["ferplus.zip"]
    wpath, cpath = gt.assemble(out, tmp_path / "ck" / "gpu")
    _, model, card2 = read_checkpoint(cpath)
    assert card2["classes"] == list(CLASSES) and card2["weights_file"] == wpath.name
    probs = predict_outputs(model, sets["val"])
    assert probs.shape == (1, 8) and torch.allclose(probs.sum(1), torch.ones(1), atol=1e-5)
    parts[-1].unlink()
    with pytest.raises(InputError, match="sha256"):
        gt.assemble(out, tmp_path / "ck" / "gpu2")


def test_onecycle_schedule_and_sgd():
    f = ferlib.training.train._lr_factor
    assert f("onecycle", 0, 100) == pytest.approx(0.04)
    assert f("onecycle", 30, 100) == pytest.approx(1.0)
    assert f("onecycle", 100, 100) == pytest.approx(1e-4)
    assert f("onecycle", 15, 100) < f("onecycle", 29, 100) and f("onecycle", 60, 100) > f("onecycle", 90, 100)
    opt = ferlib.training.train._optimizer(TrainConfig(optimizer="sgd", lr=0.1, weight_decay=5e-4),
                                           [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_gpu_train_refuses_missing_copy_and_cuda_without_gpu(tmp_path, capsys, monkeypatch):
    gt = _gpu_train()
    assert gt.main(["--data", str(tmp_path / "none.npz"), "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "--pack" in capsys.readouterr().err
    assert gt.main(["--data", str(tmp_path / "none.npz"), "--device", "cpu"]) == 2
    assert "--out is needed" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gt.main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
