"""The TULIP training task: the model, the objective's heads and decoders, and one call that returns every loss term.

``TulipTask.forward(batch, teacher)`` embeds everything the enabled terms need, once each, and
returns the named terms (keys ending in ``_loss``), their weighted total (``loss``) and the extra
scalars worth logging. Only terms with a positive weight are built and computed; parameters that
no enabled term reads are frozen, so every trainable parameter receives a gradient.

Batch fields (see ``tulip.data.loader``):

- ``image`` [B, C, H, W], the first global crop, and ``text`` [B, L_t], the captions;
- with multi-crop, ``global_crops`` [B, G, C, H, W] and ``local_crops`` [B, L, C, h, w];
- ``recon_text`` [B, L_t], the caption to reconstruct, when the loader provides one;
- ``text_views`` [K, 2, L_t] and ``image_views`` [K', 2, C, H, W], generated (positive, negative)
  views, with ``text_views_index`` [K] and ``image_views_index`` [K'], the batch rows that own them;
- ``text_pair`` [K'', L_t], each owner's other caption (see ``reads_text_pairs``), with
  ``text_pair_index`` [K''].
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from tulip.losses import (
    ImageImageLoss,
    ImageReconstructionLoss,
    ImageTextLoss,
    TextReconstructionLoss,
    TextTextLoss,
    weighted_total,
)
from tulip.models.heads import ContrastiveHead
from tulip.models.image_decoder import ImageDecoder
from tulip.models.text_decoder import TextDecoder
from tulip.models.tulip import TulipModel
from tulip.train.config import TrainConfig
from tulip.train.ema import EmaTeacher

logger = logging.getLogger(__name__)


def _views(batch: dict, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return (packed field [K, ...], owners [K]) when the batch has any, else (None, None)."""
    owners = batch.get(f"{name}_index")
    if owners is None or owners.numel() == 0 or name not in batch:
        return None, None
    return batch[name], owners


