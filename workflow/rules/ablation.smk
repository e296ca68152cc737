# The ablation ladder (`snakemake ablation`): every variant of config["ablation"] trained with every
# seed on the one shard set, evaluated by the evaluation rules like any model, logged to MLflow
# and compared in one report.
#
#   results/ablation/<variant>/seed<seed>/          model.pt, metrics.jsonl, summary.json, checkpoints/,
#                                                   mlflow_run_id.txt, tracked.json
#   results/evaluate/ablation-<variant>-seed<seed>/ the evaluation results of that run
#   results/ablation/report/                        ablation.html, ablation.md, figures, changes.csv
#
# <variant> is the variant's file name, plus-geco for +geco. Each run's params hold its
# resolved train section, so adding a variant or a seed trains only the new runs, and editing one
# variant's overrides retrains only that variant.


wildcard_constraints:
    variant="[a-z0-9-]+",
    seed="[0-9]+",


rule ablation_pretrain:
    input:
        manifest=rules.shard.output.manifest,
    output:
        weights="results/ablation/{variant}/seed{seed}/model.pt",
        metrics="results/ablation/{variant}/seed{seed}/metrics.jsonl",
        summary="results/ablation/{variant}/seed{seed}/summary.json",
        run_id="results/ablation/{variant}/seed{seed}/mlflow_run_id.txt",
    params:
        config=ablation_train_json,
        code=code_version("pretrain"),
        experiment=ABLATION_EXPERIMENT,
        run_name=ablation_run_name,
        tags=ablation_tags_json,
    threads: machine_cores()
    resources:
        nproc_per_node=1,
        gpu=0,
    log:
        "logs/ablation/{variant}/seed{seed}/pretrain.log",
    benchmark:
        "results/benchmarks/ablation/{variant}/seed{seed}/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "torchrun --standalone --nproc-per-node {resources.nproc_per_node} -m tulip pretrain "
        "--manifest {input.manifest} --out-dir $(dirname {output.weights}) --weights {output.weights} "
        "--threads {threads} --code-version {params.code} --config-json {params.config:q} "
        "--stage-name ablation_pretrain --experiment {params.experiment:q} --run-name {params.run_name:q} "
        "--stage-tags {params.tags:q} --run-id-out {output.run_id} > {log} 2>&1"


rule ablation_track:
    input:
        run_id=rules.ablation_pretrain.output.run_id,
        evaluation=ablation_eval_inputs,
    output:
        tracked="results/ablation/{variant}/seed{seed}/tracked.json",
    params:
        code=code_version("ablation_track"),
    log:
        "logs/ablation/{variant}/seed{seed}/track.log",
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip ablation-track --run-id-file {input.run_id} --eval {input.evaluation} "
        "--out {output.tracked} > {log} 2>&1"


rule ablation_report:
    input:
        metrics=ablation_outputs("metrics.jsonl"),
        summaries=ablation_outputs("summary.json"),
        tracked=ablation_outputs("tracked.json"),
        evaluation=ablation_all_eval_results(),
    output:
        html=report(
            "results/ablation/report/ablation.html",
            caption="../report/ablation.rst",
            category="Ablation",
            labels={"figure": "report"},
        ),
        markdown="results/ablation/report/ablation.md",
        loss_curves=report(
            "results/ablation/report/loss_curves.png",
            caption="../report/ablation_loss_curves.rst",
            category="Ablation",
            labels={"figure": "loss curves"},
        ),
        evaluation=report(
            "results/ablation/report/evaluation.png",
            caption="../report/ablation_evaluation.rst",
            category="Ablation",
            labels={"figure": "evaluation"},
        ),
        changes=report(
            "results/ablation/report/changes.csv",
            caption="../report/ablation_changes.rst",
            category="Ablation",
            labels={"figure": "change per rung"},
        ),
        runs="results/ablation/report/runs.csv",
        configs=report(
            "results/ablation/report/configs.json",
            caption="../report/ablation_configs.rst",
            category="Ablation",
            labels={"figure": "variant configs"},
        ),
    params:
        plan=ablation_plan_json(),
        runs=ablation_runs_json(),
        context=ablation_context_json(),
        experiment=ABLATION_EXPERIMENT,
        confidence=config["ablation"]["confidence"] if ABLATION else 0.95,
        code=code_version("ablation_report"),
    log:
        "logs/ablation/report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m tulip ablation-report --plan-json {params.plan:q} --runs-json {params.runs:q} "
        "--context-json {params.context:q} --confidence {params.confidence} --experiment {params.experiment:q} "
        "--run-name ablation_report --out-dir $(dirname {output.html}) > {log} 2>&1"


rule ablation:
    input:
        ablation_target,
