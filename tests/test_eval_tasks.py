"""Evaluation stages end to end: a tulip checkpoint and an open_clip model through the same commands.

Both models have random weights and are saved locally by the tests. The datasets are tiny folders in
the published layouts, built from scikit-learn's real handwritten digits.
"""

from __future__ import annotations

import csv
import json
import os
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image

import tulip
from tulip.cli import main as tulip_main
from tulip.eval.vision_probe import ProbeSettings, build_vision_probe

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _digit_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.kron(digits.images * 15.9, np.ones((3, 3))).astype(np.uint8), digits.target


def _save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model specs of a random tulip-tiny checkpoint and a random tiny open_clip model, both saved to disk."""
    import open_clip

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tiny = tulip.create_model("tulip-tiny")
    torch.save({"model": tiny.state_dict(), "model_config": tiny.cfg.to_dict()}, root / "tulip.pt")
    config = root / "tiny-open-clip.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(config)
    clip_model = open_clip.create_model("tiny-open-clip")
    torch.save(clip_model.state_dict(), root / "tiny-open-clip.pt")
    return {
        "tulip": {"name": "tulip", "type": "tulip", "weights": str(root / "tulip.pt")},
        "open_clip": {"name": "tiny-open-clip", "type": "open_clip", "architecture": str(config),
                      "weights": str(root / "tiny-open-clip.pt")},
    }


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Dataset entries: digits as class folders, as a Karpathy retrieval split, as Winoground and as MMVP pairs."""
    root = tmp_path_factory.mktemp("datasets")
    images, labels = _digit_images()
    rng = np.random.default_rng(0)

    folders = root / "digits"
    (folders / "classnames.txt").parent.mkdir(parents=True)
    (folders / "classnames.txt").write_text("\n".join(DIGIT_NAMES) + "\n")
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        for split, chosen in (("train", members[:12]), ("test", members[12:20])):
            for i in chosen:
                _save(images[i], folders / split / str(c) / f"{i:04d}.png")

    flickr = root / "flickr"
    entries = []
    for i in range(20):
        _save(images[i], flickr / "flickr30k-images" / f"{i}.jpg")
        name = DIGIT_NAMES[labels[i]]
        entries.append({"filename": f"{i}.jpg", "split": "test",
                        "sentences": [{"raw": f"the digit {name}"}, {"raw": f"a handwritten {name}"}]})
    (flickr / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))

    wino = root / "winoground" / "data"
    examples = []
    for i in range(6):
        a, b = labels[2 * i], labels[2 * i + 1]
        for k in (0, 1):
            _save(images[2 * i + k], wino / "images" / f"ex_{i}_img_{k}.png")
        examples.append({"id": i, "caption_0": f"a {DIGIT_NAMES[a]} not a {DIGIT_NAMES[b]}",
                         "caption_1": f"a {DIGIT_NAMES[b]} not a {DIGIT_NAMES[a]}", "image_0": f"ex_{i}_img_0",
                         "image_1": f"ex_{i}_img_1", "collapsed_tag": "Object"})
    (wino / "examples.jsonl").write_text("\n".join(json.dumps(e) for e in examples) + "\n")

    nouns = tuple((f"digit {d}", f"digits {d}") for d in DIGIT_NAMES)
    build_vision_probe(images, labels, nouns, root / "probe", ProbeSettings(pairs_per_category=4, cell_size=28))
    return {
        "digits": {"reader": "class_folder", "root": str(folders), "templates": "clip_imagenet_simple"},
        "flickr": {"reader": "flickr30k_karpathy", "root": str(flickr)},
        "winoground": {"reader": "winoground", "root": str(root / "winoground")},
        "probe": {"reader": "mmvp_vlm", "root": str(root / "probe")},
    }


def _run(*args):
    assert tulip_main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def evaluated(models, datasets, tmp_path_factory):
    """Run every stage once per model kind; return {kind: (output folder, records by task)}."""
    return {kind: (out := tmp_path_factory.mktemp(kind), _evaluate(models[kind], datasets, out)) for kind in models}


def _evaluate(model, datasets, out):
    """Run every stage for one model; return the result records by task name."""
    spec = json.dumps(model)
    settings = json.dumps({"batch_size": 16, "linear_probe": {"val_per_class": 5, "weight_decays": [1e-2, 1e-4]}})
    features = [out / "digits" / "features" / f"{role}.pt" for role in ("test", "train")]
    for role, path in zip(("test", "train"), features):
        _run("eval-features", "--model-json", spec, "--dataset", "digits", "--dataset-json",
             json.dumps(datasets["digits"]), "--role", role, "--config-json",
             json.dumps({"batch_size": 16, "per_class": 7}), "--out", path)
    jobs = [("digits", "zeroshot_classification"), ("digits", "linear_probe_2shot"), ("flickr", "zeroshot_retrieval"),
            ("winoground", "image_caption_selection"), ("probe", "mmvp_vlm")]
    results = {}
    for dataset, task in jobs:
        path = out / dataset / f"{task}.json"
        _run("eval-task", "--task", task, "--model-json", spec, "--dataset", dataset,
             "--dataset-json", json.dumps(datasets[dataset]), "--features", *features, "--config-json", settings,
             "--out", path)
        results[task] = json.loads(path.read_text())
    return results


