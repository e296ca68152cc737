"""Evaluation dataset readers on tiny fixture folders in each dataset's published layout."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tulip.eval import registry
from tulip.eval.datasets import (
    MMVPVLM,
    ClassFolderDataset,
    ImageNetFolder,
    KarpathyCaptions,
    RxRx1,
    Winoground,
    imagenet_classes,
    open_dataset,
)
from tulip.eval.datasets.mmvp import read_statement_pairs
from tulip.eval.vision_probe import COUNT_CATEGORY, POSITION_CATEGORY, ProbeSettings, build_vision_probe


def _image(path, value=128, size=(8, 8), suffix_format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format=suffix_format)
    return path


# Class folders and ImageNet


def test_class_folder_maps_index_folders(tmp_path):
    (tmp_path / "classnames.txt").write_text("cat\ndog\nbird\n")
    _image(tmp_path / "test" / "02" / "a.png")
    _image(tmp_path / "test" / "0" / "b.png")
    data = ClassFolderDataset(tmp_path, "test")
    assert data.targets == [0, 2]
    assert data.classnames == ["cat", "dog", "bird"]
    assert data.keys == ["test/0/b.png", "test/02/a.png"]


def test_class_folder_rejects_folder_beyond_classnames(tmp_path):
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    _image(tmp_path / "test" / "5" / "a.png")
    with pytest.raises(ValueError, match="index below 2"):
        ClassFolderDataset(tmp_path, "test")


def test_imagenet_class_list_is_standard_order():
    """The shipped class list contains the 1,000 ILSVRC-2012 ids in sorted order with CLIP's names."""
    wnids, names = imagenet_classes()
    assert len(wnids) == len(set(wnids)) == 1000
    assert wnids == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert (wnids[1], names[1]) == ("n01443537", "goldfish")
    assert (wnids[999], names[999]) == ("n15075141", "toilet paper")


def test_imagenet_folder_labels_by_wordnet_id(tmp_path):
    """Folders map to their standard index whatever subset is present, so a partial copy keeps its labels."""
    _image(tmp_path / "val" / "n15075141" / "ILSVRC2012_val_00000003.JPEG", suffix_format="JPEG")
    _image(tmp_path / "val" / "n01443537" / "ILSVRC2012_val_00000001.JPEG", suffix_format="JPEG")
    data = ImageNetFolder(tmp_path, "val")
    assert data.targets == [1, 999]
    assert len(data.classnames) == 1000
    assert len(data.missing_classes) == 998


def test_imagenet_folder_rejects_unknown_ids(tmp_path):
    _image(tmp_path / "val" / "n99999999" / "x.JPEG", suffix_format="JPEG")
    with pytest.raises(ValueError, match="not ImageNet-1K WordNet ids"):
        ImageNetFolder(tmp_path, "val")


# RxRx1 (WILDS layout)


def _rxrx1(root):
    base = root / "rxrx1_v1.0"
    rows = [
        # site_id, dataset, experiment, plate, well, site, sirna, sirna_id
        ("HEPG2-01_1_B02_1", "train", "HEPG2-01", 1, "B02", 1, "s1", 0),
        ("HEPG2-01_1_B02_2", "train", "HEPG2-01", 1, "B02", 2, "s1", 0),
        ("HEPG2-01_1_B03_1", "train", "HEPG2-01", 1, "B03", 1, "s2", 2),
        ("HUVEC-05_2_C04_1", "val", "HUVEC-05", 2, "C04", 1, "s3", 1),
        ("U2OS-04_3_D05_2", "test", "U2OS-04", 3, "D05", 2, "s2", 2),
    ]
    base.mkdir(parents=True)
    with (base / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["site_id", "well_id", "cell_type", "dataset", "experiment", "plate", "well", "site",
                         "well_type", "sirna", "sirna_id"])
        for site_id, split, experiment, plate, well, site, sirna, sirna_id in rows:
            writer.writerow([site_id, site_id[:-2], experiment.split("-")[0], split, experiment, plate, well, site,
                             "treatment", sirna, sirna_id])
            _image(base / "images" / experiment / f"Plate{plate}" / f"{well}_s{site}.png")
    return root


