"""The TULIP task with every term: gradients, determinism, autocast, weighting, teacher and reconstruction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

import tulip
from tulip.losses import ImageReconstructionLoss, TextReconstructionLoss, patchify, sigmoid_loss
from tulip.models.text_decoder import TextDecoder
from tulip.train.config import TrainConfig
from tulip.train.ema import EmaTeacher, teacher_momentum
from tulip.train.task import TulipTask

ALL_TERMS = {
    "image_text_loss": 1.0,
    "image_image_loss": 0.5,
    "text_text_loss": 0.25,
    "image_reconstruction_loss": 2.0,
    "text_reconstruction_loss": 0.1,
}
SMALL_DECODERS = {
    "image_reconstruction": {"width": 32, "depth": 1, "heads": 4},
    "text_reconstruction": {"layers": 1, "heads": 2, "ff_dim": 64},
}


def _config(weights=None, **objective) -> TrainConfig:
    return TrainConfig.from_dict(
        {"loss_weights": weights or ALL_TERMS, "objective": {**SMALL_DECODERS, **objective}}
    )


def _batch(batch_size: int = 6, seed: int = 0) -> dict:
    """Two global crops, two 16-px local crops, generated captions for 3 samples and images for 2."""
    generator = torch.Generator().manual_seed(seed)
    tokenizer = tulip.get_tokenizer("tulip-tiny")
    captions = [f"a photo of a {name}" for name in ("bag", "coat", "shirt", "sneaker", "dress", "sandal")]
    global_crops = torch.randn(batch_size, 2, 3, 32, 32, generator=generator)
    views = ["a picture of a bag", "a photo of a hat", "an image of a shirt", "a photo of a sock",
             "a photo of a dress", "two dresses"]
    return {
        "global_crops": global_crops,
        "image": global_crops[:, 0],
        "local_crops": torch.randn(batch_size, 2, 3, 16, 16, generator=generator),
        "text": tokenizer(captions[:batch_size]),
        "text_views": tokenizer(views).view(3, 2, -1),
        "text_views_index": torch.tensor([0, 2, 4]),
        "image_views": torch.randn(2, 2, 3, 32, 32, generator=generator),
        "image_views_index": torch.tensor([1, 3]),
    }


def _task(cfg: TrainConfig, seed: int = 0) -> tuple[TulipTask, EmaTeacher | None]:
    torch.manual_seed(seed)
    task = TulipTask(tulip.create_model("tulip-tiny"), cfg, pad_id=0)
    return task, task.build_teacher()


def test_every_parameter_receives_a_gradient_with_all_terms():
    task, teacher = _task(_config())
    task(_batch(), teacher)["loss"].backward()
    without = [name for name, p in task.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert without == [], f"parameters without a gradient: {without}"
    assert all(not p.requires_grad for p in teacher.parameters())


def test_total_is_the_weighted_sum_of_logged_terms():
    """Each logged term is the value that enters the total: loss == sum(weight * term)."""
    task, teacher = _task(_config())
    out = task(_batch(), teacher)
    assert set(ALL_TERMS) <= set(out)
    expected = sum(weight * out[name] for name, weight in ALL_TERMS.items())
    torch.testing.assert_close(out["loss"], expected, rtol=1e-6, atol=0)


def test_terms_with_zero_weight_are_not_built():
    task, teacher = _task(_config({"image_text_loss": 1.0, "image_image_loss": 0.0}))
    out = task(_batch(), teacher)
    assert sorted(out) == ["image_text_loss", "loss"]
    assert teacher is None
    assert task.image_image_head is None
    assert task.image_decoder is None
    assert task.text_decoder is None


def test_image_text_only_equals_open_clip_siglip():
    """With only the image-text term and no generated views, the task is SigLIP on the first global crop."""
    task, _ = _task(_config({"image_text_loss": 1.0}))
    batch = _batch()
    for key in ("text_views", "text_views_index", "image_views", "image_views_index"):
        batch.pop(key)
    out = task(batch, None)
    model = task.model
    features = model(batch["image"], batch["text"])
    expected = SigLipLoss()(features["image_features"], features["text_features"], features["logit_scale"],
                            features["logit_bias"])
    torch.testing.assert_close(out["image_text_loss"], expected)


def test_generated_negatives_add_labelled_pairs():
    """Hard negatives add pairs to the summed loss: 6 image rows plus 2 negative-image rows."""
    task, _ = _task(_config({"image_text_loss": 1.0}))
    batch = _batch()
    with torch.no_grad():
        with_negatives = task(batch, None)["image_text_loss"] * 8
        for key in ("text_views_index", "image_views_index"):
            batch[key] = torch.tensor([], dtype=torch.long)
        without = task(batch, None)["image_text_loss"] * 6
    assert with_negatives > without


def _run_steps(seed: int, steps: int = 2) -> tuple[list[float], dict]:
    cfg = _config()
    task, teacher = _task(cfg, seed)
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-3, fused=True)
    losses = []
    for step in range(steps):
        out = task(_batch(seed=step), teacher)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        task.update_teacher(teacher, teacher_momentum(step, steps, 0.9, 1.0, "cosine"))
        losses.append(out["loss"].item())
    state = {**{f"task.{k}": v for k, v in task.state_dict().items()},
             **{f"teacher.{k}": v for k, v in teacher.state_dict().items()}}
    return losses, state


def test_fixed_seed_steps_are_bitwise_identical():
    """Two runs from one seed (random masks, crops of the same batch, teacher updates) agree bit for bit."""
    losses_a, state_a = _run_steps(seed=7)
    losses_b, state_b = _run_steps(seed=7)
    assert losses_a == losses_b
    different = [k for k in state_a if not torch.equal(state_a[k], state_b[k])]
    assert different == []


def test_bf16_autocast_runs_on_cpu():
    task, teacher = _task(_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task(_batch(batch_size=4), teacher)
    out["loss"].backward()
    assert all(math.isfinite(out[name].item()) for name in ALL_TERMS)
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_teacher_image_source_freezes_image_tower():
    """The literal reading (teacher embeddings feed image-text) leaves the student image tower without gradient."""
    task, teacher = _task(_config({"image_text_loss": 1.0}, image_text={"image_source": "teacher"}))
    assert teacher is not None
    assert not any(p.requires_grad for p in task.model.visual.parameters())
    out = task(_batch(), teacher)
    out["loss"].backward()
    assert task.model.text.text_projection.weight.grad is not None


def test_teacher_update_follows_momentum_formula():
    student = torch.nn.Linear(4, 4)
    teacher = EmaTeacher(student, None)
    before = teacher.visual.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, None, momentum=0.75)
    torch.testing.assert_close(teacher.visual.weight, 0.75 * before + 0.25 * student.weight.detach())


def test_teacher_momentum_schedule_endpoints():
    assert teacher_momentum(0, 101, 0.996, 1.0, "cosine") == pytest.approx(0.996)
    assert teacher_momentum(50, 101, 0.996, 1.0, "cosine") == pytest.approx(0.998)
    assert teacher_momentum(100, 101, 0.996, 1.0, "cosine") == pytest.approx(1.0)
    assert teacher_momentum(60, 101, 0.99, 1.0, "constant") == 0.99


def test_patchify_follows_the_vit_patch_grid():
    """Patch i of patchify contains the pixels of ViT token i: a 4x4 grid of constant patches numbered row-major."""
    index = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    images = index.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3).expand(1, 3, 32, 32)
    patches = patchify(images, 8)
    assert patches.shape == (1, 16, 8 * 8 * 3)
    for token in range(16):
        assert torch.all(patches[0, token] == token)


def test_image_reconstruction_loss_hand_values():
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)  # 2x2 patches of 2x2 pixels
    mask_ids = torch.tensor([[1, 2]])
    predictions = torch.zeros(1, 2, 4)
    # Patch 1 contains 2, 3, 6, 7 and patch 2 contains 8, 9, 12, 13.
    plain = ImageReconstructionLoss(norm_pix_loss=False)(predictions, image, mask_ids, 2)
    expected = (4 + 9 + 36 + 49 + 64 + 81 + 144 + 169) / 8
    assert plain["image_reconstruction_loss"].item() == pytest.approx(expected)
    # Standardised per patch (unbiased variance 13/3 in both), the squared targets average to 3/4.
    normalised = ImageReconstructionLoss(norm_pix_loss=True, eps=0.0)(predictions, image, mask_ids, 2)
    assert normalised["image_reconstruction_loss"].item() == pytest.approx(0.75)


def test_text_decoder_is_causal_and_skips_padding():
    torch.manual_seed(0)
    decoder = TextDecoder(16, 50, pad_id=0, width=16, layers=2, heads=2, ff_dim=32)
    tokens = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]])
    embedding = torch.randn(2, 16)
    logits, targets = decoder(embedding, tokens)
    assert targets.tolist() == [5, 6, 7, 8, 9, 10, 11]
    changed = tokens.clone()
    changed[0, 2] = 30
    logits_changed, _ = decoder(embedding, changed)
    # Tokens 0-2 of the first caption are predicted before position 2 is read; token 3 is not.
    torch.testing.assert_close(logits_changed[:3], logits[:3])
    assert not torch.allclose(logits_changed[3], logits[3])


def test_text_reconstruction_loss_is_token_mean_cross_entropy():
    logits, targets = torch.randn(7, 11), torch.randint(0, 11, (7,))
    got = TextReconstructionLoss()(logits, targets)["text_reconstruction_loss"]
    torch.testing.assert_close(got, F.cross_entropy(logits, targets))


def test_text_reconstruction_reads_recon_text():
    """The caption chosen for reconstruction (recon_text) is the decoder's target when the batch has it."""
    task, teacher = _task(_config({"text_reconstruction_loss": 1.0}))
    batch = _batch()
    with torch.no_grad():
        plain = task(batch, teacher)["text_reconstruction_loss"]
        batch["recon_text"] = tulip.get_tokenizer("tulip-tiny")(["a long recaption of a leather bag"] * 6)
        recaptioned = task(batch, teacher)["text_reconstruction_loss"]
    assert plain != recaptioned


