"""ferlib.inference.runtime: every runner gives PyTorch's outputs for every shipped model, the fast runner is
the default of Pipeline and `ferlib predict`, and evaluate takes any runner (an ONNX file too)."""
from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch

from ferlib.classes import FER7
from ferlib.cli import build_parser, main
from ferlib.errors import InputError, ModelFileError
from ferlib.inference import runtime
from ferlib.inference.checkpoint import card_spec, load_checkpoint, make_card, save_checkpoint
from ferlib.inference.export import PARITY_ATOL, example_batch
from ferlib.inference.pipeline import MODELS_DIR, Pipeline
from ferlib.inference.runtime import OnnxRunner, Runner, TorchRunner, TorchScriptRunner, load_runner, softmax
from ferlib.inputs import TensorSet, spec_for_model
from ferlib.models import create_model
from ferlib.training.evaluate import evaluate, occlusion_test

# One model's float32 outputs computed along different kernel paths (eager PyTorch, TorchScript,
# whose profiling executor switches to an optimised graph after the first calls, and ONNX Runtime;
# AVX2 / AVX-512 code on different x86 CPUs) differ by a few ulps of the values, not by a fixed
# amount: logits near 5 were 1.9e-6 (4 ulps) apart between two TorchScript calls on one machine.
# Tolerances are stated relative to the values and to the magnitude of the outputs (an element near
# zero carries the rounding of the larger terms summed into it), never as an absolute 1e-6.
OUTPUT_RTOL = 1e-5


def assert_outputs_close(got: np.ndarray, ref: np.ndarray, rtol: float = OUTPUT_RTOL, err_msg: str = "") -> None:
    """|got - ref| <= rtol * |ref| + rtol * max|ref| elementwise."""
    scale = float(np.max(np.abs(ref), initial=0.0))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


SHIPPED = sorted(p.stem for p in MODELS_DIR.glob("*.json") if p.with_suffix(".safetensors").is_file())
RUNNERS = {"onnx": OnnxRunner, "torchscript": TorchScriptRunner, "torch": TorchRunner}


def test_models_are_shipped():
    assert "resnet18_attention_fer2013_long" in SHIPPED and "keypoint_regressor_fer2013" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_runner_matches_pytorch_on_shipped_models(name):
    """Outputs (logits or points) and probabilities of every backend within 1e-4 of eager PyTorch."""
    model, card = load_checkpoint(MODELS_DIR / name)
    spec = card_spec(card)
    for backend, cls in RUNNERS.items():
        runner = load_runner(name, backend=backend)
        assert isinstance(runner, cls) and runner.backend == backend and runner.threads == 1
        assert runner.task == model.task and runner.input_keys == tuple(model.input_keys)
        assert runner.classes == tuple(card["classes"]) and runner.path == MODELS_DIR / f"{name}.json"
        for n, seed in ((1, 20), (6, 21), (19, 22)):  # 19: two ONNX Runtime chunks (max_batch 16)
            batch = example_batch(model, n, seed, spec)
            with torch.inference_mode():
                ref = model(batch).float().numpy()
            got = runner.outputs(batch)
            assert got.dtype == np.float32 and got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=PARITY_ATOL, rtol=1e-4, err_msg=f"{name} {backend} n={n}")
            if model.task == "classification":
                probs = runner(batch)
                np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(ref), 1).numpy(), atol=PARITY_ATOL)
                np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
            else:
                np.testing.assert_array_equal(runner(batch), got)
            # numpy inputs work as well as torch tensors
            assert_outputs_close(runner.outputs({k: v.numpy() for k, v in batch.items()}), got,
                                 err_msg=f"{name} {backend} n={n}: numpy inputs")


