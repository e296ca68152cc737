"""GeCo view generation with tiny random-weight models built offline."""

from __future__ import annotations

import pytest
from PIL import Image

from tulip.geco.image_views import ImageEditor, ImageEditSettings, is_constant
from tulip.geco.seeding import is_selected, sample_seed
from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings, check_views, parse_line
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


def test_text_generation_counts_and_batch_independence(tiny_lm):
    items = [(f"{i:09d}", c) for i, c in enumerate(CAPTIONS)]
    batched, batched_rejections = ParaphraseGenerator(tiny_lm, TextGenerationSettings(batch_size=5, max_new_tokens=12)).generate(items)
    single, single_rejections = ParaphraseGenerator(tiny_lm, TextGenerationSettings(batch_size=1, max_new_tokens=12)).generate(items)
    assert batched == single
    assert batched_rejections == single_rejections
    assert len(batched) + batched_rejections.get("dropped", 0) == len(items)
    assert len(batched) >= 3
    for view in batched.values():
        assert view["positive"] and view["negative"]


def test_text_generation_depends_on_seed(tiny_lm):
    items = [("000000001", CAPTIONS[0])]
    first, _ = ParaphraseGenerator(tiny_lm, TextGenerationSettings(seed=0, max_new_tokens=12)).generate(items)
    second, _ = ParaphraseGenerator(tiny_lm, TextGenerationSettings(seed=1, max_new_tokens=12)).generate(items)
    assert first != second


def test_image_edits_are_seeded_per_sample(tiny_editor):
    images = [(f"{i:09d}", Image.new("RGB", (28, 28), (30 * i, 100, 200))) for i in range(3)]
    settings = ImageEditSettings(num_inference_steps=2, batch_size=3)
    views, counts = ImageEditor(tiny_editor, settings).generate(images)
    assert counts["kept"] == 3
    alone, _ = ImageEditor(tiny_editor, ImageEditSettings(num_inference_steps=2, batch_size=1)).generate(images[1:2])
    key = images[1][0]
    assert views[key]["positive"].size == (32, 32)
    assert list(views[key]["positive"].getdata()) == list(alone[key]["positive"].getdata())
    assert list(views[key]["positive"].getdata()) != list(views[key]["negative"].getdata())


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
