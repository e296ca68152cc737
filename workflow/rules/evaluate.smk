# Stage 5: zero-shot classification and few-shot linear probes on the held-out split.


rule evaluate:
    input:
        weights=rules.pretrain.output.weights,
        classnames=f"{eval_dataset_root()}/classnames.txt",
    output:
        eval_outputs(),
    params:
        config=stage_config("eval"),
        code=code_version("evaluate"),
    threads: workflow.cores
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip evaluate --weights {input.weights} --dataset-root $(dirname {input.classnames}) "
        "--out-dir results/evaluate --config-json {params.config:q} > {log} 2>&1"
