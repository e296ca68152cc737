"""One GeCo job per downloaded shard: generate the views of its selected samples, resumably.

Both jobs read one webdataset shard, pick the samples that receive views (a stable function of the
seed and the sample key), skip the samples a killed earlier attempt already finished, and commit
their records batch by batch through :class:`~tulip.geco.progress.ShardProgress`. The final JSONL
holds one line per sample with views, in the layout the shard stage reads:

- text: ``{"key", "caption", "positive", "negative", "attempt", "rejections"}``;
- images: ``{"key", "positive", "negative", "regenerated"}`` with JPEG paths relative to the JSONL.

Text views are also looked up in, and added to, a :class:`~tulip.geco.cache.ViewCache`. Their
sampling is seeded from the caption's hash rather than the sample key, so a cached entry is
exactly what generation would produce, and the generator is not even loaded when every caption
of the shard is cached.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from dataclasses import asdict

from tulip.data.io import atomic_write_bytes, atomic_write_json, stable_hash
from tulip.data.reader import caption_of, iter_shard
from tulip.geco.cache import ViewCache, cache_namespace, caption_hash, file_fingerprint
from tulip.geco.progress import ShardProgress
from tulip.geco.prompts import PROMPT_VERSION
from tulip.geco.seeding import is_selected

logger = logging.getLogger(__name__)


def _selected_samples(shard: Path, fraction: float, seed: int, skipped: Counter) -> list[dict]:
    def on_skip(reason: str, _detail: str) -> None:
        skipped[f"unreadable.{reason}"] += 1

    return [s for s in iter_shard(shard, on_skip) if is_selected(seed, s["__key__"], fraction)]


def stats_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".stats.json")


def run_text_shard(
    shard: str | Path,
    out: str | Path,
    make_generator: Callable[[], object],
    model_id: str,
    settings,
    fraction: float,
    cache_path: str | Path | None,
    backend: str = "transformers",
) -> dict:
    """Write the text views of one shard to ``out`` and its counts beside it; return the counts.

    ``make_generator`` builds the generator (a ParaphraseGenerator or a faster backend) the first
    time a caption misses the cache.
    """
    shard, out = Path(shard), Path(out)
    counts: Counter = Counter()
    samples = _selected_samples(shard, fraction, settings.seed, counts)
    items = [(s["__key__"], caption_of(s)) for s in samples if caption_of(s)]
    counts["no_caption"] += len(samples) - len(items)
    namespace = cache_namespace(model_id, PROMPT_VERSION, {**settings.cache_fields(), "backend": backend})
    fingerprint = stable_hash({"views": namespace, "fraction": fraction, "shard": file_fingerprint(shard)})
    progress = ShardProgress(out, fingerprint).open()
    todo = [(key, caption) for key, caption in items if key not in progress]
    generator = None
    try:
        with ViewCache(cache_path, namespace) as cache:
            for start in range(0, len(todo), settings.batch_size):
                chunk = todo[start : start + settings.batch_size]
                digests = {key: caption_hash(caption) for key, caption in chunk}
                known = cache.get_many(sorted(set(digests.values())))
                missing = {digests[key]: caption for key, caption in chunk if digests[key] not in known}
                counts["cache_hits"] += sum(digests[key] in known for key, _ in chunk)
                if missing:
                    generator = generator or make_generator()
                    fresh = generator.generate(sorted(missing.items()))
                    cache.put_many(fresh)
                    known.update(fresh)
                    counts["generated"] += len(fresh)
                progress.add([{"key": key, "caption": caption, **known[digests[key]]} for key, caption in chunk])
    finally:
        progress.close()
    stats = _text_stats(progress.records.values(), counts, progress.resumed)
    atomic_write_json(stats_path(out), stats)
    progress.commit(keep=lambda record: record["positive"] is not None)
    logger.info("%s: text views for %d of %d selected samples, %s", shard.name, stats["kept"], len(samples), stats)
    return stats


def _text_stats(records, counts: Counter, resumed: int) -> dict:
    """Counts over every record of the shard, so a resumed job reports what an uninterrupted one would."""
    rejections: Counter = Counter()
    outcome: Counter = Counter()
    for record in records:
        rejections.update(record["rejections"])
        outcome["kept" if record["positive"] is not None else "dropped"] += 1
    return {"selected": sum(outcome.values()) + counts["no_caption"], "kept": outcome["kept"],
            "dropped": outcome["dropped"], "rejections": dict(sorted(rejections.items())),
            "resumed": resumed, "generated": counts["generated"], "cache_hits": counts["cache_hits"],
            **{k: v for k, v in sorted(counts.items()) if k.startswith("unreadable.") or k == "no_caption"}}


def run_image_shard(
    shard: str | Path,
    out: str | Path,
    make_editor: Callable[[], object],
    model_id: str,
    settings,
    fraction: float,
    soft_prompts: str | Path | None = None,
) -> dict:
    """Write the edited views of one shard beside ``out`` (in ``<out stem>/``) and their JSONL; return the counts.

    ``model_id`` and ``soft_prompts`` (the embeddings file, if any) identify the editor for the
    fingerprint that decides whether a partial file may be resumed.
    """
    shard, out = Path(shard), Path(out)
    view_dir = out.with_name(out.name.removesuffix(".jsonl"))
    counts: Counter = Counter()
    samples = _selected_samples(shard, fraction, settings.seed, counts)
    edit_settings = {k: v for k, v in asdict(settings).items() if k != "batch_size"}
    fingerprint = stable_hash({"model": model_id, "settings": edit_settings, "fraction": fraction,
                               "soft_prompts": soft_prompts and file_fingerprint(soft_prompts),
                               "shard": file_fingerprint(shard)})
    progress = ShardProgress(out, fingerprint).open()
    todo = [s for s in samples if s["__key__"] not in progress]
    editor = make_editor() if todo else None
    try:
        for start in range(0, len(todo), settings.batch_size):
            chunk = todo[start : start + settings.batch_size]
            images = []
            for sample in chunk:
                with Image.open(io.BytesIO(sample["jpg"])) as image:
                    images.append((sample["__key__"], image.convert("RGB")))
            records = []
            for key, result in editor.generate(images).items():
                record = {"key": key, "positive": None, "negative": None, "regenerated": result["regenerated"]}
                if result["positive"] is not None:
                    for view, suffix in (("positive", "pos"), ("negative", "neg")):
                        buffer = io.BytesIO()
                        result[view].save(buffer, format="JPEG", quality=95)
                        atomic_write_bytes(view_dir / f"{key}_{suffix}.jpg", buffer.getvalue())
                        record[view] = f"{view_dir.name}/{key}_{suffix}.jpg"
                records.append(record)
            progress.add(records)
    finally:
        progress.close()
    done = progress.records.values()
    stats = {"selected": len(samples), "kept": sum(r["positive"] is not None for r in done),
             "dropped_constant": sum(r["positive"] is None for r in done),
             "regenerated_constant": sum(r["regenerated"] for r in done), "resumed": progress.resumed,
             **{k: v for k, v in sorted(counts.items())}}
    atomic_write_json(stats_path(out), stats)
    progress.commit(keep=lambda record: record["positive"] is not None)
    logger.info("%s: image views for %d of %d selected samples, %s", shard.name, stats["kept"], len(samples), stats)
    return stats


def sum_stats(stats: list[dict]) -> dict:
    """Add up per-shard counts key by key, nested sections included."""
    total: dict = {}
    for entry in stats:
        for key, value in entry.items():
            if isinstance(value, dict):
                total[key] = sum_stats([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
