"""Shared fixtures: a copy of the repository to run the workflow in, and helpers to call Snakemake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"
# Written by the workflow fixture: adds a random-weight open_clip model to the evaluated models.
OPEN_CLIP_CONFIG = ".test/config/open_clip_model.yaml"
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

requires_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)


def copy_repository(dest: Path) -> Path:
    """Copy the workflow, library, configs, envs and profiles so a test may edit code and config without touching the checkout."""
    for name in ("workflow", "src", "config", "envs", "profiles", ".test"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # A repository of its own, so runs are tagged with a real commit as in a checkout.
    git = ["git", "-c", "user.name=tulip tests", "-c", "user.email=tests@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    (dest / ".gitignore").write_text("results/\nresources/\nlogs/\n.snakemake/\n*.pyc\n")
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy of the checkout under test"], cwd=dest, check=True)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run the Snakemake command line in ``workdir`` with the workflow copy found there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "workflow" / "Snakefile"), *args]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def planned_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule that a dry run plans, read from its job-stats table."""
    counts, in_table = {}, False
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if not parts or parts[0] == "total":
                in_table = False
                continue
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts


def planned_rules(result: subprocess.CompletedProcess) -> set[str]:
    """Rules a dry run plans to run."""
    return set(planned_counts(result))


def add_open_clip_model(workdir: Path) -> None:
    """Save a tiny open_clip model with random weights in ``workdir`` and a config file that evaluates it."""
    import json

    import open_clip
    import torch
    import yaml

    folder = workdir / "resources" / "test-models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-open-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder / "tiny-open-clip.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-open-clip").state_dict(), folder / "tiny-open-clip.pt")
    entry = {"name": "tiny-open-clip", "type": "open_clip", "architecture": "resources/test-models/tiny-open-clip.json",
             "weights": "resources/test-models/tiny-open-clip.pt"}
    (workdir / OPEN_CLIP_CONFIG).write_text(yaml.safe_dump({"eval": {"models": [entry]}}))


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory):
    """Run `all` at test scale in a copy of the repository, with an open_clip model; tests read its outputs."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    workdir = copy_repository(tmp_path_factory.mktemp("workflow"))
    add_open_clip_model(workdir)
    result = snakemake(workdir, "all", "--cores", "2", "--configfile", ".test/config/config.yaml", OPEN_CLIP_CONFIG)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"workflow failed:\n{result.stderr[-5000:]}\n{logs}")
    return workdir
