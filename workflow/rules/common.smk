# Helpers shared by the stage modules: config validation, per-stage params and MLflow set-up.
# Functions only; each stage module holds that stage's rules.

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

SRC_DIR = Path(workflow.basedir).parent / "src"
if str(SRC_DIR) not in sys.path:
    sys.path.insert(0, str(SRC_DIR))

from tulip.cli import workflow as tulip_workflow
from tulip.eval import registry as eval_registry
from tulip.tracking import ablation as ablation_tracking
from tulip.tracking import redact as tulip_redact
from tulip.train import ablation as ablation_plan

# Library code each stage runs. Editing any of these files reruns the stage, through the
# `code` param of its rules.
STAGE_CODE = {
    "prepare": ["tulip/data/fashion_mnist.py", "tulip/data/io.py", "tulip/data/templates", "tulip/cli/data.py"],
    "download": [
        "tulip/data/download.py",
        "tulip/data/fetch.py",
        "tulip/data/images.py",
        "tulip/data/captions.py",
        "tulip/data/table.py",
        "tulip/data/shards.py",
        "tulip/data/stats.py",
        "tulip/data/io.py",
        "tulip/cli/data.py",
    ],
    "geco_models": ["tulip/geco/tiny_models.py", "tulip/geco/prompts.py", "tulip/data/reader.py", "tulip/cli/geco.py"],
    "edit_pairs": ["tulip/data/fashion_mnist.py", "tulip/data/io.py", "tulip/data/templates", "tulip/cli/geco.py"],
    "soft_prompts": [
        "tulip/geco/soft_prompts.py",
        "tulip/geco/image_views.py",
        "tulip/geco/seeding.py",
        "tulip/data/reader.py",
        "tulip/tracking",
        "tulip/cli/geco.py",
    ],
    "augment": ["tulip/geco", "tulip/data/reader.py", "tulip/data/shards.py", "tulip/data/io.py", "tulip/cli/geco.py"],
    "shard": ["tulip/data/views.py", "tulip/data/reader.py", "tulip/data/shards.py", "tulip/data/io.py", "tulip/cli/data.py"],
    "pretrain": [
        "tulip/models",
        "tulip/losses",
        "tulip/train",
        "tulip/data/loader.py",
        "tulip/data/sampling.py",
        "tulip/data/captions.py",
        "tulip/data/preflight.py",
        "tulip/data/reader.py",
        "tulip/data/crops.py",
        "tulip/data/stats.py",
        "tulip/data/shards.py",
        "tulip/distributed.py",
        "tulip/cli/train.py",
    ],
    "vision_probe": [
        "tulip/eval/vision_probe.py",
        "tulip/eval/datasets/mmvp.py",
        "tulip/data/fashion_mnist.py",
        "tulip/data/io.py",
        "tulip/cli/evaluate.py",
    ],
    "eval_features": [
        "tulip/models",
        "tulip/eval/datasets",
        "tulip/eval/data",
        "tulip/eval/features.py",
        "tulip/eval/models.py",
        "tulip/eval/registry.py",
        "tulip/cli/evaluate.py",
    ],
    # Everything in tulip/eval except the summary, its plots and the probe builder.
    "eval_task": [
        "tulip/models",
        "tulip/eval/datasets",
        "tulip/eval/data",
        "tulip/eval/templates",
        "tulip/eval/features.py",
        "tulip/eval/models.py",
        "tulip/eval/registry.py",
        "tulip/eval/tasks.py",
        "tulip/eval/zeroshot.py",
        "tulip/eval/linear_probe.py",
        "tulip/eval/logistic_solver.py",
        "tulip/eval/retrieval.py",
        "tulip/eval/winoground.py",
        "tulip/eval/mmvp.py",
        "tulip/cli/evaluate.py",
    ],
    "evaluate": [
        "tulip/eval/summary.py",
        "tulip/eval/plots.py",
        "tulip/eval/registry.py",
        "tulip/tracking",
        "tulip/cli/evaluate.py",
    ],
    "report": ["tulip/report", "tulip/eval/summary.py", "tulip/eval/registry.py", "tulip/cli/report.py"],
    "ablation_track": ["tulip/tracking", "tulip/eval/summary.py", "tulip/eval/registry.py", "tulip/cli/ablation.py"],
    "ablation_report": [
        "tulip/report",
        "tulip/tracking",
        "tulip/eval/summary.py",
        "tulip/eval/registry.py",
        "tulip/cli/ablation.py",
    ],
}

