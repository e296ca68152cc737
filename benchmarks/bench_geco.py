"""GeCo throughput: paraphrase tokens/s and image edits/s, batched as configured against a naive run.

The configured run uses the models, batch sizes and sampler steps of ``geco.text`` and
``geco.image`` in the config. The naive run is the same pipeline with one sample at a time and,
for the editor, the diffusers pipeline's default 100 sampler steps. Both runs generate the same
views (sampling is seeded per sample), so the token counts agree. Captions are drawn from the
Fashion-MNIST caption templates and images are Fashion-MNIST training images when the package is
installed (flat-colour images otherwise). When a configured model folder does not exist yet, a
tiny random-weight stand-in is built for the run, as the workflow builds them.

    python benchmarks/bench_geco.py                          # config/config.yaml, 64 captions, 8 images
    python benchmarks/bench_geco.py --text-model meta-llama/Llama-3.1-8B-Instruct \\
        --image-model timbrooks/instruct-pix2pix --resolution 512 --steps 20   # on a GPU machine

The figures are printed last, one ``name: value`` per line.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image

from tulip.data.fashion_mnist import DEFAULT_ROOT, caption_templates, class_info, load_split, make_caption
from tulip.geco.image_views import ImageEditor, ImageEditSettings
from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings
from tulip.geco.tiny_models import build_tiny_instruct_pix2pix, build_tiny_lm

PIPELINE_DEFAULT_STEPS = 100  # StableDiffusionInstructPix2PixPipeline's num_inference_steps default


def captions(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    classes, templates = class_info(), caption_templates()
    return [(f"{i:09d}", make_caption(rng.randrange(len(classes)), rng, classes, templates)) for i in range(count)]


def images(count: int) -> list[tuple[str, Image.Image]]:
    if (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pixels, _ = load_split(DEFAULT_ROOT, "train")
        return [(f"{i:09d}", Image.fromarray(pixels[i], mode="L").convert("RGB")) for i in range(count)]
    return [(f"{i:09d}", Image.new("RGB", (28, 28), (25 * i % 256, 120, 200))) for i in range(count)]


def settings_from(section: dict, cls, **overrides):
    fields = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
    return cls(**{**fields, **overrides})


def time_text(model: str, settings: TextGenerationSettings, items, device: str) -> tuple[float, int, dict]:
    generator = ParaphraseGenerator(model, settings, device=device)
    generator.generate(items[:2])  # warm-up: first-call allocations and kernel selection
    generator.tokens_generated = 0
    start = time.perf_counter()
    results = generator.generate(items)
    _sync(device)
    return time.perf_counter() - start, generator.tokens_generated, results


def time_images(model: str, settings: ImageEditSettings, items, device: str) -> tuple[float, int]:
    editor = ImageEditor(model, settings, device=device, soft_prompts=None)
    editor.generate(items[:1])
    editor.images_edited = 0
    start = time.perf_counter()
    editor.generate(items)
    _sync(device)
    return time.perf_counter() - start, editor.images_edited


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/config.yaml", help="workflow config whose geco section is measured")
    parser.add_argument("--text-model", help="override geco.text.model")
    parser.add_argument("--image-model", help="override geco.image.model")
    parser.add_argument("--captions", type=int, default=64)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, help="override geco.image.resolution")
    parser.add_argument("--steps", type=int, help="override geco.image.num_inference_steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    geco = yaml.safe_load(Path(args.config).read_text())["geco"]
    text_items, image_items = captions(args.captions, seed=0), images(args.images)

    with tempfile.TemporaryDirectory() as scratch:
        text_model = args.text_model or geco["text"]["model"]
        if not args.text_model and not Path(text_model).is_dir():
            text_model = str(build_tiny_lm(Path(scratch) / "lm", [c for _, c in text_items]))
        image_model = args.image_model or geco["image"]["model"]
        if not args.image_model and not Path(image_model).is_dir():
            image_model = str(build_tiny_instruct_pix2pix(Path(scratch) / "editor"))

        text = settings_from(geco["text"], TextGenerationSettings)
        batched_s, tokens, batched = time_text(text_model, text, text_items, device)
        naive_s, naive_tokens, naive = time_text(text_model, settings_from(geco["text"], TextGenerationSettings,
                                                                           batch_size=1), text_items, device)
        if batched != naive:
            raise SystemExit("batched and one-by-one text views differ; the comparison is void")

        overrides = {k: v for k, v in (("resolution", args.resolution), ("num_inference_steps", args.steps)) if v}
        image = settings_from(geco["image"], ImageEditSettings, **overrides)
        edit_s, edits = time_images(image_model, image, image_items, device)
        one_s, _ = time_images(image_model, settings_from(geco["image"], ImageEditSettings, batch_size=1, **overrides),
                               image_items, device)
        naive_image = settings_from(geco["image"], ImageEditSettings, batch_size=1,
                                    **{**overrides, "num_inference_steps": PIPELINE_DEFAULT_STEPS})
        naive_edit_s, _ = time_images(image_model, naive_image, image_items, device)

    figures = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads,
        "text_model": text_model if args.text_model else geco["text"]["model"],
        "text_batch_size": text.batch_size,
        "captions": len(text_items),
        "tokens_generated": tokens,
        "paraphrase_tokens_per_s": round(tokens / batched_s, 1),
        "paraphrase_tokens_per_s_naive": round(naive_tokens / naive_s, 1),
        "paraphrase_speedup": round(naive_s / batched_s, 2),
        "image_model": image_model if args.image_model else geco["image"]["model"],
        "image_batch_size": image.batch_size,
        "image_steps": image.num_inference_steps,
        "image_resolution": image.resolution,
        "image_edits": edits,
        "image_edits_per_s": round(edits / edit_s, 2),
        "image_edits_per_s_batch1": round(edits / one_s, 2),
        "image_edits_per_s_naive": round(edits / naive_edit_s, 3),
        "image_speedup": round(naive_edit_s / edit_s, 1),
    }
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
