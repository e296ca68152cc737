# Stage 2: GeCo generative views (paraphrase and hard-negative captions, positive and negative edits).


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


rule augment_text:
    input:
        manifest=rules.download.output.manifest,
        model=geco_model_input("text"),
    output:
        views="results/augment/text_views.jsonl",
        stats="results/augment/text_views_stats.json",
    params:
        config=stage_config("geco", "text"),
        code=code_version("augment"),
    threads: 2
    resources:
        gpu=0,
    log:
        "logs/augment_text.log",
    benchmark:
        "results/benchmarks/augment_text.tsv"
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip augment-text --manifest {input.manifest} --out {output.views} "
        "--config-json {params.config:q} > {log} 2>&1"


rule augment_images:
    input:
        manifest=rules.download.output.manifest,
        model=geco_model_input("image"),
    output:
        views="results/augment/image_views.jsonl",
        stats="results/augment/image_views_stats.json",
    params:
        config=stage_config("geco", "image"),
        code=code_version("augment"),
    threads: 2
    resources:
        gpu=0,
    log:
        "logs/augment_images.log",
    benchmark:
        "results/benchmarks/augment_images.tsv"
    conda:
        "../../envs/geco.yaml"
    shell:
        "python -m tulip augment-images --manifest {input.manifest} --out {output.views} "
        "--config-json {params.config:q} > {log} 2>&1"
