"""End to end: the whole DAG on real Fashion-MNIST data at test scale, and what reruns after a change."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import planned_rules, snakemake

pytestmark = pytest.mark.slow

DRY_RUN = ("all", "-n", "--configfile", ".test/config/config.yaml")


def _edit_test_config(workdir, section, key, value):
    path = workdir / ".test" / "config" / "config.yaml"
    backup = path.read_text()
    config = yaml.safe_load(backup)
    config[section][key] = value
    path.write_text(yaml.safe_dump(config))
    return backup


def test_workflow_writes_every_stage_output(workflow_run):
    """Each stage leaves its declared output, and the shards link views to their samples."""
    for path in [
        "resources/download/manifest.json",
        "results/augment/text_views.jsonl",
        "results/augment/image_views.jsonl",
        "results/shards/manifest.json",
        "results/pretrain/model.pt",
        "results/pretrain/metrics.jsonl",
        "results/report/report.md",
        "results/report/report.html",
        "results/report/loss_curve.png",
    ]:
        assert (workflow_run / path).is_file(), path
    manifest = json.loads((workflow_run / "results/shards/manifest.json").read_text())
    assert manifest["num_samples"] == 3000
    assert manifest["num_shards"] == 6
    assert manifest["num_recaptions"] == 3000
    assert manifest["num_image_views"] > 0
    assert manifest["num_text_views"] > 0


def test_evaluation_is_above_chance(workflow_run):
    """Zero-shot and 5-shot probe top-1 on the held-out test split beat the 10 % chance level."""
    zeroshot = json.loads((workflow_run / "results/evaluate/fashion_mnist_zeroshot_classification.json").read_text())
    probe = json.loads((workflow_run / "results/evaluate/fashion_mnist_linear_probe_5shot.json").read_text())
    assert zeroshot["task"] == "zeroshot_classification"
    assert zeroshot["num_test"] == 10000
    assert zeroshot["metrics"]["acc1"] > 0.25
    assert probe["metrics"]["lp_acc1"] > 0.25
    assert probe["fitted_per_class"] == {str(c): 5 for c in range(10)}


def test_report_lists_evaluation(workflow_run):
    report = (workflow_run / "results/report/report.md").read_text()
    assert "zeroshot_classification" in report
    assert "linear_probe (5-shot)" in report
    assert (workflow_run / "results/report/loss_curve.png").stat().st_size > 1000


def test_complete_run_has_nothing_to_do(workflow_run):
    result = snakemake(workflow_run, *DRY_RUN)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_eval_key_change_reruns_only_evaluation(workflow_run):
    backup = _edit_test_config(workflow_run, "eval", "seed", 7)
    try:
        result = snakemake(workflow_run, *DRY_RUN)
    finally:
        (workflow_run / ".test/config/config.yaml").write_text(backup)
    assert result.returncode == 0, result.stderr
    assert planned_rules(result) == {"evaluate", "report", "all"}


def test_train_key_change_reruns_training_onwards(workflow_run):
    backup = _edit_test_config(workflow_run, "train", "lr", 1.0e-3)
    try:
        result = snakemake(workflow_run, *DRY_RUN)
    finally:
        (workflow_run / ".test/config/config.yaml").write_text(backup)
    assert result.returncode == 0, result.stderr
    assert planned_rules(result) == {"pretrain", "evaluate", "report", "all"}


@pytest.mark.parametrize(
    ("source_file", "expected"),
    [
        ("src/tulip/eval/zeroshot.py", {"evaluate", "report", "all"}),
        ("src/tulip/report/render.py", {"report", "all"}),
        ("src/tulip/losses/sigmoid.py", {"pretrain", "evaluate", "report", "all"}),
    ],
)
def test_library_edit_reruns_its_stage(workflow_run, source_file, expected):
    path = workflow_run / source_file
    backup = path.read_text()
    path.write_text(backup + "\n# an edit that changes the file's contents\n")
    try:
        result = snakemake(workflow_run, *DRY_RUN)
    finally:
        path.write_text(backup)
    assert result.returncode == 0, result.stderr
    assert planned_rules(result) == expected


def test_restored_edits_leave_nothing_to_do(workflow_run):
    """After the edits above are undone, the params match the recorded ones again."""
    result = snakemake(workflow_run, *DRY_RUN)
    assert "Nothing to be done" in result.stdout + result.stderr