class TulipTask(nn.Module):
    """Model plus objective modules; see the module docstring.

    Args:
        model: the image-text model being trained.
        cfg: the training config (loss weights and ``objective``).
        pad_id: padding id of the caption tokenizer, ignored by the text decoder.
    """

    def __init__(self, model: TulipModel, cfg: TrainConfig, pad_id: int = 0):
        super().__init__()
        self.model = model
        self.weights = cfg.enabled_terms()
        if not self.weights:
            raise ValueError("train.loss_weights gives no term a positive weight; nothing would be trained")
        self.objective = obj = cfg.objective
        embed_dim = model.embed_dim
        exchange, chunk = obj.contrastive.exchange, obj.contrastive.chunk_size
        terms = set(self.weights)

        self.image_text_loss = ImageTextLoss(exchange, chunk) if "image_text_loss" in terms else None
        self.image_image_head = self.image_image_loss = None
        if "image_image_loss" in terms:
            self.image_image_head = self._head(embed_dim, obj.image_image)
            self.image_image_loss = ImageImageLoss(exchange, chunk)
        self.text_text_head = self.text_text_loss = None
        if "text_text_loss" in terms:
            self.text_text_head = self._head(embed_dim, obj.text_text)
            self.text_text_loss = TextTextLoss(exchange, chunk)
        self.image_decoder = self.image_reconstruction_loss = None
        if "image_reconstruction_loss" in terms:
            recon = obj.image_reconstruction
            grid = model.image_size // model.visual.patch_size
            self.image_decoder = ImageDecoder(
                embed_dim, model.visual.width, (grid, grid), model.visual.patch_size,
                in_chans=model.cfg.vision.in_chans, width=recon.width, depth=recon.depth, heads=recon.heads,
                mlp_ratio=recon.mlp_ratio, visible_tokens=recon.visible_tokens,
            )
            self.image_reconstruction_loss = ImageReconstructionLoss(recon.norm_pix_loss)
        self.text_decoder = self.text_reconstruction_loss = None
        if "text_reconstruction_loss" in terms:
            recon = obj.text_reconstruction
            token_embedding = model.text.get_token_embedding()
            self.text_decoder = TextDecoder(
                embed_dim, model.text.vocab_size, pad_id=pad_id, width=recon.width or token_embedding.embedding_dim,
                layers=recon.layers,
                heads=recon.heads, ff_dim=recon.ff_dim, prefix_tokens=recon.prefix_tokens, dropout=recon.dropout,
                token_embedding=token_embedding if recon.share_token_embedding else None,
            )
            self.text_reconstruction_loss = TextReconstructionLoss()
        self._freeze_unused()

    @staticmethod
    def _head(embed_dim: int, cfg) -> ContrastiveHead:
        return ContrastiveHead(embed_dim, cfg.dim, cfg.hidden_dim, cfg.init_logit_scale, cfg.init_logit_bias)

    # ------------------------------------------------------------------ set-up
    @property
    def reads_text_pairs(self) -> bool:
        """Whether the text-text term takes each sample's other caption as a positive (batch key ``text_pair``)."""
        return self.text_text_loss is not None and self.objective.text_text.recaption_positives

    @property
    def needs_teacher(self) -> bool:
        teacher_image_text = self.image_text_loss is not None and self.objective.image_text.image_source == "teacher"
        return self.image_image_loss is not None or teacher_image_text

    def build_teacher(self) -> EmaTeacher | None:
        """Build an EMA teacher initialised from the student; return None when no enabled term reads one."""
        return EmaTeacher(self.model.visual, self.image_image_head) if self.needs_teacher else None

    def update_teacher(self, teacher: EmaTeacher | None, momentum: float) -> None:
        if teacher is not None:
            teacher.update(self.model.visual, self.image_image_head, momentum)

    def _freeze_unused(self) -> None:
        student_image = (
            self.image_image_loss is not None
            or self.image_decoder is not None
            or (self.image_text_loss is not None and self.objective.image_text.image_source == "student")
            or (self.text_decoder is not None and self.objective.text_reconstruction.condition == "image")
        )
        student_text = (
            self.image_text_loss is not None
            or self.text_text_loss is not None
            or (self.text_decoder is not None and self.objective.text_reconstruction.condition == "text")
        )
        frozen = []
        if not student_image:
            frozen.append(("model.visual", self.model.visual))
        if not student_text:
            frozen.append(("model.text", self.model.text))
        if self.image_text_loss is None:
            frozen += [("model.logit_scale", self.model.logit_scale), ("model.logit_bias", self.model.logit_bias)]
        for name, part in frozen:
            part.requires_grad_(False)
            logger.info("%s is frozen: no enabled loss term reads it", name)
        if self.text_decoder is not None and self.objective.text_reconstruction.share_token_embedding:
            # The decoder trains the token embedding it shares, even when the rest of the text tower is frozen.
            self.model.text.get_token_embedding().requires_grad_(True)

    def objective_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the heads and decoders, without the model (which is saved on its own)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}

    def load_objective_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("model.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"objective state does not match the enabled terms: missing {missing[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict, teacher: EmaTeacher | None = None) -> dict[str, torch.Tensor]:
        """Return ``loss`` (the weighted total), every enabled ``*_loss`` term and logged scalars."""
        out = self.objective_terms(batch, self.embed(batch), teacher)
        if self.image_decoder is not None:
            out.update(self.image_reconstruction_terms(batch))
        return self.total(out)

    def total(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add ``loss``, the weighted total of the ``*_loss`` terms in ``out``."""
        terms = {k: v for k, v in out.items() if k.endswith("_loss")}
        return {"loss": weighted_total(terms, self.weights), **out}

    def embed(self, batch: dict) -> dict[str, torch.Tensor]:
        """Tower embeddings (raw) of every image and text the terms read, under flat keys.

        ``image.global`` [B, G, E], ``image.local`` [B, L, E], ``image.positive`` [K', E],
        ``image.negative`` [K', E], ``text.captions`` [B, E], ``text.positive`` [K, E],
        ``text.negative`` [K, E], ``text.pair`` [K'', E]; absent when no enabled term reads them. Every row depends on its
        own sample only, so embeddings of consecutive slices of a batch concatenate to the batch's.
        """
        obj = self.objective
        global_crops = self._global_crops(batch)
        image_views, _ = _views(batch, "image_views")
        text_views, _ = _views(batch, "text_views")
        use_it_negatives = self.image_text_loss is not None and obj.image_text.generated_negatives
        use_ii_views = self.image_image_loss is not None and obj.image_image.generated_views
        use_tt_views = self.text_text_loss is not None and obj.text_text.generated_views
        # Image tower: all crops of the model's resolution in one student pass.
        image = self._embed_images(batch, global_crops, image_views, use_it_negatives, use_ii_views)
        # Text tower: captions, the generated captions and the paired captions in one pass.
        needs_text_views = use_it_negatives or use_tt_views
        pairs = _views(batch, "text_pair")[0] if self.reads_text_pairs else None
        text = self._embed_texts(batch["text"], text_views if needs_text_views else None, use_tt_views, pairs)
        return {**{f"image.{k}": v for k, v in image.items()}, **{f"text.{k}": v for k, v in text.items()}}

    @staticmethod
    def _global_crops(batch: dict) -> torch.Tensor:
        global_crops = batch.get("global_crops")
        return batch["image"][:, None] if global_crops is None else global_crops  # [B, G, C, H, W]

    def objective_terms(self, batch: dict, embeddings: dict[str, torch.Tensor],
                        teacher: EmaTeacher | None = None) -> dict[str, torch.Tensor]:
        """Compute every enabled term from ``embed``'s output, except image reconstruction, which reruns the image tower."""
        if self.needs_teacher and teacher is None:
            raise ValueError("the enabled terms read an EMA teacher; pass the one from build_teacher()")
        obj = self.objective
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        global_crops = self._global_crops(batch)
        image_views, image_owners = _views(batch, "image_views")
        _, text_owners = _views(batch, "text_views")
        pair_owners = _views(batch, "text_pair")[1] if self.reads_text_pairs else None
        image = {k.split(".", 1)[1]: v for k, v in embeddings.items() if k.startswith("image.")}
        text = {k.split(".", 1)[1]: v for k, v in embeddings.items() if k.startswith("text.")}
        use_it_negatives = self.image_text_loss is not None and obj.image_text.generated_negatives
        use_ii_views = self.image_image_loss is not None and obj.image_image.generated_views
        use_tt_views = self.text_text_loss is not None and obj.text_text.generated_views

        if self.image_text_loss is not None:
            terms.update(self._image_text(image, text, global_crops, image_views, image_owners, text_owners,
                                          use_it_negatives, teacher))
        if self.image_image_loss is not None:
            terms.update(self._image_image(image, batch, global_crops, image_views, image_owners, use_ii_views,
                                           teacher))
            metrics["image_image_logit_scale"] = self.image_image_head.logit_scale.detach().exp()
            metrics["image_image_logit_bias"] = self.image_image_head.logit_bias.detach()
        if self.text_text_loss is not None:
            terms.update(self._text_text(text, text_owners, use_tt_views, pair_owners))
            metrics["text_text_logit_scale"] = self.text_text_head.logit_scale.detach().exp()
            metrics["text_text_logit_bias"] = self.text_text_head.logit_bias.detach()
        if self.text_decoder is not None:
            terms.update(self._text_reconstruction(batch, image, text))
        return {**terms, **metrics}

    def image_reconstruction_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """Compute the masked-image term, a mean over samples that each mask the same number of patches."""
        return self._image_reconstruction(self._global_crops(batch)[:, 0])

    def _embed_images(self, batch, global_crops, image_views, use_negatives, use_positives) -> dict:
        """Student embeddings (raw, before normalisation) of the global crops and generated image views."""
        out: dict[str, torch.Tensor] = {}
        uses_student = (
            self.image_image_loss is not None
            or (self.image_text_loss is not None and self.objective.image_text.image_source == "student")
            or (self.text_decoder is not None and self.objective.text_reconstruction.condition == "image")
        )
        if not uses_student:
            return out
        batch_size = global_crops.shape[0]
        crops = global_crops if self.image_image_loss is not None else global_crops[:, :1]
        parts = [crops.flatten(0, 1)]  # [B * G, C, H, W], sample-major
        num_positive = num_negative = 0
        if image_views is not None and use_positives:
            parts.append(image_views[:, 0])
            num_positive = image_views.shape[0]
        if image_views is not None and use_negatives and self.objective.image_text.image_source == "student":
            parts.append(image_views[:, 1])
            num_negative = image_views.shape[0]
        features = self.model.visual(torch.cat(parts))  # [B * G + K + K', E]
        split = features.split([crops.shape[0] * crops.shape[1], num_positive, num_negative])
        out["global"] = split[0].view(batch_size, crops.shape[1], -1)  # [B, G or 1, E]
        out["positive"], out["negative"] = split[1], split[2]
        local_crops = batch.get("local_crops")
        if self.image_image_loss is not None and local_crops is not None:
            out["local"] = self.model.visual(local_crops.flatten(0, 1)).view(batch_size, local_crops.shape[1], -1)
        return out

    def _embed_texts(self, captions, text_views, use_positives, pairs=None) -> dict:
        """Embed (raw, before normalisation) the captions, their generated positives and negatives, and paired captions."""
        parts, sizes = [captions], [captions.shape[0], 0, 0, 0]
        if text_views is not None:
            if use_positives:
                parts.append(text_views[:, 0])
                sizes[1] = text_views.shape[0]
            parts.append(text_views[:, 1])
            sizes[2] = text_views.shape[0]
        if pairs is not None:
            parts.append(pairs)
            sizes[3] = pairs.shape[0]
        needs_text = self.image_text_loss is not None or self.text_text_loss is not None or (
            self.text_decoder is not None and self.objective.text_reconstruction.condition == "text"
        )
        if not needs_text:
            return {}
        captions_out, positive, negative, pair = self.model.text(torch.cat(parts)).split(sizes)
        return {"captions": captions_out, "positive": positive, "negative": negative, "pair": pair}

    def _image_text(self, image, text, global_crops, image_views, image_owners, text_owners, use_negatives,
                    teacher) -> dict:
        model = self.model
        negative_images = negative_texts = None
        if self.objective.image_text.image_source == "teacher":
            image_features, _ = teacher(global_crops[:, 0])
            if use_negatives and image_views is not None:
                negative_images, _ = teacher(image_views[:, 1])
        else:
            image_features = F.normalize(image["global"][:, 0], dim=-1)
            if use_negatives and image_views is not None:
                negative_images = F.normalize(image["negative"], dim=-1)
        if use_negatives and text_owners is not None:
            negative_texts = F.normalize(text["negative"], dim=-1)
        return self.image_text_loss(
            image_features, F.normalize(text["captions"], dim=-1), model.logit_scale.exp(), model.logit_bias,
            negative_images, image_owners if negative_images is not None else None,
            negative_texts, text_owners if negative_texts is not None else None,
        )

    def _image_image(self, image, batch, global_crops, image_views, image_owners, use_views, teacher) -> dict:
        head = self.image_image_head
        batch_size, num_global = global_crops.shape[:2]
        student_global = head(image["global"].flatten(0, 1)).view(batch_size, num_global, -1)
        student_local = None
        if "local" in image:
            student_local = head(image["local"].flatten(0, 1)).view(batch_size, image["local"].shape[1], -1)
        teacher_inputs = [global_crops.flatten(0, 1)]
        if use_views and image_views is not None:
            teacher_inputs.append(image_views.flatten(0, 1))  # positive, negative of each owner, interleaved
        _, teacher_out = teacher(torch.cat(teacher_inputs))
        teacher_global = teacher_out[: batch_size * num_global].view(batch_size, num_global, -1)
        student_positive = teacher_positive = teacher_negative = owners = None
        if use_views and image_views is not None:
            generated = teacher_out[batch_size * num_global:].view(-1, 2, teacher_out.shape[-1])
            teacher_positive, teacher_negative = generated[:, 0], generated[:, 1]
            student_positive = head(image["positive"])
            owners = image_owners
        return self.image_image_loss(
            student_global, teacher_global, head.logit_scale.exp(), head.logit_bias,
            student_local=student_local, student_positive=student_positive, teacher_positive=teacher_positive,
            positive_owners=owners, teacher_negative=teacher_negative, negative_owners=owners,
        )

    def _text_text(self, text, text_owners, use_views, pair_owners) -> dict:
        head = self.text_text_head
        positive = negative = owners = paired = None
        if use_views and text_owners is not None:
            positive, negative, owners = head(text["positive"]), head(text["negative"]), text_owners
        if pair_owners is not None:
            paired = head(text["pair"])
        return self.text_text_loss(
            head(text["captions"]), head.logit_scale.exp(), head.logit_bias,
            positive_texts=positive, positive_owners=owners, negative_texts=negative, negative_owners=owners,
            paired_texts=paired, paired_owners=pair_owners,
        )

    def _image_reconstruction(self, images: torch.Tensor) -> dict:
        recon = self.objective.image_reconstruction
        encoded = self.model.visual.forward_masked(images, recon.mask_ratio)
        predictions = self.image_decoder(
            F.normalize(encoded.embedding, dim=-1), encoded.mask_ids, encoded.visible_tokens, encoded.keep_ids
        )
        return self.image_reconstruction_loss(predictions, images, encoded.mask_ids, self.model.visual.patch_size)

    def _text_reconstruction(self, batch, image, text) -> dict:
        recon = self.objective.text_reconstruction
        tokens = batch.get("recon_text", batch["text"])  # [B, L]
        if recon.condition == "image":
            embedding = image["global"][:, 0]
        else:
            embedding = text["captions"]
        if recon.max_captions is not None:
            tokens, embedding = tokens[: recon.max_captions], embedding[: recon.max_captions]
        logits, targets = self.text_decoder(F.normalize(embedding, dim=-1), tokens)
        return self.text_reconstruction_loss(logits, targets)
