"""GeCo view generation with tiny random-weight models built offline."""

from __future__ import annotations

import pytest
from PIL import Image

from tulip.geco.image_views import ImageEditor, ImageEditSettings, is_constant
from tulip.geco.seeding import is_selected, sample_seed
from tulip.geco.text_views import (
    ParaphraseGenerator,
    TextGenerationSettings,
    check_views,
    count_outcomes,
    max_words_for,
    parse_line,
)
from tulip.geco.tiny_models import build_tiny_instruct_pix2pix, build_tiny_lm

CAPTIONS = [
    "a photo of a red coat",
    "a small black and white photo of a sneaker",
    "an image of a leather boot on a plain dark background",
    "a product photo of a tote bag",
    "this is a pair of trousers",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(build_tiny_lm(tmp_path_factory.mktemp("lm"), CAPTIONS, seed=0))


@pytest.fixture(scope="module")
def tiny_editor(tmp_path_factory):
    return str(build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("editor"), seed=0))


@pytest.mark.parametrize(
    ("positive", "negative", "reason"),
    [
        ("", "a blue coat", "empty_positive"),
        ("a coat in red", "", "empty_negative"),
        ("A photo of a red coat!", "a photo of a blue coat", "positive_same_as_caption"),
        ("a red coat, photographed", "a red coat photographed", "negative_same_as_positive"),
        ("a red coat, photographed", "a photo of a red coat", "negative_same_as_caption"),
        ("a red coat\x07", "a blue coat", "invalid_characters"),
        ("word " * 40, "a blue coat", "too_long"),
        ("a red coat, photographed", "a photo of a blue coat", None),
    ],
)
def test_view_checks(positive, negative, reason):
    assert check_views("a photo of a red coat", positive, negative, max_words=20) == reason


def test_parse_line_takes_first_line_without_quotes():
    assert parse_line(' "a coat in red"\nNegative: x') == "a coat in red"


class ScriptedGenerator(ParaphraseGenerator):
    """The real retry and counting logic over continuations read from a script instead of sampled."""

    def __init__(self, lines: dict[str, list[str]], settings: TextGenerationSettings):
        self.settings = settings
        self.lines = {caption: list(replies) for caption, replies in lines.items()}

    def _prompt(self, caption: str, prefill: str) -> str:
        return f"{caption}\t{prefill}"

    def continue_prompts(self, prompts, seeds):
        return [self.lines[prompt.split("\t")[0]].pop(0) for prompt in prompts]


def test_generation_counts_rejections_by_reason():
    """Each rejected attempt is counted under its reason; a caption rejected on every attempt is dropped."""
    caption_a, caption_b = CAPTIONS[0], CAPTIONS[3]
    script = {
        # attempt 0: positive equals the caption; attempt 1: accepted
        caption_a: [" a photo of a red coat", " x", ' "a red coat, photographed"', " a photo of a blue coat\nmore"],
        # three attempts: empty positive, negative equal to the positive, negative equal to the caption
        caption_b: ["", " y", " a tote bag, photographed", " a tote bag photographed",
                    " a tote bag in a photo", " a product photo of a tote bag"],
    }
    results = ScriptedGenerator(script, TextGenerationSettings(max_attempts=3, batch_size=2)).generate(
        [("a", caption_a), ("b", caption_b)]
    )
    assert results["a"] == {"positive": "a red coat, photographed", "negative": "a photo of a blue coat",
                            "attempt": 1, "rejections": {"positive_same_as_caption": 1}}
    assert results["b"]["positive"] is None
    assert results["b"]["rejections"] == {"empty_positive": 1, "negative_same_as_positive": 1,
                                          "negative_same_as_caption": 1}
    assert count_outcomes(results) == {"kept": 1, "dropped": 1, "positive_same_as_caption": 1, "empty_positive": 1,
                                       "negative_same_as_positive": 1, "negative_same_as_caption": 1}


def test_text_generation_batched_equals_one_by_one(tiny_lm):
    items = [(f"{i:09d}", c) for i, c in enumerate(CAPTIONS)]
    batched = ParaphraseGenerator(tiny_lm, TextGenerationSettings(batch_size=5, max_new_tokens=12)).generate(items)
    single = ParaphraseGenerator(tiny_lm, TextGenerationSettings(batch_size=1, max_new_tokens=12)).generate(items)
    assert batched == single


def test_text_generation_keeps_valid_views(tiny_lm):
    """Kept views pass the checks, and their attempt number equals their rejected attempts."""
    items = [(f"{i:09d}", c) for i, c in enumerate(CAPTIONS)]
    settings = TextGenerationSettings(batch_size=5, max_new_tokens=12)
    results = ParaphraseGenerator(tiny_lm, settings).generate(items)
    assert sum(r["positive"] is not None for r in results.values()) >= 3
    for caption, result in zip(CAPTIONS, results.values()):
        rejected = sum(result["rejections"].values())
        if result["positive"] is None:
            assert rejected == settings.max_attempts
        else:
            assert check_views(caption, result["positive"], result["negative"], max_words_for(caption)) is None
            assert rejected == result["attempt"]


def test_text_generation_depends_on_seed(tiny_lm):
    items = [("000000001", CAPTIONS[0])]
    first = ParaphraseGenerator(tiny_lm, TextGenerationSettings(seed=0, max_new_tokens=12)).generate(items)
    second = ParaphraseGenerator(tiny_lm, TextGenerationSettings(seed=1, max_new_tokens=12)).generate(items)
    assert first != second


def test_image_edits_are_seeded_per_sample(tiny_editor):
    images = [(f"{i:09d}", Image.new("RGB", (28, 28), (30 * i, 100, 200))) for i in range(3)]
    settings = ImageEditSettings(num_inference_steps=2, batch_size=3)
    views = ImageEditor(tiny_editor, settings).generate(images)
    assert all(v["positive"] is not None for v in views.values())
    alone = ImageEditor(tiny_editor, ImageEditSettings(num_inference_steps=2, batch_size=1)).generate(images[1:2])
    key = images[1][0]
    assert views[key]["positive"].size == (32, 32)
    assert list(views[key]["positive"].getdata()) == list(alone[key]["positive"].getdata())
    assert list(views[key]["positive"].getdata()) != list(views[key]["negative"].getdata())


def test_constant_edits_are_regenerated_then_dropped(tiny_editor):
    """With a threshold no edit meets, each image is retried max_attempts - 1 times and dropped."""
    images = [(f"{i:09d}", Image.new("RGB", (28, 28), (40 * i, 90, 160))) for i in range(2)]
    settings = ImageEditSettings(num_inference_steps=1, max_attempts=3, min_std=1000.0)
    views = ImageEditor(tiny_editor, settings).generate(images)
    assert {key: v["regenerated"] for key, v in views.items()} == {"000000000": 2, "000000001": 2}
    assert all(v["positive"] is None and v["negative"] is None for v in views.values())


def test_constant_output_detection():
    assert is_constant(Image.new("RGB", (8, 8), (0, 0, 0)), min_std=2.0)
    noisy = Image.effect_noise((8, 8), 40).convert("RGB")
    assert not is_constant(noisy, min_std=2.0)


def test_selection_is_stable_and_near_fraction():
    keys = [f"{i:09d}" for i in range(5000)]
    chosen = [k for k in keys if is_selected(0, k, 0.1)]
    assert 400 < len(chosen) < 600
    assert chosen == [k for k in keys if is_selected(0, k, 0.1)]
    assert sample_seed(0, "a", "positive") != sample_seed(0, "a", "negative")