def test_pipeline_and_predict_use_the_fast_runner_by_default(tmp_path):
    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=7)
    stem = tmp_path / "tiny"
    save_checkpoint(m, stem, make_card(m, FER7, spec_for_model(m)))
    with Pipeline(stem, fallback_model=None) as pipe:
        assert pipe.backend == "onnx" and isinstance(pipe.runner, OnnxRunner) and pipe.runner.threads == 1
        assert pipe.model is pipe.runner
    with Pipeline(stem, fallback_model=None, backend="torch", threads=2) as pipe:
        assert isinstance(pipe.runner, TorchRunner) and pipe.runner.threads == 2
    args = build_parser().parse_args(["predict", "x.jpg", "--out", "x.csv"])
    assert (args.backend, args.threads) == ("auto", 1)
    args = build_parser().parse_args(["evaluate", "m", "--data", "d"])
    assert (args.backend, args.threads) == ("auto", 1)
    # the shipped default (an image model) and its Live/predict fallback run under ONNX Runtime too
    with Pipeline("landmark_cnn1d_fer2013") as pipe:
        assert pipe.backend == "onnx" and pipe.fallback is not None and pipe.fallback.backend == "onnx"


def test_auto_falls_back_to_torch_where_onnx_cannot_express_the_model():
    torch.manual_seed(0)
    m = create_model("distance_mlp", n_strata=2).eval()
    card = make_card(m, FER7, spec_for_model(m, clarity_edges=(60.0,)))
    r = load_runner((m, card))
    assert isinstance(r, TorchRunner) and "ONNX export of distance_mlp" in r.fallback_reason
    with pytest.raises(ModelFileError):
        load_runner((m, card), backend="onnx")


def test_torch_runners_set_their_thread_count():
    torch.manual_seed(0)
    m = create_model("landmark_cnn1d").eval()
    card = make_card(m, FER7, spec_for_model(m))
    batch = example_batch(m, 2)
    try:
        for backend in ("torch", "torchscript"):
            torch.set_num_threads(1)
            load_runner((m, card), backend=backend, threads=2)(batch)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_loading_a_runner_caps_blas_threads():
    from threadpoolctl import threadpool_info

    torch.manual_seed(0)
    m = create_model("landmark_cnn1d").eval()
    card = make_card(m, FER7, spec_for_model(m))
    np.linalg.inv(np.eye(3))  # numpy's OpenBLAS is loaded
    for threads in (2, 1):
        load_runner((m, card), backend="onnx", threads=threads)
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(n <= threads for n in blas), blas  # a cap (a single-threaded build stays at 1)


def test_load_runner_bad_inputs(tmp_path):
    m = create_model("landmark_cnn1d").eval()
    card = make_card(m, FER7, spec_for_model(m))
    with pytest.raises(InputError, match="backend must be"):
        load_runner((m, card), backend="tensorrt")
    with pytest.raises(InputError, match="threads must be"):
        load_runner((m, card), threads=0)
    with pytest.raises(InputError, match="cannot make a runner"):
        load_runner(42)
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "landmark_cnn1d_fer2013", "--format", "onnx", "--out", str(onnx_path)]) == 0
    with pytest.raises(InputError, match="onnx export"):
        load_runner(onnx_path, backend="torch")
    r = load_runner(onnx_path)
    assert isinstance(r, OnnxRunner) and r.classes == tuple(json.loads(
        (MODELS_DIR / "landmark_cnn1d_fer2013.json").read_text())["classes"])
    assert load_runner(r) is r and isinstance(r, Runner)
    with pytest.raises(InputError, match="keypoints model"):
        Pipeline("keypoint_regressor_fer2013")