def test_unknown_objective_key_rejected():
    with pytest.raises(ValueError, match="mask_ration"):
        TrainConfig.from_dict({"objective": {"image_reconstruction": {"mask_ration": 0.5}}})


def test_unknown_loss_term_rejected():
    with pytest.raises(ValueError, match="image_txt_loss"):
        TrainConfig.from_dict({"loss_weights": {"image_txt_loss": 1.0}})


def test_text_decoder_shares_or_owns_token_embedding():
    shared, _ = _task(_config({"text_reconstruction_loss": 1.0},
                              text_reconstruction={"condition": "image", "layers": 1, "heads": 2, "ff_dim": 64}))
    assert shared.text_decoder.stack.embed_tokens is shared.model.text.token_embedding
    assert shared.model.text.token_embedding.weight.requires_grad  # trained through the decoder
    assert not shared.model.text.text_projection.weight.requires_grad  # captioning from images reads no text embedding
    owned, _ = _task(_config({"text_reconstruction_loss": 1.0},
                             text_reconstruction={"share_token_embedding": False, "width": 32, "heads": 2}))
    assert owned.text_decoder.stack.embed_tokens.weight.shape == (49408, 32)


def _with_pairs(batch: dict) -> dict:
    """The batch plus a recaption, as ``text_pair``, for samples 0, 1, 3 and 5."""
    tokenizer = tulip.get_tokenizer("tulip-tiny")
    pairs = ["a leather bag with a strap", "a long wool coat", "a white sneaker", "a flat sandal"]
    return {**batch, "text_pair": tokenizer(pairs), "text_pair_index": torch.tensor([0, 1, 3, 5])}


def test_recaption_is_text_text_positive():
    """Against a dense loss whose labels are written from the owners: +1 within a sample, 0 on the diagonal."""
    objective = {"text_text": {"recaption_positives": True, "generated_views": False}}
    task, _ = _task(_config({"text_text_loss": 1.0}, **objective))
    batch = _with_pairs(_batch())
    got = task(batch)["text_text_loss"]
    head = task.text_text_head
    with torch.no_grad():
        texts = head(task.model.text(torch.cat([batch["text"], batch["text_pair"]])))  # [6 + 4, E]
        owners = torch.cat([torch.arange(6), batch["text_pair_index"]])
        labels = torch.where(owners[:, None] == owners[None, :], 1.0, -1.0).fill_diagonal_(0.0)
        expected = sigmoid_loss(texts, texts, head.logit_scale.exp(), head.logit_bias, labels)
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)


def test_recaption_ignored_when_off():
    objective = {"text_text": {"generated_views": False}}
    task, _ = _task(_config({"text_text_loss": 1.0}, **objective))
    batch = _batch()
    assert not task.reads_text_pairs
    torch.testing.assert_close(task(_with_pairs(batch))["text_text_loss"], task(batch)["text_text_loss"])
