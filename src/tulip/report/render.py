"""Run report: the loss curve and the evaluation table, as Markdown and as a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tulip.data.io import atomic_write_text
from tulip.report.plots import plot_loss_curves, read_metrics

_CHANCE_NOTE = "Chance level is 1 / number of classes for top-1 accuracy."


def _eval_rows(eval_files: list[Path]) -> list[dict]:
    rows = []
    for path in sorted(eval_files):
        result = json.loads(path.read_text())
        task = result["task"] + (f" ({result['shots']}-shot)" if "shots" in result else "")
        metrics = result["metrics"]
        top1 = metrics.get("acc1", metrics.get("lp_acc1"))
        top5 = metrics.get("acc5", metrics.get("lp_acc5"))
        num_classes = len(result.get("classnames", [])) or len(result.get("fitted_per_class", {})) or None
        rows.append({
            "dataset": result["dataset"], "task": task, "top1": top1, "top5": top5,
            "chance": 1.0 / num_classes if num_classes else None,
        })
    return rows


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def build_report(metrics_path: str | Path, eval_files: list[str | Path], stage_stats: dict[str, dict], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``loss_curve.png`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    records = read_metrics(metrics_path)
    plot = plot_loss_curves(records, out_dir / "loss_curve.png")
    rows = _eval_rows([Path(p) for p in eval_files])
    last = records[-1] if records else {}

    md = ["# tulip run report", "", "## Pretraining", ""]
    if last:
        md += [f"- steps: {last['step']}, samples seen: {int(last.get('samples_seen', 0))}",
               f"- final loss: {last['loss']:.4f}; temperature t = {last.get('logit_scale', float('nan')):.3f}, "
               f"bias b = {last.get('logit_bias', float('nan')):.3f}",
               f"- throughput at the end: {last.get('samples_per_s', 0):.1f} samples/s", ""]
    md += ["![loss curve](loss_curve.png)", "", "## Evaluation", "",
           "| dataset | task | top-1 % | top-5 % | chance top-1 % |", "|---|---|---|---|---|"]
    md += [f"| {r['dataset']} | {r['task']} | {_pct(r['top1'])} | {_pct(r['top5'])} | {_pct(r['chance'])} |" for r in rows]
    md += ["", _CHANCE_NOTE, "", "## Stages", ""]
    for stage, stats in stage_stats.items():
        md.append(f"- **{stage}**: `{json.dumps(stats, sort_keys=True)}`")
    md.append("")
    markdown = "\n".join(md)

    image = base64.b64encode(plot.read_bytes()).decode("ascii")
    table_rows = "".join(
        f"<tr><td>{html.escape(r['dataset'])}</td><td>{html.escape(r['task'])}</td><td>{_pct(r['top1'])}</td>"
        f"<td>{_pct(r['top5'])}</td><td>{_pct(r['chance'])}</td></tr>"
        for r in rows
    )
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
<table id="evaluation"><tr><th>dataset</th><th>task</th><th>top-1 %</th><th>top-5 %</th><th>chance top-1 %</th></tr>{table_rows}</table>
<p>{_CHANCE_NOTE}</p>
<h2>Stages</h2><ul>{stage_items}</ul>
</body></html>
"""
    atomic_write_text(out_dir / "report.md", markdown)
    atomic_write_text(out_dir / "report.html", page)
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "loss_curve": plot}
