"""Training-loader throughput per core beside the raw single-thread JPEG decode rate on the same files.

The loader's work per sample is reading the tar member, decoding the JPEG, a random resized crop,
normalising, tokenising two captions and collating. Decoding is the floor of that work, so the
ratio of the two rates shows how much the rest costs. Both are measured in this one run, on JPEGs
cut from scikit-learn's two sample photographs and stored the way the download stage stores them
(shorter side 256 by default).

    python benchmarks/bench_loader.py                  # 2,000 samples, 224-pixel crops, one core
    python benchmarks/bench_loader.py --workers 2      # loader workers; the rate is divided by them

The figures are printed last, one ``name: value`` per line.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from tulip.data.captions import RecaptionMixer
from tulip.data.loader import LoaderOptions, build_train_loader
from tulip.data.shards import ShardWriter
from tulip.models.config import TokenizerConfig
from tulip.models.registry import get_model_config
from tulip.models.tokenizer import Tokenizer
from tulip.models.transforms import image_transform


def make_jpegs(count: int, shorter_side: int, seed: int) -> list[bytes]:
    """Random crops of the sample photographs, resized so the shorter side is ``shorter_side``, as JPEG (quality 95)."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(array) for array in load_sample_images().images]  # two 427x640 photographs
    jpegs = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        width, height = photo.size
        crop_w, crop_h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
        left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
        crop = photo.crop((left, top, left + crop_w, top + crop_h))
        scale = shorter_side / min(crop.size)
        crop = crop.resize((round(crop.size[0] * scale), round(crop.size[1] * scale)), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    return jpegs


def write_shards(jpegs: list[bytes], folder: Path, per_shard: int) -> tuple[list[str], list[int]]:
    paths, counts = [], []
    for index, start in enumerate(range(0, len(jpegs), per_shard)):
        path = folder / f"shard-{index:06d}.tar"
        with ShardWriter(path) as writer:
            for key in range(start, min(start + per_shard, len(jpegs))):
                writer.add(f"{key:09d}", {
                    "jpg": jpegs[key],
                    "txt": f"a photograph of a scene, number {key}".encode(),
                    "recap.txt": f"a detailed photograph showing a scene with buildings or flowers, number {key}".encode(),
                })
        paths.append(str(path))
        counts.append(writer.num_samples)
    return paths, counts


def decode_rate(jpegs: list[bytes]) -> float:
    """JPEG files decoded to pixels per second by PIL (libjpeg-turbo), on this thread, nothing else done."""
    start = time.perf_counter()
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    return len(jpegs) / (time.perf_counter() - start)


def loader_rate(paths: list[str], counts: list[int], preset: str, batch_size: int, workers: int) -> float:
    """Samples per second through one epoch of the training loader."""
    cfg = get_model_config(preset)
    # The preset's own tokenizer may live on a model hub; open_clip's bundled BPE does the same work offline.
    tokenizer = Tokenizer(TokenizerConfig(type="openclip"), cfg.text.context_length)
    options = LoaderOptions(batch_size=batch_size, num_workers=workers, shuffle_buffer=1000, shuffle_initial=200)
    loader = build_train_loader(paths, counts, image_transform(cfg, train=True), tokenizer, options, RecaptionMixer())
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch["key"])
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="JPEGs in the benchmark set (default: %(default)s)")
    parser.add_argument("--shorter-side", type=int, default=256, help="stored image size in pixels (default: %(default)s)")
    parser.add_argument("--preset", default="TULIP-B-16-224", help="model preset whose transform is used (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes; 0 decodes in this process")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one core for the main process; each worker process also uses one thread
    jpegs = make_jpegs(args.samples, args.shorter_side, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        paths, counts = write_shards(jpegs, Path(folder), per_shard=500)
        loader_rate(paths, counts, args.preset, args.batch_size, args.workers)  # warm-up: imports, page cache
        decode, load = [], []
        for _ in range(args.repeats):  # interleaved, so a change of machine load hits both
            decode.append(decode_rate(jpegs))
            load.append(loader_rate(paths, counts, args.preset, args.batch_size, args.workers))
    cores = max(args.workers, 1)
    decode_per_s, loader_per_core = statistics.median(decode), statistics.median(load) / cores
    print(f"samples: {args.samples}")
    print(f"stored_shorter_side_px: {args.shorter_side}")
    print(f"crop_px: {get_model_config(args.preset).vision.image_size}")
    print(f"loader_workers: {args.workers}")
    print(f"jpeg_decode_per_s_single_thread: {decode_per_s:.1f}")
    print(f"loader_samples_per_s_per_core: {loader_per_core:.1f}")
    print(f"loader_to_decode_ratio: {loader_per_core / decode_per_s:.3f}")


if __name__ == "__main__":
    main()
