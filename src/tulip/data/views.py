"""Training shards: the downloaded shards with each sample's GeCo views added under its key.

Each downloaded shard becomes the training shard of the same name, with its samples in the same
order, so the two sets line up shard by shard. The views come from the augment stages:

- text views, one JSONL per downloaded shard: a line ``{"key", "caption", "positive",
  "negative"}`` per sample;
- image views, one JSONL per downloaded shard: a line ``{"key", "positive", "negative"}`` per
  sample, with image paths relative to the JSONL file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tulip.data.reader import iter_shard
from tulip.data.shards import MEMBERS, ShardWriter, read_manifest, write_manifest

logger = logging.getLogger(__name__)


def _read_jsonl(path: Path) -> dict[str, dict]:
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: invalid JSON ({error})") from error
        missing = [field for field in ("key", "positive", "negative") if field not in row]
        if missing:
            raise ValueError(f"{path}, line {number}: missing field(s) {missing}")
        rows[row["key"]] = row
    return rows


def _paths(files: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if not files:
        return []
    return [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]


def read_views(text_views: str | Path | Sequence[str | Path] | None,
               image_views: str | Path | Sequence[str | Path] | None) -> tuple[dict, dict]:
    """Return (text views, image views) by sample key from one JSONL or a list of them; image paths become absolute."""
    texts = {}
    for path in _paths(text_views):
        texts.update(_read_jsonl(path))
    images = {}
    for path in _paths(image_views):
        images.update({key: {view: str(path.parent / row[view]) for view in ("positive", "negative")}
                       for key, row in _read_jsonl(path).items()})
    return texts, images


def write_training_shards(source_manifest: str | Path, out_dir: str | Path, text_views: dict | None = None,
                          image_views: dict | None = None) -> dict:
    """Copy every shard of ``source_manifest`` into ``out_dir`` with the views added; return the new manifest.

    Raises:
        ShardReadError: a source shard cannot be read to its end.
    """
    source_manifest, out_dir = Path(source_manifest), Path(out_dir)
    text_views, image_views = text_views or {}, image_views or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    source = read_manifest(source_manifest)
    used: Counter = Counter()
    dropped: Counter = Counter()
    shards = []
    for entry in source["shards"]:
        counts = Counter()
        with ShardWriter(out_dir / entry["name"]) as writer:
            for raw in iter_shard(source_manifest.parent / entry["name"], lambda reason, _: dropped.update([reason])):
                key = raw["__key__"]
                members = {name: data for name, data in raw.items() if name in MEMBERS}
                if key in text_views:
                    members["pos.txt"] = text_views[key]["positive"].encode("utf-8")
                    members["neg.txt"] = text_views[key]["negative"].encode("utf-8")
                    counts["num_text_views"] += 1
                if key in image_views:
                    members["pos.jpg"] = Path(image_views[key]["positive"]).read_bytes()
                    members["neg.jpg"] = Path(image_views[key]["negative"]).read_bytes()
                    counts["num_image_views"] += 1
                counts["num_recaptions"] += "recap.txt" in members
                writer.add(key, members)
        used.update(counts)
        shards.append({"name": entry["name"], "num_samples": writer.num_samples, "num_bytes": writer.num_bytes,
                       **{k: counts[k] for k in ("num_text_views", "num_image_views", "num_recaptions")}})
    if dropped:
        logger.warning("dropped malformed samples of the source shards: %s", dict(dropped))
    for name, views, count in (("text", text_views, used["num_text_views"]), ("image", image_views, used["num_image_views"])):
        if count < len(views):
            logger.warning("%d %s view(s) name keys that are in no source shard; they are not stored", len(views) - count, name)
    manifest = write_manifest(out_dir, shards, **{k: used[k] for k in ("num_text_views", "num_image_views", "num_recaptions")},
                              source=str(source_manifest))
    logger.info("wrote %d samples (%d with text views, %d with image views) in %d shards to %s",
                manifest["num_samples"], manifest["num_text_views"], manifest["num_image_views"], len(shards), out_dir)
    return manifest
