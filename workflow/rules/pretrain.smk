# Stage 4: pretraining under torchrun (gloo on CPU, NCCL on GPU). Checkpoints in
# results/pretrain/checkpoints/ survive a failed job, so a retry resumes instead of restarting.


rule pretrain:
    input:
        manifest=rules.shard.output.manifest,
    output:
        weights="results/pretrain/model.pt",
        metrics="results/pretrain/metrics.jsonl",
        summary="results/pretrain/summary.json",
    params:
        config=stage_config("train"),
        code=code_version("pretrain"),
    threads: workflow.cores
    resources:
        nproc_per_node=1,
        gpu=0,
    log:
        "logs/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "torchrun --standalone --nproc-per-node {resources.nproc_per_node} -m tulip pretrain "
        "--manifest {input.manifest} --out-dir $(dirname {output.weights}) --weights {output.weights} "
        "--threads {threads} --code-version {params.code} --config-json {params.config:q} > {log} 2>&1"