TINY_LM = "resources/geco/tiny-lm"
TINY_EDITOR = "resources/geco/tiny-instruct-pix2pix"
SOFT_PROMPTS = "resources/geco/soft_prompts.pt"
EDIT_PAIRS_TABLE = "resources/soft_prompts/fashion_mnist/edit_pairs.tsv"
# Columns of a soft-prompt pairs table: the two images of a pair, "positive" or "negative", and
# the edit instruction (the caption of the downloaded samples).
EDIT_PAIRS_COLUMNS = {"caption_column": "instruction", "recaption_column": None, "meta_columns": ["kind"]}
FASHION_MNIST_PAIRS = "resources/fashion_mnist/pairs.tsv"
FASHION_MNIST_EVAL = "resources/eval/fashion_mnist"
VISION_PROBE = "resources/eval/vision_probe"
PRETRAINED_MODEL = "tulip"  # name of the pretrained checkpoint in evaluation outputs
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")

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


def machine_cores():
    """The --cores of a local run; 1 under a cluster executor, whose profile sets threads per rule."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def multi_node():
    return config["launch"]["nodes"] > 1


def pretrain_launch_resources():
    """SLURM geometry of the pretrain job: one task per node when it spans several nodes.

    The `mpi` resource makes the SLURM job step run the rule's shell directly on the first node
    instead of under `srun -n1`; the shell's own `srun` then starts one torchrun agent per node.
    `tasks_per_gpu=0` stops `tasks` from turning into `--ntasks-per-gpu` on GPU partitions.
    """
    nodes = config["launch"]["nodes"]
    if nodes == 1:
        return {}
    return {"mpi": "srun", "nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0}


def torchrun_launcher():
    """The command that starts the training processes, ending where `-m tulip pretrain` follows."""
    if not multi_node():
        return "torchrun --standalone --nproc-per-node {resources.nproc_per_node}"
    # The rendezvous host is the first node of the allocation, by its address (NodeAddr), which
    # is its hostname on most clusters and 127.0.0.1 for nodes simulated on one machine. The
    # node list comes from squeue: the plugin's job step passes on SLURM_JOB_ID but not
    # SLURM_JOB_NODELIST.
    first_node = "$(scontrol show hostnames \"$(squeue -h -j $SLURM_JOB_ID -o %N)\" | head -n 1)"
    address = f"$(scontrol show node {first_node} | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')"
    port = f"$(({config['launch']['rendezvous_port']} + SLURM_JOB_ID % 1000))"
    return (
        "{resources.mpi} --nodes {resources.nodes} --ntasks {resources.tasks} --ntasks-per-node 1 "
        "--cpus-per-task {threads} --kill-on-bad-exit=1 "
        "torchrun --nnodes {resources.nodes} --nproc-per-node {resources.nproc_per_node} "
        f"--rdzv-backend c10d --rdzv-endpoint {address}:{port} --rdzv-id $SLURM_JOB_ID"
    )


def pairs_tables():
    """The tables the download stage reads: the exported Fashion-MNIST pairs, or data.table (one path or a list)."""
    if config["data"]["source"] == "fashion_mnist":
        return [FASHION_MNIST_PAIRS]
    tables = config["data"].get("table")
    if not tables:
        raise ValueError(
            "data.source is 'table' but data.table is not set; give the path of a CSV, TSV or Parquet file, "
            "or a list of them"
        )
    return [tables] if isinstance(tables, str) else list(tables)


def geco_model_input(kind):
    """The configured GeCo model as an input, when it is a locally built tiny stand-in."""
    model = config["geco"][kind]["model"]
    return [model] if model in (TINY_LM, TINY_EDITOR) else []


def editor_model(wildcards):
    """geco.image.model: a hub id or a folder, passed as a name (a built tiny editor is also an input)."""
    return config["geco"]["image"]["model"]


def download_shards():
    """Names of the downloaded shards, one GeCo job each; known from the config and tables before the download runs."""
    data = config["data"]
    if data["source"] == "fashion_mnist":
        return tulip_workflow.download_shard_names(None, data["fashion_mnist"]["num_samples"], data["download"])
    return tulip_workflow.download_shard_names(pairs_tables(), None, data["download"])


def augment_outputs(kind, suffix=".jsonl"):
    """The per-shard files of one kind of view ("text" or "images"): views, or counts with suffix ".stats.json"."""
    return [f"results/augment/{kind}/{shard}{suffix}" for shard in download_shards()]


def augment_stats_inputs(wildcards):
    return augment_outputs(wildcards.kind, ".stats.json")


def edit_pairs_tables():
    """Soft-prompt pairs tables: geco.soft_prompts.table (one path or a list), else the Fashion-MNIST export."""
    tables = config["geco"]["soft_prompts"].get("table")
    if not tables:
        return [EDIT_PAIRS_TABLE]
    return [tables] if isinstance(tables, str) else list(tables)


def edit_pairs_download_config(wildcards):
    """data.download with the pairs table's columns: the image column is the pair side being downloaded."""
    section = {**config["data"]["download"], **EDIT_PAIRS_COLUMNS, "url_column": wildcards.side}
    return tulip_workflow.canonical_json(section)


