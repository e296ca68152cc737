"""Training loader: webdataset shards -> fixed-size batches of images, token ids and GeCo views.

One webdataset ``DataPipeline`` per consumer (a loader worker of one rank). What each stage yields:

  1. shard slices: this consumer's share of the epoch (see ``tulip.data.sampling``), split by rank
     and by worker explicitly at sample level, or, when resampling, shards drawn without end;
  2. raw samples (dicts of tar members sharing a key) read from those slices. A shard that fails
     mid-read is logged, and the stream goes on with the next slice;
  3. the same samples through a shuffle buffer seeded from (seed, epoch, rank, worker);
  4. decoded samples: image transformed, captions chosen (see ``RecaptionMixer``) and tokenised,
     views if present; a sample that fails is counted and dropped, and the random augmentations
     draw from a generator seeded from (seed, epoch, rank, worker), not from the process's RNG;
  5. exactly the consumer's number of samples: an epoch cut short by dropped samples is filled by
     repeating recent good samples (counted as ``repeated_to_fill``), so no rank runs short;
  6. full batches only, each carrying the skip counts its worker gathered since the last batch.

Every rank therefore takes ``steps_per_epoch`` steps, whatever was dropped, and no collective
waits on a rank that ran out of data.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import random
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import torch
import webdataset as wds
from PIL import Image

from tulip.data.captions import RecaptionMixer
from tulip.data.reader import ShardReadError, iter_shard
from tulip.data.sampling import (
    Consumer,
    ShardSlice,
    derive_seed,
    epoch_slices,
    resampled_slices,
    steps_per_epoch,
    worker_batches,
)
from tulip.data.stats import SkipCounter

logger = logging.getLogger(__name__)

# A stream in which this many samples in a row fail to decode, or this many shards in a row give
# no sample, is broken as a whole. Raising then beats waiting forever for a good sample.
MAX_CONSECUTIVE_FAILURES = 1000


@dataclass
class LoaderOptions:
    batch_size: int  # per training process
    num_workers: int = 0
    shuffle_buffer: int = 2000
    shuffle_initial: int = 500
    seed: int = 0
    use_views: bool = True
    text_pairs: bool = False  # also tokenise each sample's other caption as ``text_pair`` (see SampleDecoder)
    resample: bool = False  # draw shards with replacement instead of reading each sample once per epoch
    samples_per_epoch: int | None = None  # resampled epoch length over all ranks; None: the shard set's size
    rank: int = 0
    world_size: int = 1
    timeout_s: float = 0.0  # how long the loader waits for a worker's batch; 0 waits forever
    log_interval_s: float = 10.0  # minimum gap between two log lines about skipped samples


def _decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return image.convert("RGB")


class SampleDecoder:
    """Turn a raw webdataset sample into tensors; raises on a sample without an image or caption.

    An image transform with ``accepts_bytes`` set (``tulip.models.transforms.TrainTransform``) gets
    the encoded bytes and decodes them itself, at reduced scale where its crop allows. Any other
    transform gets a PIL RGB image. With a ``crop_transform`` (``tulip.data.crops.MultiCropTransform``)
    the sample also gets ``global_crops`` [G, C, H, W] and ``local_crops`` [L, C, h, w], and ``image``
    is the first global crop. With ``text_pairs``, a sample with a recaption also gets ``text_pair``
    [L]: whichever of its caption and recaption the contrastive caption ``text`` is not.
    """

    def __init__(self, image_transform: Callable, tokenizer: Callable, use_views: bool,
                 captions: RecaptionMixer | None = None, crop_transform: Callable | None = None,
                 text_pairs: bool = False):
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.use_views = use_views
        self.captions = captions or RecaptionMixer(contrastive=0.0, reconstruction=0.0)
        self.crop_transform = crop_transform
        self.text_pairs = text_pairs

    def __call__(self, raw: dict) -> dict:
        key = raw.get("__key__", "?")
        if "jpg" not in raw or "txt" not in raw:
            raise ValueError(f"sample {key!r} has no jpg image or txt caption (members: {sorted(raw)})")
        caption = raw["txt"].decode("utf-8", errors="replace")
        recaption = raw["recap.txt"].decode("utf-8", errors="replace") if "recap.txt" in raw else None
        text, recon_text = self.captions(key, caption, recaption)
        if recon_text == text:
            tokens = self.tokenizer([text]).expand(2, -1)  # [2, L], tokenised once
        else:
            tokens = self.tokenizer([text, recon_text])  # [2, L]: contrastive caption, reconstruction caption
        sample = {
            "key": key,
            "text": tokens[0],
            "recon_text": tokens[1],
            "meta": json.loads(raw["json"]) if "json" in raw else {},
        }
        if self.text_pairs and recaption:
            other = caption if text == recaption else recaption
            sample["text_pair"] = tokens[1] if recon_text == other else self.tokenizer([other])[0]
        if self.crop_transform is None:
            sample["image"] = self._image(raw["jpg"])
        else:
            sample.update(self.crop_transform(_decode_image(raw["jpg"])))
            sample["image"] = sample["global_crops"][0]
        if self.use_views and "pos.txt" in raw and "neg.txt" in raw:
            texts = [raw["pos.txt"].decode("utf-8"), raw["neg.txt"].decode("utf-8")]
            sample["text_views"] = self.tokenizer(texts)  # [2, L]: positive, negative
        if self.use_views and "pos.jpg" in raw and "neg.jpg" in raw:
            sample["image_views"] = torch.stack([self._image(raw["pos.jpg"]), self._image(raw["neg.jpg"])])  # [2, C, H, W]
        return sample

    def _image(self, data: bytes) -> torch.Tensor:
        if getattr(self.image_transform, "accepts_bytes", False):
            return self.image_transform(data)
        return self.image_transform(_decode_image(data))


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch; views are packed with the batch indices of the samples that own them."""
    batch = {
        "key": [s["key"] for s in samples],
        "text": torch.stack([s["text"] for s in samples]),  # [B, L]
        "recon_text": torch.stack([s["recon_text"] for s in samples]),  # [B, L]
    }
    for name in ("global_crops", "local_crops"):
        if name in samples[0]:
            batch[name] = torch.stack([s[name] for s in samples])  # [B, G or L, C, H, W]
    if "global_crops" in batch:
        batch["image"] = batch["global_crops"][:, 0]  # a view: the first global crop is the image
    else:
        batch["image"] = torch.stack([s["image"] for s in samples])  # [B, C, H, W]
    for name in ("text_views", "image_views", "text_pair"):
        owners = [i for i, s in enumerate(samples) if name in s]
        batch[f"{name}_index"] = torch.tensor(owners, dtype=torch.long)  # [K]
        if owners:
            batch[name] = torch.stack([samples[i][name] for i in owners])  # [K, 2, ...] views, [K, L] pairs
    return batch


