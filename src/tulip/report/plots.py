"""Figures for the run report."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: str | Path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_loss_curves(records: list[dict], out_path: str | Path) -> Path:
    """Plot the total loss and every ``*_loss`` term against the optimizer step."""
    out_path = Path(out_path)
    steps = [r["step"] for r in records]
    names = ["loss"] + sorted({k for r in records for k in r if k.endswith("_loss")})
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for name in names:
        ax.plot(steps, [r.get(name, float("nan")) for r in records], label=name, linewidth=1.5 if name == "loss" else 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
