# Stage 6: the run report (loss curve, evaluation table, stage statistics).


rule report:
    input:
        metrics=rules.pretrain.output.metrics,
        evaluation=eval_results(),
        eval_plot=rules.evaluate.output.headline,
        download=rules.download.output.stats,
        text_views="results/augment/text_stats.json",
        image_views="results/augment/images_stats.json",
        shards=rules.shard.output.manifest,
        train=rules.pretrain.output.summary,
    output:
        markdown=report("results/report/report.md", category="Report"),
        html="results/report/report.html",
        loss_curve=report("results/report/loss_curve.png", category="Pretraining"),
    params:
        code=code_version("report"),
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m tulip report --metrics {input.metrics} --eval {input.evaluation} --eval-plot {input.eval_plot} "
        "--stats download={input.download} text_views={input.text_views} image_views={input.image_views} "
        "shards={input.shards} pretrain={input.train} --out-dir $(dirname {output.markdown}) > {log} 2>&1"
