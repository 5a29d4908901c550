"""Widening a trained resnet18_attention (Net2WiderNet): same function, more capacity, a checkpoint
`ferlib finetune` takes."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ferlib.inference.checkpoint import load_checkpoint
from ferlib.models import count_parameters, create_model
from ferlib.models.resnet import widen

ROOT = Path(__file__).resolve().parents[1]


def _trained_like(width=8, seed=0):
    """A small model whose batch-norm statistics and weights are not the initial ones."""
    torch.manual_seed(seed)
    m = create_model("resnet18_attention", num_classes=8, width=width)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.2)
    return m.eval()


@pytest.mark.parametrize("factor", [2, 3, 1.5])
def test_widen_keeps_the_function_and_adds_capacity(factor):
    m = _trained_like()
    w = widen(m, factor).eval()
    x = {"image": torch.randn(4, 1, 48, 48)}
    with torch.no_grad():
        torch.testing.assert_close(w(x), m(x), rtol=1e-4, atol=1e-4)
    assert w.hparams["width"] == 8 * factor and w.registry_name == "resnet18_attention"
    assert count_parameters(w) > 0.9 * factor ** 2 * count_parameters(m)


def test_widen_noise_breaks_the_copies_but_stays_close():
    m = _trained_like()
    x = {"image": torch.randn(4, 1, 48, 48)}
    with torch.no_grad():
        exact, noisy = widen(m, 2)(x), widen(m, 2, noise=0.01).eval()(x)
    gap = (noisy - exact).abs().max().item()
    assert 0 < gap < 0.1 * exact.abs().max().item()
    conv = widen(m, 2, noise=0.01).features[0]
    assert not torch.equal(conv.weight[:8], conv.weight[8:])   # the copies differ: training can split them


def test_widen_refuses_other_models_and_bad_factors():
    with pytest.raises(TypeError):
        widen(create_model("image_cnn", num_classes=7), 2)
    with pytest.raises(ValueError):
        widen(_trained_like(), 0)
    with pytest.raises(ValueError):  # width 8 * 1.3 is not whole
        widen(_trained_like(), 1.3)


def test_widen_script_writes_a_checkpoint_finetune_reads(tmp_path):
    spec = importlib.util.spec_from_file_location("widen_model", ROOT / "scripts" / "widen_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model

    m = _trained_like()
    src = tmp_path / "small"
    save_checkpoint(m, src, {**make_card(m, ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise",
                                             "contempt"], spec_for_model(m)),
                             "output_bias": [0.0] * 8, "metrics": {"test": {"accuracy": 0.5}}})
    mod.main([str(src) + ".json", "--factor", "2", "--noise", "0", "--out", str(tmp_path / "wide")])
    wide, card = load_checkpoint(tmp_path / "wide.json")
    assert card["model"]["kwargs"]["width"] == 16 and card["metrics"] == {}
    assert "output_bias" not in card                                   # bound to the old weights
    src_card = json.loads((tmp_path / "small.json").read_text())
    assert card["training"]["widened_from"]["weights_sha256"] == src_card["weights_sha256"]
    x = {"image": torch.randn(2, 1, 48, 48)}
    with torch.no_grad():
        torch.testing.assert_close(wide(x), m(x), rtol=1e-4, atol=1e-4)
