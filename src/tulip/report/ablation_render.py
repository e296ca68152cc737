"""The ablation report: loss curves, evaluation bars, each rung's change per metric, and every variant's config.

Writes ``ablation.md``, a self-contained ``ablation.html``, the two figures, ``changes.csv`` (one
row per rung and metric), ``runs.csv`` (one row per run and metric) and ``configs.json``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from tulip.data.io import atomic_write_text
from tulip.eval.summary import headline_rows, load_results
from tulip.report.ablation_plots import plot_evaluation_bars, plot_loss_curves
from tulip.report.ablation_stats import HELPED, HURT, ONE_SEED, ladder_changes, seed_spread
from tulip.report.plots import read_metrics

TINY_GECO_PREFIX = "resources/geco/tiny-"  # the random-weight stand-ins the workflow builds


def collect_metrics(runs: Sequence[Mapping]) -> tuple[dict, dict]:
    """Return (table, chance): ``table[metric][variant][seed]`` of every headline metric, and each metric's chance level.

    Metric names are ``<dataset>/<task>/<metric>``; a run that lacks a result another run has stays
    missing, and the rungs that need it skip that metric.
    """
    table: dict[str, dict[str, dict[int, float]]] = {}
    chance: dict[str, float | None] = {}
    for run in runs:
        for record in load_results(run["eval"]):
            for row in headline_rows(record):
                if row["value"] is None:
                    continue
                name = f"{row['dataset']}/{row['task']}/{row['metric']}"
                table.setdefault(name, {}).setdefault(run["variant"], {})[int(run["seed"])] = float(row["value"])
                chance[name] = row["chance"]
    return table, chance


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _mean_std(values: Mapping[int, float]) -> str:
    spread = seed_spread([values[s] for s in sorted(values)])
    std = "" if spread.std is None else f" ± {100 * spread.std:.2f}"
    return f"{100 * spread.mean:.2f}{std}"


def _interval(change) -> str:
    if change.low is None:
        return "n/a"
    return f"[{100 * change.low:+.2f}, {100 * change.high:+.2f}]"


def _verdict_sentences(changes: list[dict], confidence: float) -> list[str]:
    """Return one sentence per rung that names the metrics it helped, hurt or left unclear."""
    sentences = []
    rungs = list(dict.fromkeys((row["before"], row["after"]) for row in changes))
    for before, after in rungs:
        rows = [r for r in changes if (r["before"], r["after"]) == (before, after)]
        groups = {HELPED: [], HURT: [], "other": []}
        for row in rows:
            key = row["change"].verdict if row["change"].verdict in (HELPED, HURT) else "other"
            groups[key].append(f"{row['metric']} ({_points(row['change'].mean, signed=True)} points)")
        if rows and rows[0]["change"].verdict == ONE_SEED:
            sentences.append(f"{after} against {before}: one seed only, so no step can be called helpful or harmful.")
            continue
        parts = []
        if groups[HELPED]:
            parts.append("helped " + ", ".join(groups[HELPED]))
        if groups[HURT]:
            parts.append("hurt " + ", ".join(groups[HURT]))
        if groups["other"]:
            parts.append(f"made no change that the {confidence:.0%} interval separates from 0 on "
                         + ", ".join(groups["other"]))
        sentences.append(f"{after} against {before}: " + "; ".join(parts) + ".")
    return sentences


def _setup_notes(plan: Sequence[Mapping], context: Mapping) -> list[str]:
    seeds = plan[0]["seeds"]
    scales = {(v["train"]["steps"], v["train"]["batch_size"]) for v in plan}
    if len(scales) == 1:
        steps, batch = scales.pop()
        scale = f"Every variant trains {steps} steps of {batch} pairs"
    else:
        scale = "The variants train different numbers of steps or batch sizes (see Variants)"
    notes = [
        f"{scale} on the same shard set and is evaluated by the same jobs with the same settings. "
        f"Seeds {seeds} set the initial weights and the data order, and runs with the same seed are compared in pairs.",
        "Variants differ only by the overrides listed under Variants; nothing was tuned per variant.",
        "These figures describe this scale only: a tiny model trained for minutes on CPU, far from the paper's runs.",
    ]
    models = [context.get("geco_text_model"), context.get("geco_image_model")]
    if any(str(m).startswith(TINY_GECO_PREFIX) for m in models if m):
        notes.append("The GeCo views come from the random-weight stand-in generators, so they are noise: a rung that "
                     "turns generated views on measures the effect of noisy views, not of GeCo.")
    for key, label in (("geco_text_fraction", "text"), ("geco_image_fraction", "image")):
        if context.get(key) is not None:
            notes.append(f"Share of samples with generated {label} views: {context[key]}.")
    return notes


def _csv(rows: list[dict], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _image_tag(path: Path, alt: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def build_ablation_report(
    plan: Sequence[Mapping], runs: Sequence[Mapping], out_dir: str | Path, context: Mapping | None = None,
    confidence: float = 0.95,
) -> dict[str, Path]:
    """Write the ablation report into ``out_dir`` and return the paths of its files.

    ``plan`` is ``tulip.train.ablation.ladder_plan``'s list; ``runs`` has one entry per (variant, seed)
    with ``variant`` (display name), ``seed``, ``metrics`` (metrics.jsonl), ``summary`` (summary.json)
    and ``eval`` (result JSON files). ``context`` names the GeCo generators and their fractions.
    """
    out_dir = Path(out_dir)
    context = context or {}
    order = [variant["name"] for variant in plan]
    expected = {(v["name"], int(s)) for v in plan for s in v["seeds"]}
    provided = {(r["variant"], int(r["seed"])) for r in runs}
    if expected != provided:
        raise ValueError(f"the runs do not match the plan: missing {sorted(expected - provided)}, "
                         f"unexpected {sorted(provided - expected)}")

    curves: dict[str, dict[int, list[dict]]] = {}
    train_seconds: dict[str, dict[int, float]] = {}
    for run in runs:
        curves.setdefault(run["variant"], {})[int(run["seed"])] = read_metrics(run["metrics"])
        summary = json.loads(Path(run["summary"]).read_text(encoding="utf-8"))
        train_seconds.setdefault(run["variant"], {})[int(run["seed"])] = float(summary["seconds"])
    table, chance = collect_metrics(runs)
    changes = ladder_changes(table, order, confidence)

    loss_plot = plot_loss_curves(curves, order, out_dir / "loss_curves.png")
    eval_plot = plot_evaluation_bars(table, chance, order, out_dir / "evaluation.png")

    change_rows = [
        {"before": r["before"], "after": r["after"], "metric": r["metric"], "seeds": r["change"].n,
         "mean_change": r["change"].mean, "standard_error": r["change"].sem, "ci_low": r["change"].low,
         "ci_high": r["change"].high, "verdict": r["change"].verdict}
        for r in changes
    ]
    run_rows = [
        {"variant": variant, "seed": seed, "metric": metric, "value": value}
        for metric, by_variant in table.items() for variant in order
        for seed, value in sorted(by_variant.get(variant, {}).items())
    ]
    atomic_write_text(out_dir / "changes.csv", _csv(change_rows, list(change_rows[0]) if change_rows else ["metric"]))
    atomic_write_text(out_dir / "runs.csv", _csv(run_rows, ["variant", "seed", "metric", "value"]))
    atomic_write_text(out_dir / "configs.json", json.dumps(list(plan), indent=2, sort_keys=True) + "\n")

    sentences = _verdict_sentences(changes, confidence)
    notes = _setup_notes(plan, context)
    pages = _render(plan, order, table, chance, changes, train_seconds, sentences, notes, confidence,
                    loss_plot, eval_plot)
    atomic_write_text(out_dir / "ablation.md", pages["markdown"])
    atomic_write_text(out_dir / "ablation.html", pages["html"])
    return {
        "markdown": out_dir / "ablation.md", "html": out_dir / "ablation.html", "loss_curves": loss_plot,
        "evaluation": eval_plot, "changes": out_dir / "changes.csv", "runs": out_dir / "runs.csv",
        "configs": out_dir / "configs.json",
    }


def _render(plan, order, table, chance, changes, train_seconds, sentences, notes, confidence, loss_plot, eval_plot):
    """Return the report as Markdown and as HTML, both from the same rows."""
    level = f"{confidence:.0%}"
    eval_header = ["metric", "chance %", *order]
    eval_rows = [
        [metric, _points(chance.get(metric)), *[_mean_std(by_variant[v]) if v in by_variant else "n/a" for v in order]]
        for metric, by_variant in table.items()
    ]
    eval_rows.append(["training time (s)", "", *[_seconds(train_seconds.get(v, {})) for v in order]])
    step_header = ["rung", "metric", "seeds", "mean change (points)", "standard error", f"{level} interval", "verdict"]
    step_rows = [
        [f"{r['before']} → {r['after']}", r["metric"], str(r["change"].n), _points(r["change"].mean, signed=True),
         _points(r["change"].sem), _interval(r["change"]), r["change"].verdict]
        for r in changes
    ]
    variant_header = ["variant", "file name", "seeds", "overrides of the ladder's train section"]
    variant_rows = [
        [v["name"], v["slug"], ", ".join(str(s) for s in v["seeds"]), json.dumps(v["overrides"], sort_keys=True)]
        for v in plan
    ]

    md = ["# Ablation ladder", "", "## Verdict", ""]
    md += [f"- {s}" for s in sentences] + [""]
    md += ["## Setup", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Loss curves", "", f"![loss curves]({loss_plot.name})", ""]
    md += ["## Evaluation (mean ± standard deviation over seeds, %)", "", _md_table(eval_header, eval_rows), "",
           f"![evaluation]({eval_plot.name})", ""]
    md += [f"## Change per rung (seed-paired, Student's t {level} interval)", "", _md_table(step_header, step_rows), ""]
    md += ["## Variants", "", _md_table(variant_header, variant_rows), "",
           "The resolved train section of every variant is in `configs.json`.", ""]

    details = "".join(
        f"<details><summary>{html.escape(v['name'])}: resolved train section</summary>"
        f"<pre>{html.escape(json.dumps(v['train'], indent=2, sort_keys=True))}</pre></details>"
        for v in plan
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tulip ablation ladder</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #999;padding:0.3em 0.6em}}img{{max-width:100%}}pre{{font-size:0.8em}}</style></head><body>
<h1>Ablation ladder</h1>
<h2>Verdict</h2><ul id="verdict">{"".join(f"<li>{html.escape(s)}</li>" for s in sentences)}</ul>
<h2>Setup</h2><ul id="setup">{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
<h2>Loss curves</h2>{_image_tag(loss_plot, "loss curves")}
<h2>Evaluation (mean ± standard deviation over seeds, %)</h2>
{_html_table("evaluation", eval_header, eval_rows)}{_image_tag(eval_plot, "evaluation")}
<h2>Change per rung (seed-paired, Student's t {level} interval)</h2>
{_html_table("changes", step_header, step_rows)}
<h2>Variants</h2>{_html_table("variants", variant_header, variant_rows)}{details}
</body></html>
"""
    return {"markdown": "\n".join(md), "html": page}


def _seconds(values: Mapping[int, float]) -> str:
    if not values:
        return "n/a"
    spread = seed_spread([values[s] for s in sorted(values)])
    return f"{spread.mean:.0f}" + ("" if spread.std is None else f" ± {spread.std:.0f}")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'
