"""GeCo shard jobs: the view cache, resuming a killed job, and the per-shard files the shard stage reads."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tulip.data.shards import ShardWriter
from tulip.data.views import read_views
from tulip.geco.cache import model_fingerprint
from tulip.geco.image_views import ImageEditor, ImageEditSettings
from tulip.geco.progress import ShardProgress
from tulip.geco.shard_jobs import run_image_shard, run_text_shard, sum_stats
from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings
from tulip.geco.tiny_models import build_tiny_instruct_pix2pix, build_tiny_lm

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = [
    "a photo of a red coat",
    "a small black and white photo of a sneaker",
    "an image of a leather boot on a plain dark background",
    "a product photo of a tote bag",
    "this is a pair of trousers",
    "a photo of a red coat",  # repeated: one generation serves both samples
]


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((28, 28), 30 + seed).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_shard(path: Path, first: int, count: int) -> Path:
    with ShardWriter(path) as writer:
        for i in range(first, first + count):
            writer.add(f"{i:09d}", {"jpg": _jpeg(i), "txt": CAPTIONS[i % len(CAPTIONS)].encode()})
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("lm"), CAPTIONS, seed=0))


@pytest.fixture(scope="module")
def tiny_editor(tmp_path_factory):
    return str(build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("editor"), seed=0))


@pytest.fixture
def shards(tmp_path):
    return _write_shard(tmp_path / "shard-000000.tar", 0, 12), _write_shard(tmp_path / "shard-000001.tar", 12, 6)


SETTINGS = TextGenerationSettings(max_new_tokens=10, batch_size=4)


def _text_job(shard, out, tiny_lm, cache, settings=SETTINGS, make_generator=None):
    make = make_generator or (lambda: ParaphraseGenerator(tiny_lm, settings))
    return run_text_shard(shard, out, make, model_fingerprint(tiny_lm), settings, 1.0, cache)


def _never():
    raise AssertionError("the generator was built although every caption is cached")


def test_text_shard_writes_views_and_counts(shards, tiny_lm, tmp_path):
    out = tmp_path / "text" / "shard-000000.jsonl"
    stats = _text_job(shards[0], out, tiny_lm, None)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats["selected"] == 12
    assert stats["kept"] + stats["dropped"] == 12
    assert len(lines) == stats["kept"]
    assert sum(stats["rejections"].values()) == sum(sum(r["rejections"].values()) for r in lines) + 3 * stats["dropped"]
    assert json.loads((tmp_path / "text" / "shard-000000.stats.json").read_text()) == stats
    assert not (tmp_path / "text" / "shard-000000.jsonl.partial").exists()


def test_text_views_follow_the_caption_not_the_sample(shards, tiny_lm, tmp_path):
    """Sampling is seeded by the caption, so a repeated caption is generated once and gets the same views."""
    out = tmp_path / "shard-000000.jsonl"
    stats = _text_job(shards[0], out, tiny_lm, None)
    by_key = {r["key"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (stats["generated"], stats["reused"]) == (5, 7)
    kept = [key for key in ("000000000", "000000005", "000000006") if key in by_key]
    assert len({by_key[key]["positive"] for key in kept}) <= 1


def test_text_rerun_hits_the_cache(shards, tiny_lm, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = _text_job(shards[0], tmp_path / "a" / "shard-000000.jsonl", tiny_lm, cache)
    again = _text_job(shards[0], tmp_path / "b" / "shard-000000.jsonl", tiny_lm, cache, make_generator=_never)
    assert (first["generated"], first["cache_hits"]) == (5, 0)
    assert (again["generated"], again["cache_hits"], again["reused"]) == (0, 5, 7)
    assert (tmp_path / "a" / "shard-000000.jsonl").read_text() == (tmp_path / "b" / "shard-000000.jsonl").read_text()


def test_other_shard_reuses_cached_captions(shards, tiny_lm, tmp_path):
    cache = tmp_path / "cache.sqlite"
    _text_job(shards[0], tmp_path / "shard-000000.jsonl", tiny_lm, cache)
    stats = _text_job(shards[1], tmp_path / "shard-000001.jsonl", tiny_lm, cache, make_generator=_never)
    assert (stats["generated"], stats["cache_hits"] + stats["reused"]) == (0, 6)


def test_cache_key_includes_generation_settings(shards, tiny_lm, tmp_path):
    cache = tmp_path / "cache.sqlite"
    _text_job(shards[1], tmp_path / "a.jsonl", tiny_lm, cache)
    hotter = TextGenerationSettings(max_new_tokens=10, batch_size=4, temperature=1.0)
    stats = _text_job(shards[1], tmp_path / "b.jsonl", tiny_lm, cache, settings=hotter)
    assert stats["cache_hits"] == 0


def test_killed_text_job_resumes(shards, tiny_lm, tmp_path):
    """A job killed mid-shard keeps its finished samples; the rerun does the rest and matches an uninterrupted run."""
    reference = tmp_path / "reference" / "shard-000000.jsonl"
    settings = TextGenerationSettings(max_new_tokens=10, batch_size=1)
    _text_job(shards[0], reference, tiny_lm, None, settings=settings)

    out = tmp_path / "killed" / "shard-000000.jsonl"
    partial = out.with_name(out.name + ".partial")
    config = json.dumps({"model": tiny_lm, "fraction": 1.0, "cache": None, "max_new_tokens": 10, "batch_size": 1})
    command = [sys.executable, "-m", "tulip", "augment-text", "--shard", str(shards[0]), "--out", str(out),
               "--config-json", config]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and len(partial.read_bytes().splitlines()) >= 4:  # the header and 3 samples
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    assert not out.exists()
    done = len(partial.read_bytes().splitlines()) - 1

    stats = _text_job(shards[0], out, tiny_lm, None, settings=settings)
    assert 3 <= stats["resumed"] < 12
    assert stats["resumed"] == done
    assert out.read_text() == reference.read_text()


def test_progress_drops_a_cut_last_line(tmp_path):
    progress = ShardProgress(tmp_path / "views.jsonl", "f1").open()
    progress.add([{"key": "a"}, {"key": "b"}])
    progress.close()
    with open(progress.partial, "a") as handle:
        handle.write('{"key": "c", "posi')
    resumed = ShardProgress(tmp_path / "views.jsonl", "f1").open()
    assert set(resumed.records) == {"a", "b"}
    resumed.add([{"key": "c"}])
    assert [r["key"] for r in resumed.commit()] == ["a", "b", "c"]


def test_progress_discards_other_fingerprint(tmp_path):
    progress = ShardProgress(tmp_path / "views.jsonl", "old settings").open()
    progress.add([{"key": "a"}])
    progress.close()
    assert ShardProgress(tmp_path / "views.jsonl", "new settings").open().records == {}


class FailsAfter:
    """An image editor that raises after ``batches`` batches, as a job killed mid-shard stops."""

    def __init__(self, editor, batches: int):
        self.editor, self.batches = editor, batches

    def generate(self, items):
        if self.batches == 0:
            raise RuntimeError("stopped")
        self.batches -= 1
        return self.editor.generate(items)


def test_image_job_resumes_and_writes_views(shards, tiny_editor, tmp_path):
    settings = ImageEditSettings(num_inference_steps=1, batch_size=2)
    editor = ImageEditor(tiny_editor, settings)
    out = tmp_path / "images" / "shard-000001.jsonl"
    with pytest.raises(RuntimeError, match="stopped"):
        run_image_shard(shards[1], out, lambda: FailsAfter(editor, 1), "tiny-editor", settings, 1.0)
    assert not out.exists()
    stats = run_image_shard(shards[1], out, lambda: editor, "tiny-editor", settings, 1.0)
    assert (stats["resumed"], stats["kept"]) == (2, 6)
    _, images = read_views(None, [out])
    assert sorted(images) == [f"{i:09d}" for i in range(12, 18)]
    with Image.open(images["000000013"]["negative"]) as view:
        assert view.size == (32, 32)


def test_sum_stats_adds_nested_counts():
    total = sum_stats([{"kept": 2, "rejections": {"too_long": 1}}, {"kept": 3, "rejections": {"too_long": 2, "empty_positive": 1}}])
    assert total == {"kept": 5, "rejections": {"empty_positive": 1, "too_long": 3}}
