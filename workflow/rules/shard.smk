# Stage 3: webdataset shards with the generated views stored under their source sample's key.


rule shard:
    input:
        samples=rules.download.output.samples,
        text_views=rules.augment_text.output.views,
        image_views=rules.augment_images.output.views,
    output:
        manifest="results/shards/manifest.json",
    params:
        config=stage_config("shard"),
        code=code_version("shard"),
    log:
        "logs/shard.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m tulip shard --samples {input.samples} --text-views {input.text_views} "
        "--image-views {input.image_views} --out $(dirname {output.manifest}) "
        "--config-json {params.config:q} > {log} 2>&1"
