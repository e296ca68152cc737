"""The workflow on a real SLURM cluster: scripts/slurm-cluster's two nodes on localhost, through the plugin.

Needs a running cluster (``scripts/slurm-cluster start``, then export the SLURM_CONF it prints).
Without one the test is skipped, unless TULIP_REQUIRE_SLURM=1 (set by CI), which turns the skip
into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FASHION_MNIST, copy_repository

pytestmark = pytest.mark.slow
REQUIRE_ENV = "TULIP_REQUIRE_SLURM"


def _cluster_problem() -> str | None:
    """Return why no cluster is reachable, or None when one responds."""
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set; start a cluster with scripts/slurm-cluster start and export what it prints"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol ping failed: {error}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld does not answer: {ping.stdout.strip()} {ping.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    problem = _cluster_problem()
    if problem:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no SLURM cluster is reachable: {problem}")
        pytest.skip(problem)
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    workdir = copy_repository(tmp_path_factory.mktemp("slurm"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "workflow" / "Snakefile"),
        "--profile", "profiles/slurm", "--profile", ".test/slurm",
        "--configfile", ".test/config/config.yaml", ".test/config/slurm.yaml", "--", "results/pretrain/model.pt",
    ]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=2400)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.rglob("logs/*.log")))
        pytest.fail(f"workflow on SLURM failed:\n{result.stderr[-6000:]}\n{logs}")
    return workdir, result


def _sacct_jobs(workdir: Path) -> list[dict[str, str]]:
    """Every job step accounted since the run's jobs were submitted, as dicts of sacct fields."""
    fields = ["JobIDRaw", "JobName", "NNodes", "NodeList", "State", "ExitCode"]
    out = subprocess.run(["sacct", "-n", "-P", "--starttime", "now-1days", f"--format={','.join(fields)}"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def test_slurm_pretrain_spans_both_nodes(slurm_run):
    """The pretrain job spans node1 and node2, each running one torchrun agent, and finishes."""
    workdir, result = slurm_run
    summary = json.loads((workdir / "results" / "pretrain" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 10
    steps = [job for job in _sacct_jobs(workdir) if job["JobName"] == "torchrun"]
    assert any(job["NNodes"] == "2" and job["NodeList"] == "node[1-2]" and job["State"] == "COMPLETED"
               for job in steps), steps


def test_slurm_jobs_are_accounted(slurm_run):
    """Each job of the run went through sbatch, and sacct (the plugin's status source) saw it complete."""
    workdir, result = slurm_run
    submitted = result.stderr.count("submitted with SLURM jobid")
    assert submitted >= 7  # prepare, download, two GeCo models, two augmentations, shard, pretrain
    batch_steps = [job for job in _sacct_jobs(workdir) if job["JobName"] == "batch" and job["State"] == "COMPLETED"]
    assert len(batch_steps) >= submitted
    assert "(100%) done" in result.stderr