def soft_prompts_file():
    """The E_p/E_n file the image editor loads: learned by the workflow, given, or none (instruction sentences)."""
    value = config["geco"]["image"].get("soft_prompts")
    if value == "learned":
        return [SOFT_PROMPTS]
    return [value] if value else []


def soft_prompts_argument(wildcards, input):
    return f"--soft-prompts {input.soft_prompts}" if input.soft_prompts else ""


def eval_models():
    """Every model to evaluate, by name: the pretrained checkpoint and the models in eval.models."""
    models = {PRETRAINED_MODEL: {"name": PRETRAINED_MODEL, "type": "tulip", "weights": rules.pretrain.output.weights}}
    for entry in config["eval"]["models"]:
        if entry["name"] in models:
            raise ValueError(f"eval.models: the name {entry['name']!r} is taken; choose another")
        models[entry["name"]] = {"type": "open_clip", **entry}
    return models


def eval_datasets():
    """Dataset entries of eval.datasets that have a root, by name."""
    return {name: entry for name, entry in config["eval"]["datasets"].items() if entry.get("root")}


def eval_results():
    """Every result JSON the evaluation writes: one per (model, dataset, task)."""
    shots = config["eval"]["linear_probe"]["shots"]
    results = [
        f"results/evaluate/{model}/{name}/{task}.json"
        for model in eval_models()
        for name, entry in eval_datasets().items()
        for task in eval_registry.task_outputs(entry, shots)
    ]
    if not results:
        raise ValueError("no dataset under eval.datasets has a root; set the root of at least one")
    return results


def _eval_entry(wildcards):
    entries = eval_datasets()
    if wildcards.dataset not in entries:
        raise ValueError(f"dataset {wildcards.dataset!r} is not in eval.datasets or has no root")
    return entries[wildcards.dataset]


def _eval_model(wildcards):
    models = {**eval_models(), **ablation_eval_models()}
    if wildcards.model not in models:
        raise ValueError(
            f"model {wildcards.model!r} is neither {PRETRAINED_MODEL!r}, nor in eval.models, nor a run of the ablation"
        )
    return models[wildcards.model]


