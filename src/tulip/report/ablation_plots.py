"""Figures of the ablation report: per-term loss curves and evaluation bars, each with the spread across seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from tulip.report.ablation_stats import seed_spread  # noqa: E402


def _colors(variants: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(variants)}


def loss_terms(curves: Mapping[str, Mapping[int, Sequence[dict]]]) -> list[str]:
    """Return ``loss`` followed by every ``*_loss`` term that any run logged, in sorted order."""
    names = {key for by_seed in curves.values() for records in by_seed.values() for r in records for key in r
             if key.endswith("_loss")}
    return ["loss", *sorted(names)]


def plot_loss_curves(
    curves: Mapping[str, Mapping[int, Sequence[dict]]], variants: Sequence[str], out_path: str | Path
) -> Path:
    """Plot each loss term against the step: per variant the mean over seeds and a band from the lowest to the highest seed.

    ``curves`` maps variant -> seed -> the records of ``metrics.jsonl``. A variant that does not
    train a term has no line in that term's panel.
    """
    terms = loss_terms(curves)
    columns = min(3, len(terms))
    rows = math.ceil(len(terms) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), dpi=110, squeeze=False)
    colors = _colors(variants)
    for ax, term in zip(axes.flat, terms):
        for variant in variants:
            by_step: dict[int, list[float]] = {}
            for records in curves.get(variant, {}).values():
                for record in records:
                    if term in record:
                        by_step.setdefault(int(record["step"]), []).append(float(record[term]))
            if not by_step:
                continue
            steps = sorted(by_step)
            spreads = [seed_spread(by_step[s]) for s in steps]
            ax.plot(steps, [s.mean for s in spreads], color=colors[variant], label=variant, linewidth=1.3)
            ax.fill_between(steps, [s.minimum for s in spreads], [s.maximum for s in spreads],
                            color=colors[variant], alpha=0.2, linewidth=0)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(variants), fontsize=8, frameon=False)
    fig.suptitle("Training loss per term: mean over seeds, band from the lowest to the highest seed", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def plot_evaluation_bars(
    table: Mapping[str, Mapping[str, Mapping[int, float]]], chance: Mapping[str, float | None],
    variants: Sequence[str], out_path: str | Path,
) -> Path:
    """Plot one panel per metric: a bar per variant at its mean over seeds, an error bar of one standard deviation and a dot per seed.

    Values are fractions in ``table`` and percentages on the axes; a dashed line marks chance.
    """
    metrics = list(table)
    columns = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=110, squeeze=False)
    colors = _colors(variants)
    for ax, metric in zip(axes.flat, metrics):
        present = [v for v in variants if v in table[metric]]
        for i, variant in enumerate(present):
            values = [100 * table[metric][variant][s] for s in sorted(table[metric][variant])]
            spread = seed_spread(values)
            ax.bar(i, spread.mean, color=colors[variant], alpha=0.8, yerr=spread.std or 0.0, capsize=4)
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        if chance.get(metric) is not None:
            ax.axhline(100 * chance[metric], color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(range(len(present)), present, rotation=20, fontsize=7, ha="right")
        ax.set_title(metric, fontsize=8)
        ax.set_ylabel("%", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("Evaluation: mean over seeds, error bar one standard deviation, dots single seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
