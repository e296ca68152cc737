"""GeCo image views: a positive and a negative edit per image from an InstructPix2Pix-style pipeline.

The editor is conditioned on two embeddings in place of a text instruction: E_p for the positive
view (high image guidance, 5 by default) and E_n for the negative view (lower image guidance, 3).
They are either learned soft prompts loaded from a file or, before learning, the encodings of two
instruction sentences. Every image draws its noise from a generator seeded by (global seed, key,
view, attempt), and an output that is (nearly) constant, as a safety checker's blanked image is, is
regenerated with the next attempt's seed or dropped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tulip.geco.seeding import sample_generator, sample_seed

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = {
    "positive": "keep the same object and scene, change only the viewpoint and lighting slightly",
    "negative": "change the object into a different one",
}


@dataclass
class ImageEditSettings:
    resolution: int = 32  # edits run at this square size (a multiple of 8)
    num_inference_steps: int = 20
    positive_image_guidance: float = 5.0
    negative_image_guidance: float = 3.0
    text_guidance: float = 7.5
    max_attempts: int = 2
    min_std: float = 2.0  # pixel standard deviation (0-255) below which an output counts as constant
    batch_size: int = 16
    seed: int = 0


def is_constant(image: Image.Image, min_std: float) -> bool:
    return float(np.asarray(image, dtype=np.float32).std()) < min_std


class ImageEditor:
    """Wraps a diffusers InstructPix2Pix pipeline and the two conditioning embeddings."""

    def __init__(
        self,
        model_name_or_path: str,
        settings: ImageEditSettings,
        device: str = "cpu",
        soft_prompts: str | Path | None = None,
    ):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        self.model_id = model_name_or_path
        self.settings = settings
        self.device = torch.device(device)
        # float16 is unsupported or very slow on CPU, so CPU runs stay in float32.
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            model_name_or_path, dtype=dtype, safety_checker=None, requires_safety_checker=False
        ).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.images_edited = 0  # views returned, for throughput figures
        self.embeddings = self._load_embeddings(soft_prompts)

    @torch.no_grad()
    def _encode_instruction(self, text: str) -> torch.Tensor:
        tokens = self.pipe.tokenizer(
            text, padding="max_length", max_length=self.pipe.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        return self.pipe.text_encoder(tokens.input_ids.to(self.device))[0]  # [1, L, D]

    def _load_embeddings(self, soft_prompts: str | Path | None) -> dict[str, torch.Tensor]:
        encoded = {view: self._encode_instruction(text) for view, text in DEFAULT_INSTRUCTIONS.items()}
        if not soft_prompts:
            return encoded
        saved = torch.load(soft_prompts, map_location=self.device, weights_only=True)
        loaded = {}
        for view, reference in encoded.items():
            if view not in saved or tuple(saved[view].shape) != tuple(reference.shape):
                found = tuple(saved[view].shape) if view in saved else "nothing"
                raise ValueError(
                    f"soft prompts {soft_prompts}: {view} embedding has shape {found}, but this editor's text "
                    f"encoder gives {tuple(reference.shape)}; learn them for {self.model_id} (learn-soft-prompts)"
                )
            loaded[view] = saved[view].to(device=self.device, dtype=reference.dtype)
        return loaded

    def _edit(self, images: list[Image.Image], view: str, seeds: list[int]) -> list[Image.Image]:
        s = self.settings
        embeds = self.embeddings[view].expand(len(images), -1, -1)
        guidance = s.positive_image_guidance if view == "positive" else s.negative_image_guidance
        result = self.pipe(
            prompt_embeds=embeds,
            image=images,
            num_inference_steps=s.num_inference_steps,
            image_guidance_scale=guidance,
            guidance_scale=s.text_guidance,
            generator=[sample_generator(seed) for seed in seeds],
            output_type="pil",
        )
        return result.images

    def generate(self, items: list[tuple[str, Image.Image]]) -> dict[str, dict]:
        """Edit (key, image) items; the key seeds the noise.

        Returns ``{key: {"positive", "negative", "regenerated"}}`` for every item: the two edited
        images, or None for both when a view stayed constant after every attempt, and the number of
        regenerations the constant outputs cost.
        """
        s = self.settings
        size = (s.resolution, s.resolution)
        prepared = {key: image.convert("RGB").resize(size, Image.Resampling.BICUBIC) for key, image in items}
        results = {key: {"positive": None, "negative": None, "regenerated": 0} for key in prepared}
        for view in ("positive", "negative"):
            # An image whose positive view failed is dropped, so it gets no negative edit.
            pending = [k for k in prepared if view == "positive" or results[k]["positive"] is not None]
            for attempt in range(s.max_attempts):
                if attempt:
                    for key in pending:
                        results[key]["regenerated"] += 1
                retry = []
                for start in range(0, len(pending), s.batch_size):
                    keys = pending[start : start + s.batch_size]
                    seeds = [sample_seed(s.seed, key, view, attempt) for key in keys]
                    for key, edited in zip(keys, self._edit([prepared[k] for k in keys], view, seeds)):
                        if is_constant(edited, s.min_std):
                            retry.append(key)
                        else:
                            results[key][view] = edited
                pending = retry
                if not pending:
                    break
        for result in results.values():
            if result["positive"] is None or result["negative"] is None:
                result["positive"] = result["negative"] = None
        self.images_edited += 2 * len(items)
        return results
