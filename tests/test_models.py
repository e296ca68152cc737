"""Model construction, the open_clip-style API, preset sizes and gradient flow."""

from __future__ import annotations

import pytest
import torch

import tulip
from tulip.models import TulipModel, get_model_config


def test_create_model_and_transforms_tiny():
    model, preprocess_train, preprocess_val = tulip.create_model_and_transforms("tulip-tiny")
    tokenizer = tulip.get_tokenizer("tulip-tiny")
    from PIL import Image

    image = preprocess_val(Image.new("L", (28, 28), 128)).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    assert preprocess_train(Image.new("RGB", (40, 30))).shape == (3, 32, 32)
    text = tokenizer(["a photo of a coat", "a bag"])
    assert text.shape == (2, 24)
    image_features = model.encode_image(image.repeat(2, 1, 1, 1), normalize=True)
    text_features = model.encode_text(text, normalize=True)
    assert image_features.shape == text_features.shape == (2, 128)
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(2))
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    assert model.visual is not None and model.text is not None


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = tulip.create_model("tulip-tiny")
    tokenizer = tulip.get_tokenizer("tulip-tiny")
    out = model(torch.randn(4, 3, 32, 32), tokenizer(["a", "b c", "d e f", "g"]))
    from tulip.losses import ImageTextLoss

    loss = ImageTextLoss()(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])
    loss["image_text_loss"].backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert without == []


@pytest.mark.parametrize(
    ("name", "vision_millions", "text_millions"),
    [
        ("TULIP-B-16-224", 92.9, 170.1),
        ("TULIP-so400m-14-384", 428.2, 539.4),
        ("TULIP-G-16-384", 1163.7, 539.9),
    ],
)
def test_preset_parameter_counts(name, vision_millions, text_millions):
    """Counts built on the meta device, within 1 % of the published tower sizes."""
    with torch.device("meta"):
        model = TulipModel(get_model_config(name))
    vision = sum(p.numel() for p in model.visual.parameters()) / 1e6
    text = sum(p.numel() for p in model.text.parameters()) / 1e6
    assert vision == pytest.approx(vision_millions, rel=0.01)
    assert text == pytest.approx(text_millions, rel=0.01)


def test_unknown_model_lists_presets():
    with pytest.raises(ValueError, match="tulip-tiny"):
        get_model_config("tulip-huge")


def test_strict_loading_reports_keys(tmp_path):
    model = tulip.create_model("tulip-tiny")
    state = model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["logit_bias"]
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="logit_bias.*extra.weight"):
        tulip.create_model("tulip-tiny", pretrained=path)