@pytest.mark.parametrize("kind", ["tulip", "open_clip"])
def test_models_run_the_same_stages(models, evaluated, kind):
    results = evaluated[kind][1]
    for task, record in results.items():
        assert set(record) >= {"dataset", "model", "pretrained", "task", "language", "metrics"}, task
        assert record["model"] == models[kind]["name"]
    assert set(results["zeroshot_classification"]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert results["zeroshot_classification"]["num_test"] == 80
    assert results["zeroshot_classification"]["classnames"] == DIGIT_NAMES
    assert results["linear_probe_2shot"]["fitted_per_class"] == {name: 2 for name in DIGIT_NAMES}
    assert results["zeroshot_retrieval"]["num_captions"] == 40
    assert "text_retrieval_recall@10" in results["zeroshot_retrieval"]["metrics"]
    assert set(results["image_caption_selection"]["metrics"]) >= {"text_score", "image_score", "group_score"}
    assert results["mmvp_vlm"]["num_pairs"] == 8
    assert "pair_acc.quantity_and_count" in results["mmvp_vlm"]["metrics"]


def test_open_clip_zeroshot_matches_clip_benchmark(models, datasets, evaluated):
    """On a real open_clip model, our zero-shot result equals CLIP_benchmark's classifier and logits."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification as reference
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score
    from torch.utils.data import DataLoader

    from tulip.eval.datasets import ClassFolderDataset
    from tulip.eval.zeroshot import load_templates

    results = evaluated["open_clip"][1]
    model, _, transform = open_clip.create_model_and_transforms("tiny-open-clip",
                                                                pretrained=models["open_clip"]["weights"])
    model.eval()
    data = ClassFolderDataset(datasets["digits"]["root"], "test", transform)
    data.classes = data.classnames
    templates = [t.replace("{}", "{c}") for t in load_templates("clip_imagenet_simple")]
    classifier = reference.zero_shot_classifier(model, open_clip.get_tokenizer("tiny-open-clip"), DIGIT_NAMES,
                                                templates, "cpu", amp=False)
    logits, target = reference.run_classification(model, classifier, DataLoader(data, batch_size=32), "cpu", amp=False)
    ours = results["zeroshot_classification"]["metrics"]
    assert ours["acc1"] == pytest.approx(top_k_accuracy_score(target, logits, k=1, labels=range(10)))
    assert ours["acc5"] == pytest.approx(top_k_accuracy_score(target, logits, k=5, labels=range(10)))
    assert ours["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(target, logits.argmax(1)))


def test_results_build_with_clip_benchmark(evaluated, tmp_path):
    """clip_benchmark's ``build`` command tabulates our result files."""
    from clip_benchmark.cli import main_build

    files = sorted(str(p) for p in evaluated["tulip"][0].rglob("*.json"))
    main_build(Namespace(files=files, output=str(tmp_path / "benchmark.csv")))
    with (tmp_path / "benchmark.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    assert {row["task"] for row in rows} == {"zeroshot_classification", "linear_probe", "zeroshot_retrieval",
                                             "image_caption_selection", "mmvp_vlm"}
    assert all(row["model_fullname"].startswith("tulip ") for row in rows)


def test_features_task_requires_feature_file(models, datasets, tmp_path):
    with pytest.raises(SystemExit, match="pass --features"):
        tulip_main(["eval-task", "--task", "zeroshot_classification", "--model-json", json.dumps(models["tulip"]),
                    "--dataset", "digits", "--dataset-json", json.dumps(datasets["digits"]), "--out",
                    str(tmp_path / "x.json")])


def test_summary_logs_every_metric_to_mlflow(evaluated, tmp_path, monkeypatch):
    """The evaluate command logs each metric, the summary table, plots and result files to a sqlite store."""
    from mlflow.tracking import MlflowClient

    results = evaluated["tulip"][0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a new experiment keeps its artifacts in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("TULIP_MLFLOW_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("TULIP_MLFLOW_EXPERIMENT", "eval-test")
    files = sorted(str(p) for p in results.rglob("*.json"))
    _run("evaluate", "--results", *files, "--out-dir", tmp_path / "summary",
         "--config-json", json.dumps({"linear_probe": {"shots": [2]}}))

    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("eval-test").experiment_id])[0]
    metrics = run.data.metrics
    zeroshot = json.loads((results / "digits" / "zeroshot_classification.json").read_text())
    assert metrics["tulip/digits/zeroshot_classification/acc1"] == pytest.approx(zeroshot["metrics"]["acc1"])
    assert "tulip/flickr/zeroshot_retrieval/image_retrieval_recall_at_5" in metrics
    assert metrics["tulip/digits/linear_probe_2shot/fitted_per_class.min"] == 2
    assert run.data.params["linear_probe.shots"] == "[2]"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "summary")}
    assert {"summary/summary.csv", "summary/summary.md", "summary/headline.png", "summary/mmvp_categories.png",
            "summary/linear_probe_shots.png", "summary/zeroshot_per_class_recall.png"} <= artifacts
    assert "| tulip | probe | mmvp_vlm | pair_acc |" in (tmp_path / "summary" / "summary.md").read_text()
    assert os.path.getsize(tmp_path / "summary" / "headline.png") > 1000
