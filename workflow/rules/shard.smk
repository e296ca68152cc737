# Stage 3: training shards, the downloaded shards with the generated views stored under their
# source sample's key.


rule shard:
    input:
        manifest=rules.download.output.manifest,
        text_views=augment_outputs("text"),
        image_views=augment_outputs("images"),
    output:
        manifest="results/shards/manifest.json",
    params:
        code=code_version("shard"),
    log:
        "logs/shard.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip shard --manifest {input.manifest} --text-views {input.text_views} "
        "--image-views {input.image_views} --out $(dirname {output.manifest}) > {log} 2>&1"
