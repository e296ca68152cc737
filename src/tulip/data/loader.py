"""Training loader: webdataset shards -> batches of image tensors, token ids and GeCo views.

Pipeline (what each stage yields):
  1. resampled shard URLs, drawn per (seed, rank, worker, epoch), so every rank and worker reads
     an endless stream and the epoch length alone decides the step count;
  2. raw samples (dicts of tar members sharing a key);
  3. a shuffle buffer seeded the same way;
  4. training samples: the image transformed, the caption tokenised, the views if present;
  5. fixed-size batches (no partial batch), counted by ``with_epoch`` so every rank takes the same
     number of steps.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import webdataset as wds
from PIL import Image

from tulip.data.stats import SkipCounter

logger = logging.getLogger(__name__)


@dataclass
class LoaderOptions:
    batch_size: int
    num_workers: int = 0
    shuffle_buffer: int = 2000
    shuffle_initial: int = 500
    seed: int = 0
    use_views: bool = True


def _worker_seed(seed: int, epoch: int) -> int:
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    return hash((seed, epoch, rank, worker)) & 0x7FFFFFFF


class _SeededShuffle:
    """Shuffle buffer whose RNG is seeded from (seed, epoch, rank, worker) when iteration starts."""

    def __init__(self, bufsize: int, initial: int, seed: int):
        self.bufsize, self.initial, self.seed, self.epoch = bufsize, initial, seed, -1

    def __call__(self, source: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        rng = random.Random(_worker_seed(self.seed, self.epoch))
        return wds.filters._shuffle(source, self.bufsize, self.initial, rng=rng)


def _decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return image.convert("RGB")


class SampleDecoder:
    """Turn a raw webdataset sample into tensors; raises on a sample without an image or caption.

    With a ``crop_transform`` (``tulip.data.crops.MultiCropTransform``) the sample also gets
    ``global_crops`` [G, C, H, W] and ``local_crops`` [L, C, h, w], and ``image`` is the first global crop.
    """

    def __init__(
        self, image_transform: Callable, tokenizer: Callable, use_views: bool, crop_transform: Callable | None = None
    ):
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.use_views = use_views
        self.crop_transform = crop_transform

    def __call__(self, raw: dict) -> dict:
        key = raw.get("__key__", "?")
        if "jpg" not in raw or "txt" not in raw:
            raise ValueError(f"sample {key!r} has no jpg image or txt caption (members: {sorted(raw)})")
        caption = raw["txt"].decode("utf-8")
        image = _decode_image(raw["jpg"])
        sample = {
            "key": key,
            "text": self.tokenizer([caption])[0],
            "meta": json.loads(raw["json"]) if "json" in raw else {},
        }
        if self.crop_transform is None:
            sample["image"] = self.image_transform(image)
        else:
            sample.update(self.crop_transform(image))
            sample["image"] = sample["global_crops"][0]
        if self.use_views and "pos.txt" in raw and "neg.txt" in raw:
            texts = [raw["pos.txt"].decode("utf-8"), raw["neg.txt"].decode("utf-8")]
            sample["text_views"] = self.tokenizer(texts)  # [2, L]: positive, negative
        if self.use_views and "pos.jpg" in raw and "neg.jpg" in raw:
            sample["image_views"] = torch.stack(
                [self.image_transform(_decode_image(raw["pos.jpg"])), self.image_transform(_decode_image(raw["neg.jpg"]))]
            )  # [2, C, H, W]
        return sample


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch; views are packed with the batch indices of the samples that own them."""
    batch = {
        "key": [s["key"] for s in samples],
        "text": torch.stack([s["text"] for s in samples]),  # [B, L]
    }
    for name in ("global_crops", "local_crops"):
        if name in samples[0]:
            batch[name] = torch.stack([s[name] for s in samples])  # [B, G or L, C, H, W]
    if "global_crops" in batch:
        batch["image"] = batch["global_crops"][:, 0]  # a view: the first global crop is the image
    else:
        batch["image"] = torch.stack([s["image"] for s in samples])  # [B, C, H, W]
    for name in ("text_views", "image_views"):
        owners = [i for i, s in enumerate(samples) if name in s]
        batch[f"{name}_index"] = torch.tensor(owners, dtype=torch.long)  # [K]
        if owners:
            batch[name] = torch.stack([samples[i][name] for i in owners])  # [K, 2, ...]
    return batch


def build_train_loader(
    shard_urls: list[str],
    image_transform: Callable,
    tokenizer: Callable,
    options: LoaderOptions,
    batches_per_epoch: int,
    skips: SkipCounter | None = None,
    crop_transform: Callable | None = None,
) -> wds.WebLoader:
    """Return a loader yielding exactly ``batches_per_epoch`` batches per epoch on this rank.

    ``crop_transform`` adds multi-crop views to every sample, see ``SampleDecoder``.
    """
    if not shard_urls:
        raise ValueError("no training shards given")
    workers = max(options.num_workers, 1)
    if batches_per_epoch % workers:
        raise ValueError(
            f"batches_per_epoch ({batches_per_epoch}) must be a multiple of num_workers ({options.num_workers}) "
            "so that every rank takes the same number of steps"
        )
    handler = (skips or SkipCounter("train-loader")).handler
    decoder = SampleDecoder(image_transform, tokenizer, options.use_views, crop_transform)
    pipeline = wds.DataPipeline(
        wds.ResampledShards(shard_urls, seed=options.seed, deterministic=True),
        wds.tarfile_to_samples(handler=handler),
        _SeededShuffle(options.shuffle_buffer, options.shuffle_initial, options.seed),
        wds.map(decoder, handler=handler),
        wds.batched(options.batch_size, collation_fn=collate, partial=False),
    ).with_epoch(batches_per_epoch // workers)
    return wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=options.num_workers,
        persistent_workers=options.num_workers > 0,
    )
