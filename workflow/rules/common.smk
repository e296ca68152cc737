# Helpers shared by the stage modules: config validation, per-stage params and MLflow set-up.
# Functions only; each stage module holds that stage's rules.

import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

SRC_DIR = Path(workflow.basedir).parent / "src"
if str(SRC_DIR) not in sys.path:
    sys.path.insert(0, str(SRC_DIR))

from tulip.cli import workflow as tulip_workflow

# Library code each stage runs. Editing any of these files reruns the stage, through the
# `code` param of its rules.
STAGE_CODE = {
    "prepare": ["tulip/data/fashion_mnist.py", "tulip/data/io.py", "tulip/data/templates", "tulip/cli/data.py"],
    "download": ["tulip/data/download.py", "tulip/data/table.py", "tulip/data/io.py", "tulip/cli/data.py"],
    "geco_models": ["tulip/geco/tiny_models.py", "tulip/geco/prompts.py", "tulip/cli/geco.py"],
    "augment": ["tulip/geco", "tulip/cli/geco.py"],
    "shard": ["tulip/data/shards.py", "tulip/data/io.py", "tulip/cli/data.py"],
    "pretrain": [
        "tulip/models",
        "tulip/losses",
        "tulip/train",
        "tulip/data/loader.py",
        "tulip/data/crops.py",
        "tulip/data/stats.py",
        "tulip/data/shards.py",
        "tulip/distributed.py",
        "tulip/cli/train.py",
    ],
    "evaluate": ["tulip/models", "tulip/eval", "tulip/cli/evaluate.py"],
    "report": ["tulip/report", "tulip/cli/report.py"],
}

TINY_LM = "resources/geco/tiny-lm"
TINY_EDITOR = "resources/geco/tiny-instruct-pix2pix"
FASHION_MNIST_PAIRS = "resources/fashion_mnist/pairs.tsv"
FASHION_MNIST_EVAL = "resources/eval/fashion_mnist"

LOCAL_TRACKING_STORE = not config["tracking"].get("uri")
TRACKING_URI = config["tracking"].get("uri") or tulip_workflow.default_tracking_uri("results")
tulip_workflow.export_job_environment(SRC_DIR, TRACKING_URI, config["tracking"]["experiment"])


def stage_config(*path):
    """The config subtree at `path` as canonical JSON; as a param it reruns its rule when it changes."""
    node = config
    for key in path:
        node = node[key]
    return tulip_workflow.canonical_json(node)


def code_version(stage):
    return tulip_workflow.code_version(SRC_DIR, STAGE_CODE[stage])


def pairs_table():
    if config["data"]["source"] == "fashion_mnist":
        return FASHION_MNIST_PAIRS
    if not config["data"].get("table"):
        raise ValueError(
            "data.source is 'table' but data.table is not set; give the path of a CSV, TSV or Parquet file"
        )
    return config["data"]["table"]


def eval_dataset_root():
    return config["eval"].get("dataset_root") or FASHION_MNIST_EVAL


def geco_model_input(kind):
    """The configured GeCo model as an input, when it is a locally built tiny stand-in."""
    model = config["geco"][kind]["model"]
    return [model] if model in (TINY_LM, TINY_EDITOR) else []


def shots_label(shots):
    return "full" if shots is None else str(shots)


def eval_outputs():
    dataset = config["eval"]["dataset"]
    outputs = [f"results/evaluate/{dataset}_zeroshot_classification.json"]
    outputs += [
        f"results/evaluate/{dataset}_linear_probe_{shots_label(s)}shot.json"
        for s in config["eval"]["shots"]
    ]
    return outputs


def start_workflow_run():
    run_id = tulip_workflow.start_workflow_run(
        TRACKING_URI, config["tracking"]["experiment"], config, workflow.basedir, LOCAL_TRACKING_STORE
    )
    print(f"MLflow: workflow run {run_id} in {TRACKING_URI}", file=sys.stderr)


def finish_workflow_run(status):
    tulip_workflow.finish_workflow_run(TRACKING_URI, status)