def test_rxrx1_splits_follow_wilds(tmp_path):
    root = _rxrx1(tmp_path)
    assert RxRx1(root, "train").targets == [0, 2]
    assert RxRx1(root, "id_test").targets == [0]
    assert RxRx1(root, "val").targets == [1]
    assert RxRx1(root, "test").keys == ["images/U2OS-04/Plate3/D05_s2.png"]
    assert RxRx1(root, "train").classnames == ["s1", "s3", "s2"]


def test_rxrx1_reports_missing_images(tmp_path):
    root = _rxrx1(tmp_path)
    (root / "rxrx1_v1.0" / "images" / "HUVEC-05" / "Plate2" / "C04_s1.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image"):
        RxRx1(root, "val")


# MMVP-VLM


def _mmvp(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    with (root / "Questions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    for question_id, category, _ in rows:
        _image(root / "MLLM_VLM Images" / category / f"{question_id}.jpg", suffix_format="JPEG")
    return root


def test_mmvp_reads_pairs(tmp_path):
    root = _mmvp(tmp_path, [
        (1, "Color and Appearance", "The flower is red"), (2, "Color and Appearance", "The flower is white"),
        (3, "Quantity and Count", "There are two cats"), (4, "Quantity and Count", "There is one cat"),
    ])
    data = MMVPVLM(root)
    assert len(data) == 2
    assert data.categories == ["Color and Appearance", "Quantity and Count"]
    images, statements = data[1]
    assert statements == ["There are two cats", "There is one cat"]
    assert len(images) == 2


def test_mmvp_rejects_unpaired_question(tmp_path):
    root = _mmvp(tmp_path, [(1, "Texts", "a"), (2, "Texts", "b"), (3, "Texts", "c")])
    with pytest.raises(ValueError, match=r"\[3\] have no partner"):
        read_statement_pairs(root)


def test_mmvp_rejects_pair_with_two_types(tmp_path):
    root = _mmvp(tmp_path, [(1, "Texts", "a"), (2, "Color and Appearance", "b")])
    with pytest.raises(ValueError, match="form a pair but have types"):
        read_statement_pairs(root)


# Winoground


def _winoground(root, zipped: bool):
    data = root / "data"
    data.mkdir(parents=True)
    examples = [
        {"id": i, "caption_0": f"a {i} b", "caption_1": f"b {i} a", "image_0": f"ex_{i}_img_0",
         "image_1": f"ex_{i}_img_1", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
         "collapsed_tag": "Object" if i == 0 else "Relation"}
        for i in range(2)
    ]
    (data / "examples.jsonl").write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    names = [e[k] for e in examples for k in ("image_0", "image_1")]
    if zipped:
        with zipfile.ZipFile(data / "images.zip", "w") as archive:
            for name in names:
                path = _image(root / "tmp" / f"{name}.png")
                archive.write(path, f"images/{name}.png")
    else:
        for name in names:
            _image(data / "images" / f"{name}.png")
    return root


@pytest.mark.parametrize("zipped", [False, True], ids=["unpacked", "zip"])
def test_winoground_reads_examples(tmp_path, zipped):
    data = Winoground(_winoground(tmp_path, zipped))
    images, captions = data[1]
    assert captions == ["a 1 b", "b 1 a"]
    assert [image.size for image in images] == [(8, 8), (8, 8)]
    assert data.tags == ["Object", "Relation"]


# Karpathy splits


def test_karpathy_coco_keeps_every_caption(tmp_path):
    entries = [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000001.jpg", "split": "test",
         "sentences": [{"raw": f"caption {j}"} for j in range(7)]},
        {"filepath": "val2014", "filename": "COCO_val2014_000000000002.jpg", "split": "test",
         "sentences": [{"raw": "a dog"}, {"raw": "  "}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000003.jpg", "split": "train",
         "sentences": [{"raw": "not in the test split"}]},
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    for entry in entries:
        _image(tmp_path / entry["filepath"] / entry["filename"], suffix_format="JPEG")
    data = KarpathyCaptions(tmp_path, "dataset_coco.json", "test")
    assert len(data) == 2
    assert data.caption_image == [0] * 7 + [1]
    assert data[1][1] == ["a dog"]


def test_karpathy_flickr_uses_its_image_folder(tmp_path):
    entries = [{"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "two men"}]}]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    _image(tmp_path / "flickr30k-images" / "1000092795.jpg", suffix_format="JPEG")
    data = open_dataset({"reader": "flickr30k_karpathy", "root": str(tmp_path)})
    assert data.captions == ["two men"]


def test_karpathy_reports_missing_images(tmp_path):
    entries = [{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "x"}]}]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(FileNotFoundError, match="1 image"):
        KarpathyCaptions(tmp_path, "dataset_flickr30k.json")


# Registry


def test_registry_lists_results_per_shot_count():
    entry = {"reader": "class_folder", "root": "x"}
    assert registry.task_outputs(entry, [1, 10, "full"]) == [
        "zeroshot_classification", "linear_probe_1shot", "linear_probe_10shot", "linear_probe_full",
    ]
    assert registry.parse_task_name("linear_probe_10shot") == ("linear_probe", 10)
    assert registry.parse_task_name("linear_probe_full") == ("linear_probe", "full")


def test_registry_rejects_task_the_reader_cannot_run():
    with pytest.raises(ValueError, match="cannot run task"):
        registry.dataset_tasks({"reader": "winoground", "tasks": ["linear_probe"]})


def test_registry_pool_size_covers_shots_and_trials():
    assert registry.probe_pool_per_class([1, 10], val_per_class=10, trials=3) == 40
    assert registry.probe_pool_per_class([1, "full"], val_per_class=10, trials=1) is None


# The vision-centric probe


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16, scaled to bytes and enlarged to 24x24 for the canvas.
    images = np.kron(digits.images * 15.9, np.ones((3, 3))).astype(np.uint8)
    return images, digits.target


DIGIT_NOUNS = tuple((f"digit {d}", f"digits {d}") for d in range(10))


def _occupied_cells(path, cell):
    pixels = np.asarray(Image.open(path).convert("L"))
    return [int(pixels[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell].max() > 60)
            for r in range(2) for c in range(2)]


def test_vision_probe_counts_match_statements(tmp_path):
    """Every counting image shows as many objects as its statement names, built from real digit images."""
    images, labels = _digits()
    build_vision_probe(images, labels, DIGIT_NOUNS, tmp_path, ProbeSettings(pairs_per_category=8, cell_size=28))
    pairs = read_statement_pairs(tmp_path)
    numbers = {"one": 1, "two": 2, "three": 3, "four": 4}
    counted = [p for p in pairs if p.category == COUNT_CATEGORY]
    assert len(counted) == 8
    for pair in counted:
        expected = [numbers[s.split()[0]] for s in pair.statements]
        assert expected[0] != expected[1]
        assert [sum(_occupied_cells(path, 28)) for path in pair.images] == expected


def test_vision_probe_positions_swap(tmp_path):
    """Positional pairs hold the same two objects in swapped cells, with the same words in both statements."""
    images, labels = _digits()
    build_vision_probe(images, labels, DIGIT_NOUNS, tmp_path, ProbeSettings(pairs_per_category=6, cell_size=28))
    positional = [p for p in read_statement_pairs(tmp_path) if p.category == POSITION_CATEGORY]
    assert len(positional) == 6
    for pair in positional:
        first, second = (np.asarray(Image.open(path).convert("L")).astype(int) for path in pair.images)
        assert sorted(pair.statements[0].split()) == sorted(pair.statements[1].split())
        assert _occupied_cells(pair.images[0], 28) == _occupied_cells(pair.images[1], 28)
        assert np.abs(first - second).mean() > 1.0
    relations = {"above" if "above" in p.statements[0] else "left" for p in positional}
    assert relations == {"above", "left"}


def test_vision_probe_is_seeded(tmp_path):
    images, labels = _digits()
    settings = ProbeSettings(pairs_per_category=3, cell_size=28, seed=4)
    build_vision_probe(images, labels, DIGIT_NOUNS, tmp_path / "a", settings)
    build_vision_probe(images, labels, DIGIT_NOUNS, tmp_path / "b", settings)
    assert (tmp_path / "a" / "Questions.csv").read_text() == (tmp_path / "b" / "Questions.csv").read_text()
