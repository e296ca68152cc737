# Stage 2: GeCo generative views (paraphrase and hard-negative captions, positive and negative
# edits), one job per downloaded shard and kind. A job appends each finished sample to a partial
# file, so a killed job that is rerun continues where it stopped; the declared JSONL appears only
# when its shard is complete. The shards are read from resources/download/ (the download stage's
# manifest is the declared input; the shard names are known before it runs).


rule build_tiny_lm:
    input:
        manifest=rules.download.output.manifest,
    output:
        directory(TINY_LM),
    params:
        code=code_version("geco_models"),
    log:
        "logs/build_tiny_lm.log",
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip build-tiny-lm --manifest {input.manifest} --out {output} > {log} 2>&1"


rule build_tiny_editor:
    output:
        directory(TINY_EDITOR),
    params:
        code=code_version("geco_models"),
    log:
        "logs/build_tiny_editor.log",
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip build-tiny-editor --out {output} > {log} 2>&1"


rule prepare_edit_pairs:
    output:
        table=EDIT_PAIRS_TABLE,
    params:
        root=config["data"]["fashion_mnist"]["root"],
        num_pairs=config["geco"]["soft_prompts"]["fashion_mnist_pairs"],
        seed=config["geco"]["soft_prompts"]["seed"],
        code=code_version("edit_pairs"),
    log:
        "logs/prepare_edit_pairs.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip prepare-edit-pairs --root {params.root:q} --out $(dirname {output.table}) "
        "--num-pairs {params.num_pairs} --seed {params.seed} > {log} 2>&1"


rule download_edit_pairs:
    input:
        tables=edit_pairs_tables(),
    output:
        manifest="resources/soft_prompts/{side}/manifest.json",
    wildcard_constraints:
        side="source|target",
    params:
        config=edit_pairs_download_config,
        code=code_version("download"),
    log:
        "logs/download_edit_pairs_{side}.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip download --table {input.tables:q} --out $(dirname {output.manifest}) "
        "--config-json {params.config:q} --stage-name download_edit_pairs > {log} 2>&1"


rule learn_soft_prompts:
    input:
        source="resources/soft_prompts/source/manifest.json",
        target="resources/soft_prompts/target/manifest.json",
        model=geco_model_input("image"),
    output:
        SOFT_PROMPTS,
    params:
        model=editor_model,
        config=stage_config("geco", "soft_prompts"),
        code=code_version("soft_prompts"),
    threads: 2
    resources:
        gpu=0,
    log:
        "logs/learn_soft_prompts.log",
    benchmark:
        "results/benchmarks/learn_soft_prompts.tsv"
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip learn-soft-prompts --source-manifest {input.source} --target-manifest {input.target} "
        "--model {params.model:q} --out {output} --config-json {params.config:q} > {log} 2>&1"


rule augment_text:
    input:
        manifest=rules.download.output.manifest,
        model=geco_model_input("text"),
    output:
        views="results/augment/text/{shard}.jsonl",
        stats="results/augment/text/{shard}.stats.json",
    wildcard_constraints:
        shard="shard-[0-9]+",
    params:
        shard="resources/download/{shard}.tar",
        config=stage_config("geco", "text"),
        code=code_version("augment"),
    threads: 1
    resources:
        gpu=0,
    log:
        "logs/augment_text/{shard}.log",
    benchmark:
        "results/benchmarks/augment_text/{shard}.tsv"
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip augment-text --shard {params.shard} --out {output.views} "
        "--config-json {params.config:q} > {log} 2>&1"


rule augment_images:
    input:
        manifest=rules.download.output.manifest,
        model=geco_model_input("image"),
        soft_prompts=soft_prompts_file(),
    output:
        views="results/augment/images/{shard}.jsonl",
        stats="results/augment/images/{shard}.stats.json",
    wildcard_constraints:
        shard="shard-[0-9]+",
    params:
        shard="resources/download/{shard}.tar",
        soft_prompts=soft_prompts_argument,
        config=stage_config("geco", "image"),
        code=code_version("augment"),
    threads: 1
    resources:
        gpu=0,
    log:
        "logs/augment_images/{shard}.log",
    benchmark:
        "results/benchmarks/augment_images/{shard}.tsv"
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip augment-images --shard {params.shard} --out {output.views} {params.soft_prompts} "
        "--config-json {params.config:q} > {log} 2>&1"


rule augment_stats:
    input:
        augment_stats_inputs,
    output:
        "results/augment/{kind}_stats.json",
    wildcard_constraints:
        kind="text|images",
    params:
        code=code_version("augment"),
    log:
        "logs/augment_stats_{kind}.log",
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip sum-view-stats --stats {input} --out {output} > {log} 2>&1"