def _eval_settings(*keys):
    """Shared eval keys a job depends on; "seed" only where it changes the result."""
    return {key: config["eval"][key] for key in ("batch_size", "workers", "precision", *keys)}


def eval_model_json(wildcards):
    return tulip_workflow.canonical_json(_eval_model(wildcards))


def eval_dataset_json(wildcards):
    """The dataset entry without its task list, so adding a task does not rerun the others."""
    entry = {k: v for k, v in _eval_entry(wildcards).items() if k != "tasks"}
    return tulip_workflow.canonical_json(entry)


def eval_features_json(wildcards):
    """Feature settings; the training pool also needs the images per class the probes use and the seed."""
    if wildcards.role == "test":
        return tulip_workflow.canonical_json(_eval_settings())
    probe = config["eval"]["linear_probe"]
    per_class = eval_registry.probe_pool_per_class(probe["shots"], probe["val_per_class"], probe["trials"])
    return tulip_workflow.canonical_json({**_eval_settings("seed"), "per_class": per_class})


def eval_task_json(wildcards):
    """Settings of one task: the shared keys plus the task's own section (a probe's without the shot list)."""
    task, _ = eval_registry.parse_task_name(wildcards.task)
    section = dict(config["eval"].get(task, {}))
    section.pop("shots", None)
    shared = _eval_settings("seed") if task == eval_registry.LINEAR_PROBE else _eval_settings()
    return tulip_workflow.canonical_json({**shared, task: section})


def _model_inputs(wildcards):
    weights = _eval_model(wildcards).get("weights")
    is_file = weights and (weights.endswith(WEIGHT_SUFFIXES) or Path(weights).exists())
    return {"weights": weights} if is_file else {}


def eval_dataset_index(wildcards):
    """The file (or folder) whose presence marks the dataset as ready; built datasets name their rule's output."""
    entry = _eval_entry(wildcards)
    return str(Path(entry["root"]) / eval_registry.reader_info(entry["reader"]).index)


def eval_features_inputs(wildcards):
    return {**_model_inputs(wildcards), "dataset": eval_dataset_index(wildcards)}


def eval_classification_inputs(wildcards):
    """Cached features (the test split, plus the training pool for probes) and, for zero-shot, the model."""
    folder = f"results/evaluate/{wildcards.model}/{wildcards.dataset}/features"
    task, _ = eval_registry.parse_task_name(wildcards.task)
    if task == eval_registry.LINEAR_PROBE:
        return {"features": [f"{folder}/test.pt", f"{folder}/train.pt"]}
    return {**_model_inputs(wildcards), "features": [f"{folder}/test.pt"]}


def eval_matching_inputs(wildcards):
    return {**_model_inputs(wildcards), "dataset": eval_dataset_index(wildcards)}


def start_workflow_run():
    # The ladder's runs nest under a workflow run of their own experiment, deleted at the end if empty.
    run_id = tulip_workflow.start_workflow_run(
        TRACKING_URI, config["tracking"]["experiment"], config, workflow.basedir, LOCAL_TRACKING_STORE,
        other_experiments=[ABLATION_EXPERIMENT] if ABLATION else [],
    )
    print(f"MLflow: workflow run {run_id} in {tulip_redact.redact(TRACKING_URI)}", file=sys.stderr)


def finish_workflow_run(status):
    tulip_workflow.finish_workflow_run(TRACKING_URI, status)


# ----------------------------------------------------------------------------- ablation ladder
# Each (variant, seed) trains into results/ablation/<slug>/seed<seed>/ and is evaluated as the
# model "ablation-<slug>-seed<seed>" by the evaluation rules, with the settings every model gets.

