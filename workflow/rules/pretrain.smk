# Stage 4: pretraining under torchrun (gloo on CPU, NCCL on GPU). Checkpoints in
# results/pretrain/checkpoints/ survive a failed or stopped job, so a retry resumes exactly
# instead of restarting. SIGTERM or SIGUSR1 (SLURM's warning before a time limit or preemption)
# makes training write a checkpoint and exit with 75; torchrun forwards SIGUSR1 to its workers
# because TORCHELASTIC_SIGNALS_TO_HANDLE lists it.


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
    threads: machine_cores()
    resources:
        nproc_per_node=1,
        gpu=0,
        **pretrain_launch_resources(),
    log:
        "logs/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 "
        + torchrun_launcher()
        + " -m tulip pretrain "
        "--manifest {input.manifest} --out-dir $(dirname {output.weights}) --weights {output.weights} "
        "--threads {threads} --code-version {params.code} --config-json {params.config:q} > {log} 2>&1"
