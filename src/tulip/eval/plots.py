"""Figures of the evaluation summary: headline metrics, probe accuracy against shots, MMVP categories."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from tulip.eval import registry  # noqa: E402
from tulip.eval.summary import headline_rows  # noqa: E402

PER_CLASS_PLOT_MAX_CLASSES = 50  # larger class lists are left to summary.csv


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_headline(records: list[dict], path: Path) -> Path:
    """Horizontal bars of every headline metric, one colour per model, with the chance level marked."""
    rows = [row for record in records for row in headline_rows(record) if row["value"] is not None]
    models = sorted({row["model"] for row in rows})
    labels = sorted({(row["dataset"], row["task"], row["metric"]) for row in rows})
    height = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) * max(len(models), 1) + 1.2), dpi=120)
    for m, model in enumerate(models):
        for row in (r for r in rows if r["model"] == model):
            y = labels.index((row["dataset"], row["task"], row["metric"])) + m * height
            ax.barh(y, 100 * row["value"], height=height, color=f"C{m}", label=model)
            if row["chance"] is not None:
                ax.plot([100 * row["chance"]] * 2, [y - height / 2, y + height / 2], color="black", linewidth=1.5)
    handles = {h.get_label(): h for h in ax.get_legend_handles_labels()[0]}
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], [" / ".join(label) for label in labels], fontsize=7)
    ax.set_xlabel("% (black tick: chance)")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles.values(), handles.keys(), fontsize=7)
    ax.set_title("Evaluation headline metrics")
    return _save(fig, path)


def plot_probe_shots(records: list[dict], path: Path) -> Path | None:
    """Linear-probe top-1 against shots per class, one line per (model, dataset); None without probes."""
    probes = [r for r in records if r["task"] == registry.LINEAR_PROBE]
    if not probes:
        return None
    ints = sorted({r["shots"] for r in probes if r["shots"] != "full"})
    positions = {s: i for i, s in enumerate(ints + (["full"] if any(r["shots"] == "full" for r in probes) else []))}
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in probes}):
        series = sorted((positions[r["shots"]], r["metrics"]["lp_acc1"]) for r in probes
                        if r["model"] == model and r["dataset"] == dataset)
        ax.plot([x for x, _ in series], [100 * y for _, y in series], marker="o", label=f"{model} / {dataset}")
    ax.set_xticks(list(positions.values()), [str(s) for s in positions])
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("linear probe top-1 %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_mmvp_categories(records: list[dict], path: Path) -> Path | None:
    """Pair accuracy per visual-pattern category for every MMVP-style result; None without any."""
    results = [r for r in records if r["task"] == registry.MMVP_VLM]
    if not results:
        return None
    categories = sorted({k.split(".", 1)[1] for r in results for k in r["metrics"] if k.startswith("pair_acc.")})
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(categories) * len(results) + 1.2), dpi=120)
    for i, record in enumerate(results):
        values = [100 * record["metrics"].get(f"pair_acc.{c}", float("nan")) for c in categories]
        ax.barh([j + i * width for j in range(len(categories))], values, height=width, color=f"C{i}",
                label=f"{record['model']} / {record['dataset']}")
    ax.axvline(25, color="black", linewidth=1, linestyle="--", label="chance (25 %)")
    ax.set_yticks([j + 0.4 - width / 2 for j in range(len(categories))], categories, fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("pair accuracy %")
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.set_title("MMVP-style pair accuracy per category")
    return _save(fig, path)


def plot_per_class_recall(records: list[dict], path: Path) -> Path | None:
    """Zero-shot recall per class for datasets with at most ``PER_CLASS_PLOT_MAX_CLASSES`` classes."""
    results = [r for r in records if r["task"] == registry.ZEROSHOT_CLASSIFICATION
               and 0 < len(r.get("per_class_recall", {})) <= PER_CLASS_PLOT_MAX_CLASSES]
    if not results:
        return None
    fig, axes = plt.subplots(len(results), 1, figsize=(7, 2.6 * len(results)), dpi=120, squeeze=False)
    for ax, record in zip(axes[:, 0], results):
        names = list(record["per_class_recall"])
        values = [100 * (v if v is not None else float("nan")) for v in record["per_class_recall"].values()]
        ax.bar(range(len(names)), values, color="C0")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("recall %")
        ax.set_title(f"{record['model']} / {record['dataset']}: zero-shot recall per class", fontsize=9)
    return _save(fig, path)


def write_plots(records: list[dict], out_dir: str | Path) -> list[Path]:
    """Write every plot that has data into ``out_dir``; return the files written."""
    out_dir = Path(out_dir)
    written = [
        plot_headline(records, out_dir / "headline.png"),
        plot_probe_shots(records, out_dir / "linear_probe_shots.png"),
        plot_mmvp_categories(records, out_dir / "mmvp_categories.png"),
        plot_per_class_recall(records, out_dir / "zeroshot_per_class_recall.png"),
    ]
    return [p for p in written if p is not None]
