"""Learned soft prompts E_p and E_n for the GeCo image editor, with every network frozen.

The editor is conditioned on two embeddings, each of the text encoder's output shape ``[L, D]``,
in place of an encoded instruction. They are learned with InstructPix2Pix's own training objective:
given a pair (source image, target image), the UNet receives the noised target latent concatenated
with the source latent and must predict the noise, conditioned on the embedding. Only the
embedding receives gradients; the UNet, VAE and text encoder stay fixed.

- E_p learns from positive pairs: two views with the same content (augmented views of one image,
  nearby video frames, multi-view images of one object), so it requests a faithful re-rendering.
- E_n learns from negative pairs: InstructPix2Pix-style triples (input, edited output,
  instruction) whose edit changes the meaning, so it requests a semantic change.

Both start from the encodings of the editor's two default instruction sentences. Losses are
recorded per step, and on a fixed held-out draw of noise and timesteps before and after training,
so that the reported change is not noise from the sampling.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tulip.data.reader import caption_of, iter_samples
from tulip.geco.image_views import DEFAULT_INSTRUCTIONS
from tulip.geco.seeding import sample_generator

logger = logging.getLogger(__name__)

VIEWS = ("positive", "negative")


@dataclass
class SoftPromptSettings:
    steps: int = 200
    lr: float = 1.0e-3
    batch_size: int = 8  # pairs per view and step
    resolution: int = 32  # pixels, a multiple of 8; 256 for InstructPix2Pix
    held_out: int = 8  # pairs per view scored before and after training, excluded from training
    seed: int = 0


def read_edit_pairs(source_manifest: str | Path, target_manifest: str | Path) -> tuple[dict[str, list], Counter]:
    """Join the source and target downloads of a pairs table by sample key.

    Each row of the table was downloaded twice, once with its source image and once with its
    target image, so a key names the same row in both. The row's ``kind`` column (kept in the
    sample's json) marks it as a positive or a negative pair. Returns
    ``({"positive": [(source, target)], "negative": [...]}, counts)``; rows missing from either
    download or of another kind are counted, not used.
    """
    targets = {s["__key__"]: s for s in iter_samples(target_manifest)}
    pairs: dict[str, list] = {view: [] for view in VIEWS}
    counts: Counter = Counter()
    seen = set()
    for sample in iter_samples(source_manifest):
        key = sample["__key__"]
        seen.add(key)
        if key not in targets:
            counts["missing_target"] += 1
            continue
        meta = json.loads(sample["json"]) if "json" in sample else {}
        kind = meta.get("kind")
        if kind not in VIEWS:
            counts["unknown_kind"] += 1
            continue
        images = []
        for raw in (sample, targets[key]):
            with Image.open(io.BytesIO(raw["jpg"])) as image:
                images.append(image.convert("RGB"))
        pairs[kind].append((*images, caption_of(sample)))
        counts[kind] += 1
    counts["missing_source"] += len(set(targets) - seen)
    return pairs, counts


def _to_tensor(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """PIL images to a [B, 3, H, W] tensor in [-1, 1], resized to ``resolution`` squared."""
    arrays = [np.asarray(im.resize((resolution, resolution), Image.Resampling.BICUBIC), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


class SoftPromptTrainer:
    """Holds a frozen InstructPix2Pix pipeline and the two trainable embeddings."""

    def __init__(self, model_name_or_path: str, settings: SoftPromptSettings, device: str = "cpu"):
        from diffusers import DDPMScheduler, StableDiffusionInstructPix2PixPipeline

        self.settings = settings
        self.device = torch.device(device)
        # Trained in float32 everywhere: the embeddings' gradients are small next to bf16's precision.
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model_name_or_path, dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        ).to(self.device)
        self.vae, self.unet, self.text_encoder, self.tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
        for module in (self.vae, self.unet, self.text_encoder):
            module.requires_grad_(False)
            module.eval()
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.model_id = model_name_or_path
        self.embeddings = torch.nn.ParameterDict(
            {view: torch.nn.Parameter(self._encode(text)) for view, text in DEFAULT_INSTRUCTIONS.items()}
        )

    @torch.no_grad()
    def _encode(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[0].clone()  # [1, L, D]

    @torch.no_grad()
    def encode_pairs(self, pairs: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (source latents, scaled target latents), each [N, 4, h, w], as the pipeline builds them."""
        sources, targets = [], []
        for start in range(0, len(pairs), 32):
            chunk = pairs[start : start + 32]
            src = _to_tensor([p[0] for p in chunk], self.settings.resolution).to(self.device)
            tgt = _to_tensor([p[1] for p in chunk], self.settings.resolution).to(self.device)
            sources.append(self.vae.encode(src).latent_dist.mode())
            targets.append(self.vae.encode(tgt).latent_dist.mode() * self.vae.config.scaling_factor)
        return torch.cat(sources), torch.cat(targets)

    def loss(self, view: str, source: torch.Tensor, target: torch.Tensor, noise: torch.Tensor,
             timesteps: torch.Tensor) -> torch.Tensor:
        """Noise-prediction MSE for latents [B, 4, h, w] under embedding ``view``."""
        noisy = self.noise_scheduler.add_noise(target, noise, timesteps)
        condition = self.embeddings[view].expand(len(source), -1, -1)  # [B, L, D]
        predicted = self.unet(torch.cat([noisy, source], dim=1), timesteps, encoder_hidden_states=condition).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            expected = self.noise_scheduler.get_velocity(target, noise, timesteps)
        else:
            expected = noise
        return F.mse_loss(predicted, expected)

    def _draw(self, count: int, shape: torch.Size, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn((count, *shape), generator=generator).to(self.device)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (count,), generator=generator).to(self.device)
        return noise, timesteps

    def fit(self, pairs: dict[str, list]) -> dict:
        """Learn each embedding from its pairs; return per-step losses and held-out losses before and after."""
        s = self.settings
        for view in VIEWS:
            if len(pairs.get(view, [])) < s.held_out + 1:
                raise ValueError(
                    f"{len(pairs.get(view, []))} {view} pairs, need more than held_out={s.held_out}; add {view} "
                    "rows to the pairs table or lower geco.soft_prompts.held_out"
                )
        generator = sample_generator(s.seed)
        data, held = {}, {}
        for view in VIEWS:
            source, target = self.encode_pairs(pairs[view])
            held[view] = (source[: s.held_out], target[: s.held_out],
                          *self._draw(s.held_out, target.shape[1:], generator))
            data[view] = (source[s.held_out :], target[s.held_out :])
        history = {"held_out_before": self.held_out_loss(held), "steps": []}

        optimizer = torch.optim.Adam(self.embeddings.parameters(), lr=s.lr)
        for _ in range(s.steps):
            terms = {}
            for view in VIEWS:
                source, target = data[view]
                index = torch.randint(0, len(source), (s.batch_size,), generator=generator).to(self.device)
                noise, timesteps = self._draw(s.batch_size, target.shape[1:], generator)
                terms[view] = self.loss(view, source[index], target[index], noise, timesteps)
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()
            history["steps"].append({view: float(term.detach()) for view, term in terms.items()})

        history["held_out_after"] = self.held_out_loss(held)
        logger.info("soft prompts: held-out loss %s -> %s", history["held_out_before"], history["held_out_after"])
        return history

    @torch.no_grad()
    def held_out_loss(self, held: dict) -> dict[str, float]:
        return {view: float(self.loss(view, *held[view])) for view in VIEWS}

    def save(self, path: str | Path, history: dict | None = None) -> Path:
        """Save ``{"positive": [1, L, D], "negative": [1, L, D]}`` in the format ImageEditor loads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({view: self.embeddings[view].detach().cpu() for view in VIEWS}
                   | {"model": self.model_id, "history": history or {}}, tmp)
        tmp.replace(path)
        return path