class SharedEpoch:
    """The epoch number and the batches of it to skip, shared with loader workers that outlive one epoch."""

    def __init__(self, epoch: int = 0):
        self._value = multiprocessing.Value("q", epoch)
        self._skip = multiprocessing.Value("q", 0)

    def set(self, epoch: int, skip_batches: int = 0) -> None:
        self._value.value = epoch
        self._skip.value = skip_batches

    def get(self) -> int:
        return self._value.value

    def skip_batches(self) -> int:
        """Batches of this rank's epoch already trained on (by a run this one resumes)."""
        return self._skip.value


class ConsumerStream:
    """The pipeline stages of one consumer; each stage reads the consumer and epoch when an epoch starts."""

    def __init__(self, shards: Sequence[str], counts: Sequence[int], decoder: SampleDecoder,
                 options: LoaderOptions, steps: int, epoch: SharedEpoch):
        self.shards, self.counts = list(shards), list(counts)
        self.decoder, self.options, self.steps, self.epoch = decoder, options, steps, epoch
        self.skips = SkipCounter("train loader", options.log_interval_s)

    def consumer(self) -> Consumer:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return Consumer(self.options.rank, self.options.world_size, worker, workers)

    def num_samples(self) -> int:
        consumer = self.consumer()
        return worker_batches(self.steps, consumer.worker, consumer.num_workers) * self.options.batch_size

    def skipped_samples(self) -> int:
        """Samples at the start of this consumer's epoch that a resumed run has already trained on."""
        consumer = self.consumer()
        skip = min(self.epoch.skip_batches(), self.steps)
        return worker_batches(skip, consumer.worker, consumer.num_workers) * self.options.batch_size

    def slices(self) -> Iterator[ShardSlice]:
        """Stage 1: this consumer's shard slices for the current epoch."""
        options, consumer = self.options, self.consumer()
        self.skips.name = f"train loader (rank {consumer.rank}, worker {consumer.worker})"
        if options.resample:
            return resampled_slices(self.counts, options.seed, self.epoch.get(), consumer)
        return iter(epoch_slices(self.counts, options.seed, self.epoch.get(), options.batch_size, self.steps, consumer))

    def read(self, slices: Iterator[ShardSlice]) -> Iterator[dict]:
        """Stage 2: raw samples of each slice; shard failures are counted and skipped."""
        empty_in_a_row = 0
        for piece in slices:
            path = self.shards[piece.shard]
            position = 0
            try:
                for sample in iter_shard(path, self.skips.add):
                    if position >= piece.start:
                        yield sample
                    position += 1
                    if piece.stop is not None and position >= piece.stop:
                        break
            except ShardReadError as error:
                self.skips.add(error.reason, str(error))
            if piece.stop is not None and position < piece.stop:
                self.skips.add("short_shard", f"{path}: {position} usable samples, the plan expected {piece.stop}")
            empty_in_a_row = empty_in_a_row + 1 if position <= piece.start else 0
            if empty_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{empty_in_a_row} shard reads in a row gave no sample (last: {path}); "
                                   f"skips so far: {dict(self.skips.counts)}")

    def shuffle(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Stage 3: a shuffle buffer seeded from (seed, epoch, rank, worker)."""
        consumer, options = self.consumer(), self.options
        rng = random.Random(derive_seed(options.seed, self.epoch.get(), consumer.rank, consumer.worker, "shuffle"))
        return wds.shuffle(options.shuffle_buffer, options.shuffle_initial, rng=rng)(samples)

    def decode(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Stage 4: decoded samples; the first ``skipped_samples`` are passed over undecoded.

        The random augmentations of the i-th sample draw from torch and Python generators seeded
        from (seed, epoch, rank, worker, i). A resumed run passes over the samples it has already
        trained on, and it decodes the rest exactly as an uninterrupted run would.
        """
        consumer, epoch = self.consumer(), self.epoch.get()
        skip = self.skipped_samples()
        failures = 0
        for index, raw in enumerate(samples):
            if index < skip:
                continue
            seed = derive_seed(self.options.seed, epoch, consumer.rank, consumer.worker, "augment", index)
            python_state = random.getstate()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                try:
                    sample = self.decoder(raw)
                except Exception as error:  # noqa: BLE001 - any sample the decoder cannot handle is dropped
                    failures += 1
                    self.skips.add("decode_error", f"{raw.get('__key__')}: {type(error).__name__}: {error}")
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        raise RuntimeError(f"{failures} samples in a row failed to decode; the last error was "
                                           f"{type(error).__name__}: {error}") from error
                    continue
                finally:
                    random.setstate(python_state)
            failures = 0
            yield sample

    def exact(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Stage 5: exactly ``num_samples`` samples, filling a short epoch with repeats.

        A slice cut short by dropped samples repeats its most recent good samples. A slice that gave
        no good sample at all (every shard in it damaged) fills from shards drawn at random from the
        whole set instead.
        """
        # NOTE: samples passed over on resume are counted by position, before decoding. When one of
        # them failed to decode in the first run, the resumed epoch is shifted by one sample.
        expected = self.num_samples() - self.skipped_samples()
        recent: deque = deque(maxlen=max(self.options.batch_size, 1))
        produced = 0
        for sample in islice(samples, expected):
            recent.append(sample)
            produced += 1
            yield sample
        shortfall = expected - produced
        if shortfall == 0:
            return
        self.skips.add("repeated_to_fill", f"{shortfall} samples short of {expected}", count=shortfall)
        if recent:
            for index in range(shortfall):
                yield recent[index % len(recent)]
            return
        consumer = self.consumer()
        drawn = resampled_slices(self.counts, self.options.seed, self.epoch.get(), consumer)
        yield from islice(self.decode(self.read(drawn)), shortfall)

    def attach_skips(self, batches: Iterator[dict]) -> Iterator[dict]:
        """Stage 6: each batch carries the skip counts gathered since the previous batch."""
        for batch in batches:
            batch["skipped"] = self.skips.take_unreported()
            yield batch

    def pipeline(self) -> wds.DataPipeline:
        return wds.DataPipeline(
            self.slices,
            self.read,
            self.shuffle,
            self.decode,
            self.exact,
            wds.batched(self.options.batch_size, collation_fn=collate, partial=False),
            self.attach_skips,
        )


class TrainLoader:
    """Batches for one training process. Each iteration is one epoch; ``set_epoch`` picks which."""

    def __init__(self, stream: ConsumerStream, loader: wds.WebLoader, steps: int):
        self.stream, self.loader, self.steps_per_epoch = stream, loader, steps
        self._next_epoch = 0
        self._skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting after its first ``skip_batches`` batches."""
        if not 0 <= skip_batches <= self.steps_per_epoch:
            raise ValueError(f"cannot skip {skip_batches} of the epoch's {self.steps_per_epoch} batches")
        self._next_epoch = epoch
        self._skip_batches = skip_batches

    def __len__(self) -> int:
        return self.steps_per_epoch

    def close(self) -> None:
        """Stop the worker processes now. Workers ignore SIGTERM, so they must not be left to exit handlers."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def __iter__(self) -> Iterator[dict]:
        # The data loader takes batches from its workers in turn, starting from worker 0. So the workers
        # skip whole rounds, and the remaining batches of the last round are read and dropped here.
        workers = max(self.stream.options.num_workers, 1)
        dropped = self._skip_batches % workers
        self.stream.epoch.set(self._next_epoch, self._skip_batches - dropped)
        self._next_epoch += 1
        self._skip_batches = 0
        return islice(iter(self.loader), dropped, None)


def _ignore_stop_signals(worker_id: int) -> None:
    """Ignore SIGTERM and SIGUSR1 in a loader worker, so the training process alone handles them.

    A scheduler signals every process of the job. A worker that died on the signal would fail the
    step that the training process finishes before it writes its checkpoint.
    """
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def build_train_loader(
    shards: Sequence[str],
    counts: Sequence[int],
    image_transform: Callable,
    tokenizer: Callable,
    options: LoaderOptions,
    captions: RecaptionMixer | None = None,
    crop_transform: Callable | None = None,
) -> TrainLoader:
    """Return a loader yielding ``steps_per_epoch`` full batches per epoch on this rank.

    ``counts`` are the usable samples of each shard (``tulip.data.preflight.preflight`` returns them).
    ``crop_transform`` adds multi-crop views to every sample, see ``SampleDecoder``.

    Raises:
        ValueError: no shards, mismatched counts, or fewer samples than one global batch.
    """
    if not shards:
        raise ValueError("no training shards given")
    if len(counts) != len(shards):
        raise ValueError(f"{len(shards)} shards but {len(counts)} sample counts")
    total = sum(counts)
    if options.resample:
        epoch_samples = options.samples_per_epoch or total
        steps = max(steps_per_epoch(epoch_samples, options.batch_size, options.world_size), 1)
    else:
        steps = steps_per_epoch(total, options.batch_size, options.world_size)
        if steps == 0:
            raise ValueError(
                f"the shards hold {total} usable samples, fewer than one global batch of {options.batch_size} x "
                f"{options.world_size} processes; lower train.batch_size, add data, or set train.resample: true"
            )
    decoder = SampleDecoder(image_transform, tokenizer, options.use_views, captions, crop_transform,
                            options.text_pairs)
    stream = ConsumerStream(shards, counts, decoder, options, steps, SharedEpoch())
    loader = wds.WebLoader(
        stream.pipeline(),
        batch_size=None,
        num_workers=options.num_workers,
        persistent_workers=options.num_workers > 0,
        timeout=options.timeout_s if options.num_workers > 0 else 0,
        pin_memory=torch.cuda.is_available(),
        # Its own generator, so starting an epoch draws no number from the process's torch RNG,
        # whose state a resumed run restores at a step boundary.
        generator=torch.Generator().manual_seed(derive_seed(options.seed, options.rank, "loader")),
        worker_init_fn=_ignore_stop_signals,
    )
    return TrainLoader(stream, loader, steps)
