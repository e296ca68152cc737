# Stage 5: evaluation. One job per (model, dataset, task), each writing a result JSON in
# CLIP_benchmark's shape, then one `evaluate` job that logs them all to MLflow with a summary.
#
#   results/evaluate/<model>/<dataset>/features/<role>.pt   cached image features of classification
#                                                          sets: role "test", and "train" for probes
#   results/evaluate/<model>/<dataset>/<task>.json     one result per task and shot count
#   results/evaluate/summary/                          summary.csv, summary.md, plots


wildcard_constraints:
    model="[A-Za-z0-9_-]+",
    dataset="[A-Za-z0-9_-]+",
    role="test|train",


rule build_vision_probe:
    output:
        questions=f"{VISION_PROBE}/Questions.csv",
    params:
        root=config["data"]["fashion_mnist"]["root"],
        config=stage_config("eval", "vision_probe"),
        code=code_version("vision_probe"),
    log:
        "logs/build_vision_probe.log",
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip build-vision-probe --root {params.root:q} --out $(dirname {output.questions}) "
        "--config-json {params.config:q} > {log} 2>&1"


rule eval_features:
    input:
        unpack(eval_features_inputs),
    output:
        features="results/evaluate/{model}/{dataset}/features/{role}.pt",
    params:
        model=eval_model_json,
        dataset=eval_dataset_json,
        config=eval_features_json,
        code=code_version("eval_features"),
    threads: max(1, machine_cores() // 2)
    resources:
        gpu=0,
    log:
        "logs/eval_features/{model}/{dataset}/{role}.log",
    benchmark:
        "results/benchmarks/eval_features/{model}/{dataset}/{role}.tsv"
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip eval-features --model-json {params.model:q} --dataset {wildcards.dataset} "
        "--dataset-json {params.dataset:q} --role {wildcards.role} --config-json {params.config:q} "
        "--threads {threads} --out {output.features} > {log} 2>&1"


# Zero-shot classification and linear probes score the cached features.
rule eval_classification:
    input:
        unpack(eval_classification_inputs),
    output:
        result="results/evaluate/{model}/{dataset}/{task}.json",
    wildcard_constraints:
        task="zeroshot_classification|linear_probe_[0-9]+shot|linear_probe_full",
    params:
        model=eval_model_json,
        dataset=eval_dataset_json,
        config=eval_task_json,
        code=code_version("eval_task"),
    threads: max(1, machine_cores() // 2)
    resources:
        gpu=0,
    log:
        "logs/eval_classification/{model}/{dataset}/{task}.log",
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip eval-task --task {wildcards.task} --model-json {params.model:q} "
        "--dataset {wildcards.dataset} --dataset-json {params.dataset:q} --features {input.features} "
        "--config-json {params.config:q} --threads {threads} --out {output.result} > {log} 2>&1"


# Retrieval, Winoground and MMVP-VLM encode their images and texts directly.
rule eval_matching:
    input:
        unpack(eval_matching_inputs),
    output:
        result="results/evaluate/{model}/{dataset}/{task}.json",
    wildcard_constraints:
        task="zeroshot_retrieval|image_caption_selection|mmvp_vlm",
    params:
        model=eval_model_json,
        dataset=eval_dataset_json,
        config=eval_task_json,
        code=code_version("eval_task"),
    threads: max(1, machine_cores() // 2)
    resources:
        gpu=0,
    log:
        "logs/eval_matching/{model}/{dataset}/{task}.log",
    benchmark:
        "results/benchmarks/eval_matching/{model}/{dataset}/{task}.tsv"
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip eval-task --task {wildcards.task} --model-json {params.model:q} "
        "--dataset {wildcards.dataset} --dataset-json {params.dataset:q} "
        "--config-json {params.config:q} --threads {threads} --out {output.result} > {log} 2>&1"


rule evaluate:
    input:
        results=eval_results(),
    output:
        table="results/evaluate/summary/summary.csv",
        markdown=report("results/evaluate/summary/summary.md", category="Evaluation"),
        headline=report("results/evaluate/summary/headline.png", category="Evaluation"),
    params:
        config=stage_config("eval"),
        code=code_version("evaluate"),
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/eval.yaml"
    shell:
        "python -m tulip evaluate --results {input.results} --out-dir $(dirname {output.table}) "
        "--config-json {params.config:q} > {log} 2>&1"
