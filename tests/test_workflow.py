"""End to end: the whole DAG on real Fashion-MNIST data at test scale, and what reruns after a change."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import OPEN_CLIP_CONFIG, planned_rules, snakemake

pytestmark = pytest.mark.slow

DRY_RUN = ("all", "-n", "--configfile", ".test/config/config.yaml", OPEN_CLIP_CONFIG)
EVAL_JOBS = {"eval_features", "eval_classification", "eval_matching", "evaluate", "report", "all"}


def _edit_test_config(workdir, section, key, value):
    """Set ``section.key`` (``key`` may be a dotted path) in the test config; return the original text."""
    path = workdir / ".test" / "config" / "config.yaml"
    backup = path.read_text()
    config = yaml.safe_load(backup)
    node = config[section]
    *parents, leaf = key.split(".")
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return backup


def _planned_after_edit(workdir, section, key, value):
    backup = _edit_test_config(workdir, section, key, value)
    try:
        result = snakemake(workdir, *DRY_RUN)
    finally:
        (workdir / ".test/config/config.yaml").write_text(backup)
    assert result.returncode == 0, result.stderr
    return planned_rules(result)


def test_workflow_writes_every_stage_output(workflow_run):
    """Each stage leaves its declared output, and the shards link views to their samples."""
    for path in [
        "resources/download/manifest.json",
        *[f"results/augment/{kind}/shard-{i:06d}.jsonl" for kind in ("text", "images") for i in range(6)],
        "results/augment/text_stats.json",
        "results/augment/images_stats.json",
        "resources/geco/soft_prompts.pt",
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
    results = workflow_run / "results/evaluate/tulip/fashion_mnist"
    zeroshot = json.loads((results / "zeroshot_classification.json").read_text())
    probe = json.loads((results / "linear_probe_5shot.json").read_text())
    assert zeroshot["task"] == "zeroshot_classification"
    assert zeroshot["num_test"] == 10000
    assert zeroshot["metrics"]["acc1"] > 0.25
    assert probe["metrics"]["lp_acc1"] > 0.25
    assert probe["fitted_per_class"] == {name: 5 for name in zeroshot["classnames"]}


def test_every_model_gets_every_result(workflow_run):
    """The open_clip model goes through the same jobs as the tulip checkpoint and gets the same result files."""
    for model in ("tulip", "tiny-open-clip"):
        folder = workflow_run / "results/evaluate" / model
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json"))
        assert names == [
            "fashion_mnist/linear_probe_1shot.json",
            "fashion_mnist/linear_probe_5shot.json",
            "fashion_mnist/zeroshot_classification.json",
            "vision_probe/mmvp_vlm.json",
        ], model
    probe = json.loads((workflow_run / "results/evaluate/tulip/vision_probe/mmvp_vlm.json").read_text())
    assert probe["num_pairs"] == 40
    assert set(probe["pairs_per_category"].values()) == {20}


def test_report_lists_evaluation(workflow_run):
    report = (workflow_run / "results/report/report.md").read_text()
    assert "| tulip | fashion_mnist | zeroshot_classification | acc1 |" in report
    assert "| tiny-open-clip | fashion_mnist | linear_probe_5shot | lp_acc1 |" in report
    assert "| tulip | vision_probe | mmvp_vlm | pair_acc |" in report
    assert (workflow_run / "results/report/loss_curve.png").stat().st_size > 1000
    assert (workflow_run / "results/report/evaluation.png").stat().st_size > 1000


def test_complete_run_has_nothing_to_do(workflow_run):
    result = snakemake(workflow_run, *DRY_RUN)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_eval_seed_change_reruns_only_probes(workflow_run):
    """The seed draws the probes' training pool and shots; zero-shot and the MMVP-style probe keep their results."""
    planned = _planned_after_edit(workflow_run, "eval", "seed", 7)
    assert planned == {"eval_features", "eval_classification", "evaluate", "report", "all"}


def test_added_shot_count_runs_only_new_probes(workflow_run):
    """A shot count within the cached training pool adds probe jobs and re-extracts nothing."""
    planned = _planned_after_edit(workflow_run, "eval", "linear_probe.shots", [1, 5, 2])
    assert planned == {"eval_classification", "evaluate", "report", "all"}


def test_vision_probe_change_rebuilds_the_probe(workflow_run):
    planned = _planned_after_edit(workflow_run, "eval", "vision_probe.pairs_per_category", 10)
    assert planned == {"build_vision_probe", "eval_matching", "evaluate", "report", "all"}


def test_train_key_change_reruns_training_onwards(workflow_run):
    backup = _edit_test_config(workflow_run, "train", "lr", 1.0e-3)
    try:
        result = snakemake(workflow_run, *DRY_RUN)
    finally:
        (workflow_run / ".test/config/config.yaml").write_text(backup)
    assert result.returncode == 0, result.stderr
    assert planned_rules(result) == {"pretrain"} | EVAL_JOBS


@pytest.mark.parametrize(
    ("source_file", "expected"),
    [
        ("src/tulip/eval/zeroshot.py", {"eval_classification", "eval_matching", "evaluate", "report", "all"}),
        ("src/tulip/eval/plots.py", {"evaluate", "report", "all"}),
        ("src/tulip/report/render.py", {"report", "all"}),
        ("src/tulip/losses/sigmoid.py", {"pretrain"} | EVAL_JOBS),
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