def test_checkpoint_exports_are_reused_within_a_process(monkeypatch):
    import ferlib.inference.export

    load_runner("landmark_cnn1d_fer2013")  # exported (or already cached by an earlier test)
    calls = []
    real = ferlib.inference.export.export_onnx
    monkeypatch.setattr(ferlib.inference.export, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b = load_runner("landmark_cnn1d_fer2013"), load_runner("landmark_cnn1d_fer2013", threads=2)
    assert calls == [] and a.session is not b.session and b.threads == 2


def test_evaluate_takes_any_runner(tmp_path):
    """The same metrics from the torch model, its ONNX export (a file) and TorchScript runner."""
    model, card = load_checkpoint(MODELS_DIR / "landmark_cnn1d_fer2013")
    spec = card_spec(card)
    batch = example_batch(model, 40, 5, spec)
    labels = np.arange(40) % len(card["classes"])
    data = TensorSet(batch, labels, spec)
    onnx_path = tmp_path / "lm.onnx"
    assert main(["export", "landmark_cnn1d_fer2013", "--format", "onnx", "--out", str(onnx_path)]) == 0
    ref = evaluate(model, classes=card["classes"], data=data, tta_flip=True)
    for runner in (load_runner(onnx_path), load_runner("landmark_cnn1d_fer2013", backend="torchscript")):
        m = evaluate(runner, classes=card["classes"], data=data, tta_flip=True)
        assert m["confusion"] == ref["confusion"] and m["accuracy"] == pytest.approx(ref["accuracy"])
        occ, occ_ref = (occlusion_test(x, spec, data, "eyes") for x in (runner, model))
        assert occ == occ_ref


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]], atol=1e-7)
    assert runtime.BACKENDS[0] == "auto"


def test_freeze_heap_takes_the_objects_alive_now_out_of_collections():
    """ferlib predict and every Live/Studio stream call it once after loading (a full collection
    walking the loaded models stalled the Live worker about once a second)."""
    try:
        kept = [[i] for i in range(1000)]  # containers the collector tracks
        runtime.freeze_heap()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()


def test_a_cards_output_bias_shifts_every_runners_probabilities(tmp_path):
    torch.manual_seed(0)
    m = create_model("landmark_cnn1d").eval()
    spec = spec_for_model(m)
    card = make_card(m, FER7, spec)
    save_checkpoint(m, tmp_path / "plain", card)
    bias = [0.0, 1.5, 0.0, -0.5, 0.0, 0.0, 0.25]
    save_checkpoint(m, tmp_path / "biased", {**card, "output_bias": bias})
    batch = example_batch(m, 5, 3, spec)
    for backend in ("onnx", "torch"):
        plain = load_runner(tmp_path / "plain", backend=backend)
        biased = load_runner(tmp_path / "biased", backend=backend)
        np.testing.assert_allclose(biased.outputs(batch), plain.outputs(batch))  # the logits are the model's
        want = softmax(plain.outputs(batch) + np.array(bias, np.float32))
        np.testing.assert_allclose(biased(batch), want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(biased(batch), plain(batch))
    written = json.loads((tmp_path / "plain.json").read_text())
    for bad in ([1.0] * 6, [0.0] * 6 + [float("nan")], "0.5"):
        with pytest.raises(ModelFileError, match="output_bias"):  # refused when saved ...
            save_checkpoint(m, tmp_path / "bad", {**card, "output_bias": bad})
        (tmp_path / "plain.json").write_text(json.dumps({**written, "output_bias": bad}))
        with pytest.raises(ModelFileError, match="output_bias"):  # ... and when a card says so
            load_checkpoint(tmp_path / "plain")


def test_a_model_made_from_a_biased_one_drops_the_bias():
    from ferlib.inference.checkpoint import WEIGHT_BOUND_KEYS, base_of
    from ferlib.training.personal import AdaptConfig, personal_card

    m = create_model("landmark_cnn1d").eval()
    card = {**make_card(m, FER7, spec_for_model(m)), "model": m.config(), "weights_sha256": "x",
            "output_bias": [0.5] * 7,
            "output_bias_note": "fitted for these weights"}
    assert not set(WEIGHT_BOUND_KEYS) & set(base_of(card)) and base_of(card)["classes"] == list(FER7)
    assert "output_bias" not in personal_card(card, AdaptConfig(), {})