ABLATION = config.get("ablation")
ABLATION_RUNS = ablation_plan.ladder_runs(config["train"], ABLATION) if ABLATION else []
ABLATION_EXPERIMENT = (ABLATION or {}).get("experiment") or f"{config['tracking']['experiment']}-ablation"


def _ablation_run(wildcards):
    for run in ABLATION_RUNS:
        if run.slug == wildcards.variant and run.seed == int(wildcards.seed):
            return run
    raise ValueError(
        f"no ablation run for variant {wildcards.variant!r} and seed {wildcards.seed}; "
        f"the ladder has {sorted({(r.slug, r.seed) for r in ABLATION_RUNS})}"
    )


def _ablation_folder(run):
    return f"results/ablation/{run.slug}/seed{run.seed}"


def ablation_eval_models():
    """The ladder's checkpoints as evaluation models, by name."""
    return {
        run.model_name: {"name": run.model_name, "type": "tulip", "weights": f"{_ablation_folder(run)}/model.pt"}
        for run in ABLATION_RUNS
    }


def _ablation_eval_results(run):
    shots = config["eval"]["linear_probe"]["shots"]
    return [
        f"results/evaluate/{run.model_name}/{name}/{task}.json"
        for name, entry in eval_datasets().items()
        for task in eval_registry.task_outputs(entry, shots)
    ]


def ablation_eval_inputs(wildcards):
    return _ablation_eval_results(_ablation_run(wildcards))


def ablation_train_json(wildcards):
    """The resolved train section of one (variant, seed)."""
    return tulip_workflow.canonical_json(_ablation_run(wildcards).train)


def ablation_run_name(wildcards):
    run = _ablation_run(wildcards)
    return f"{run.variant} seed {run.seed}"


def ablation_tags_json(wildcards):
    """Tags of the run's MLflow run; git_commit and slurm.job_id are added by the job itself."""
    run = _ablation_run(wildcards)
    tags = ablation_tracking.ladder_tags(
        run.variant,
        run.slug,
        run.seed,
        tulip_workflow.config_hash(run.train),
        "ablation_pretrain",
        {"variant": wildcards.variant, "seed": wildcards.seed},
    )
    return tulip_workflow.canonical_json(tags)


def ablation_target(wildcards):
    """The ladder report's files; a config without an ablation section stops the `ablation` target here."""
    if not ABLATION_RUNS:
        raise ValueError("the config has no ablation section; add ablation.variants and ablation.seeds")
    return list(rules.ablation_report.output)


def ablation_outputs(name):
    """One output of every ladder run: "model.pt", "metrics.jsonl", "summary.json" or "tracked.json"."""
    return [f"{_ablation_folder(run)}/{name}" for run in ABLATION_RUNS]


def ablation_all_eval_results():
    return [path for run in ABLATION_RUNS for path in _ablation_eval_results(run)]


def ablation_plan_json():
    """The ladder for the report: each variant's name, slug, overrides, seeds and resolved train section."""
    if not ABLATION:
        return "{}"
    return tulip_workflow.canonical_json({"variants": ablation_plan.ladder_plan(config["train"], ABLATION)})


def ablation_runs_json():
    """Each ladder run's files for the report."""
    runs = [
        {
            "variant": run.variant,
            "seed": run.seed,
            "metrics": f"{_ablation_folder(run)}/metrics.jsonl",
            "summary": f"{_ablation_folder(run)}/summary.json",
            "eval": _ablation_eval_results(run),
        }
        for run in ABLATION_RUNS
    ]
    return tulip_workflow.canonical_json({"runs": runs})


def ablation_context_json():
    """What the report states about the generated views: their generators and the share of samples they cover."""
    geco = config["geco"]
    return tulip_workflow.canonical_json(
        {
            "geco_text_model": geco["text"]["model"],
            "geco_image_model": geco["image"]["model"],
            "geco_text_fraction": geco["text"]["fraction"],
            "geco_image_fraction": geco["image"]["fraction"],
        }
    )
