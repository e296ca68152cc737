# Stage 1: image-caption pairs into webdataset shards under resources/ (and the held-out evaluation
# split). The download resumes: shards finished by an interrupted run are kept, since only the
# manifest and the statistics are declared outputs.


rule prepare_fashion_mnist_pairs:
    output:
        pairs=FASHION_MNIST_PAIRS,
    params:
        root=config["data"]["fashion_mnist"]["root"],
        num_samples=config["data"]["fashion_mnist"]["num_samples"],
        seed=config["data"]["fashion_mnist"]["seed"],
        code=code_version("prepare"),
    log:
        "logs/prepare_fashion_mnist_pairs.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip prepare-fashion-mnist-pairs --root {params.root:q} "
        "--out $(dirname {output.pairs}) --num-samples {params.num_samples} --seed {params.seed} "
        "> {log} 2>&1"


rule prepare_fashion_mnist_eval:
    output:
        classnames=f"{FASHION_MNIST_EVAL}/classnames.txt",
    params:
        root=config["data"]["fashion_mnist"]["root"],
        pool=config["data"]["fashion_mnist"]["probe_pool_per_class"],
        seed=config["data"]["fashion_mnist"]["seed"],
        code=code_version("prepare"),
    log:
        "logs/prepare_fashion_mnist_eval.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip prepare-fashion-mnist-eval --root {params.root:q} "
        "--out $(dirname {output.classnames}) --probe-pool-per-class {params.pool} --seed {params.seed} "
        "> {log} 2>&1"


rule download:
    input:
        tables=pairs_tables(),
    output:
        manifest="resources/download/manifest.json",
        stats="resources/download/stats.json",
    params:
        config=stage_config("data", "download"),
        code=code_version("download"),
    threads: 1
    log:
        "logs/download.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip download --table {input.tables:q} --out $(dirname {output.manifest}) "
        "--config-json {params.config:q} > {log} 2>&1"
