"""Run report: the loss curve and the evaluation table, as Markdown and as a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tulip.data.io import atomic_write_text
from tulip.eval.summary import headline_rows, load_results
from tulip.report.plots import plot_loss_curves, read_metrics

_CHANCE_NOTE = (
    "Chance: 1 / classes for top-1 accuracy, k / images for Recall@k, 25 % (text, image) and 16.67 % (group) "
    "for Winoground, 25 % per pair and 50 % per statement for MMVP-style pairs."
)


def _eval_rows(eval_files: list[Path]) -> list[dict]:
    return [row for record in load_results(eval_files) for row in headline_rows(record)]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def build_report(
    metrics_path: str | Path, eval_files: list[str | Path], stage_stats: dict[str, dict], out_dir: str | Path,
    eval_plot: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``loss_curve.png`` into ``out_dir``; return their paths.

    ``eval_plot`` is the evaluation stage's headline figure, copied beside the report and embedded.
    """
    out_dir = Path(out_dir)
    records = read_metrics(metrics_path)
    plot = plot_loss_curves(records, out_dir / "loss_curve.png")
    rows = _eval_rows([Path(p) for p in eval_files])
    eval_figure = None
    if eval_plot:
        eval_figure = out_dir / "evaluation.png"
        eval_figure.write_bytes(Path(eval_plot).read_bytes())
    last = records[-1] if records else {}

    md = ["# tulip run report", "", "## Pretraining", ""]
    if last:
        md += [f"- steps: {last['step']}, samples seen: {int(last.get('samples_seen', 0))}",
               f"- final loss: {last['loss']:.4f}; temperature t = {last.get('logit_scale', float('nan')):.3f}, "
               f"bias b = {last.get('logit_bias', float('nan')):.3f}",
               f"- throughput at the end: {last.get('samples_per_s', 0):.1f} samples/s", ""]
    md += ["![loss curve](loss_curve.png)", "", "## Evaluation", "",
           "| model | dataset | task | metric | value % | chance % |", "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['dataset']} | {r['task']} | {r['metric']} | {_pct(r['value'])} | {_pct(r['chance'])} |"
           for r in rows]
    md += ["", _CHANCE_NOTE, ""]
    if eval_figure:
        md += ["![evaluation](evaluation.png)", ""]
    md += ["## Stages", ""]
    for stage, stats in stage_stats.items():
        md.append(f"- **{stage}**: `{json.dumps(stats, sort_keys=True)}`")
    md.append("")
    markdown = "\n".join(md)

    image = base64.b64encode(plot.read_bytes()).decode("ascii")
    table_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in ("model", "dataset", "task", "metric"))
        + f"<td>{_pct(r['value'])}</td><td>{_pct(r['chance'])}</td></tr>"
        for r in rows
    )
    eval_image = ""
    if eval_figure:
        encoded = base64.b64encode(eval_figure.read_bytes()).decode("ascii")
        eval_image = f'<img alt="evaluation" src="data:image/png;base64,{encoded}">'

    stage_items = "".join(
        f"<li><b>{html.escape(s)}</b>: <code>{html.escape(json.dumps(v, sort_keys=True))}</code></li>" for s, v in stage_stats.items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tulip run report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:0.3em 0.6em;text-align:right}}</style></head><body>
<h1>tulip run report</h1>
<h2>Pretraining</h2><img alt="loss curve" src="data:image/png;base64,{image}">
<h2>Evaluation</h2>
<table id="evaluation"><tr><th>model</th><th>dataset</th><th>task</th><th>metric</th><th>value %</th><th>chance %</th></tr>{table_rows}</table>
<p>{_CHANCE_NOTE}</p>{eval_image}
<h2>Stages</h2><ul>{stage_items}</ul>
</body></html>
"""
    atomic_write_text(out_dir / "report.md", markdown)
    atomic_write_text(out_dir / "report.html", page)
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "loss_curve": plot}
    return paths | ({"evaluation": eval_figure} if eval_figure else {})
