"""Config validation and linting of the workflow (no job runs)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from conftest import REPO, copy_repository, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repository(tmp_path_factory.mktemp("config-check"))


def _write_config(workdir, mutate) -> str:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    mutate(config)
    path = workdir / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_default_config_dry_run_plans_every_stage(workdir):
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0, result.stderr
    for rule in ("download", "augment_text", "augment_images", "shard", "pretrain", "evaluate", "report"):
        assert f"rule {rule}:" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c["train"].update({"learning_rate": 0.1}), "learning_rate"),
        (lambda c: c["eval"].update({"shotz": [1]}), "shotz"),
        (lambda c: c.update({"trian": {}}), "trian"),
        (lambda c: c["train"].update({"steps": "many"}), "many"),
        (lambda c: c["geco"]["text"].update({"fraction": 1.5}), "1.5"),
    ],
    ids=["misspelt-train-key", "misspelt-eval-key", "misspelt-section", "string-for-int", "fraction-above-one"],
)
def test_invalid_config_rejected_before_any_job(workdir, mutate, named):
    result = snakemake(workdir, "all", "-n", "--configfile", _write_config(workdir, mutate))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output
    assert "rule download:" not in output


def _stage_code(stage: str) -> list[str]:
    """Read one entry of STAGE_CODE from workflow/rules/common.smk."""
    import re

    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = re.search(rf'"{stage}": \[(.*?)\]', text, re.DOTALL)
    assert block, f"STAGE_CODE has no entry {stage!r}"
    return re.findall(r'"([^"]+)"', block.group(1))


def test_eval_task_code_covers_the_task_modules():
    """Every evaluation module a task job imports is hashed into its code version, so editing it reruns the job."""
    entries = _stage_code("eval_task")
    outside_tasks = {"summary.py", "plots.py", "vision_probe.py", "__init__.py"}
    modules = [p for p in (REPO / "src" / "tulip" / "eval").rglob("*.py") if p.name not in outside_tasks]
    for module in modules:
        relative = str(module.relative_to(REPO / "src"))
        assert any(relative == e or relative.startswith(e + "/") for e in entries), relative
