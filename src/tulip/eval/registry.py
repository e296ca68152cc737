"""Registry of evaluation dataset readers: layout, default tasks and splits, without importing torch.

The workflow imports this module while it builds the DAG, so it must stay light: the reader
classes themselves live in ``tulip.eval.datasets`` and are imported only when a job opens a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ZEROSHOT_CLASSIFICATION = "zeroshot_classification"
LINEAR_PROBE = "linear_probe"
ZEROSHOT_RETRIEVAL = "zeroshot_retrieval"
IMAGE_CAPTION_SELECTION = "image_caption_selection"  # CLIP_benchmark's task name for Winoground
MMVP_VLM = "mmvp_vlm"

TASKS = (ZEROSHOT_CLASSIFICATION, LINEAR_PROBE, ZEROSHOT_RETRIEVAL, IMAGE_CAPTION_SELECTION, MMVP_VLM)
# Tasks that score cached image features of a classification dataset.
FEATURE_TASKS = (ZEROSHOT_CLASSIFICATION, LINEAR_PROBE)


@dataclass(frozen=True)
class ReaderInfo:
    """Facts about a reader that the workflow needs before any job runs."""

    name: str
    kind: str  # "classification", "retrieval", "caption_selection" or "statement_pairs"
    tasks: tuple[str, ...]  # tasks run when a dataset entry lists none
    index: str  # file or folder under the root that exists once the dataset is in place (a Snakemake input)
    splits: dict[str, str] = field(default_factory=dict)  # default split per role: "train", "test"


READERS: dict[str, ReaderInfo] = {
    info.name: info
    for info in (
        ReaderInfo("class_folder", "classification", (ZEROSHOT_CLASSIFICATION, LINEAR_PROBE), "classnames.txt",
                   {"train": "train", "test": "test"}),
        ReaderInfo("imagenet", "classification", (ZEROSHOT_CLASSIFICATION, LINEAR_PROBE), "val",
                   {"train": "train", "test": "val"}),
        ReaderInfo("rxrx1", "classification", (LINEAR_PROBE,), "rxrx1_v1.0/metadata.csv",
                   {"train": "train", "test": "test"}),
        ReaderInfo("mmvp_vlm", "statement_pairs", (MMVP_VLM,), "Questions.csv"),
        ReaderInfo("winoground", "caption_selection", (IMAGE_CAPTION_SELECTION,), "data/examples.jsonl"),
        ReaderInfo("coco_karpathy", "retrieval", (ZEROSHOT_RETRIEVAL,), "dataset_coco.json", {"test": "test"}),
        ReaderInfo("flickr30k_karpathy", "retrieval", (ZEROSHOT_RETRIEVAL,), "dataset_flickr30k.json",
                   {"test": "test"}),
    )
}

# Tasks each kind of reader can run: a classification dataset has no captions to retrieve, and so on.
_TASKS_BY_KIND = {
    "classification": {ZEROSHOT_CLASSIFICATION, LINEAR_PROBE},
    "retrieval": {ZEROSHOT_RETRIEVAL},
    "caption_selection": {IMAGE_CAPTION_SELECTION},
    "statement_pairs": {MMVP_VLM},
}


def reader_info(name: str) -> ReaderInfo:
    if name not in READERS:
        raise ValueError(f"unknown dataset reader {name!r}; available readers: {', '.join(sorted(READERS))}")
    return READERS[name]


def dataset_tasks(entry: dict) -> list[str]:
    """Return the tasks to run for a dataset config entry, checking that its reader supports each one."""
    info = reader_info(entry["reader"])
    tasks = list(entry.get("tasks") or info.tasks)
    unsupported = [t for t in tasks if t not in _TASKS_BY_KIND[info.kind]]
    if unsupported:
        raise ValueError(
            f"reader {info.name!r} cannot run task(s) {unsupported}; it supports {sorted(_TASKS_BY_KIND[info.kind])}"
        )
    return tasks


def dataset_split(entry: dict, role: str) -> str:
    """Return the split a dataset entry uses for ``role`` ("train" or "test"), from the entry or the reader default."""
    info = reader_info(entry["reader"])
    key = f"{role}_split"
    if entry.get(key):
        return entry[key]
    if role not in info.splits:
        raise ValueError(f"reader {info.name!r} has no {role} split")
    return info.splits[role]


def shots_label(shots: int | str) -> str:
    """Return the file-name label of a shot count: ``10shot`` for 10, ``full`` for the whole training pool."""
    if shots == "full":
        return "full"
    if isinstance(shots, int) and not isinstance(shots, bool) and shots >= 1:
        return f"{shots}shot"
    raise ValueError(f"invalid shot count {shots!r}; use a positive integer or 'full'")


def probe_pool_per_class(shots: list[int | str], val_per_class: int, trials: int) -> int | None:
    """Return how many training images per class the linear probes can use, or None when they need all of them.

    Each trial draws its k shots from the images left after the validation split, so the pool needs
    ``val_per_class + max(shots) * trials`` images per class.
    """
    if "full" in shots:
        return None
    return val_per_class + max(shots) * trials


def task_outputs(entry: dict, linear_probe_shots: list[int | str]) -> list[str]:
    """Return the result names of a dataset entry, one per task (one per shot count for linear probes)."""
    names = []
    for task in dataset_tasks(entry):
        if task == LINEAR_PROBE:
            names += [f"{LINEAR_PROBE}_{shots_label(s)}" for s in linear_probe_shots]
        else:
            names.append(task)
    return names


def parse_task_name(name: str) -> tuple[str, int | str | None]:
    """Split a result name into (task, shots): ``linear_probe_10shot`` -> ("linear_probe", 10)."""
    if name.startswith(LINEAR_PROBE + "_"):
        label = name.removeprefix(LINEAR_PROBE + "_")
        if label == "full":
            return LINEAR_PROBE, "full"
        if label.endswith("shot") and label[: -len("shot")].isdigit():
            return LINEAR_PROBE, int(label[: -len("shot")])
    if name in TASKS and name != LINEAR_PROBE:
        return name, None
    raise ValueError(f"unknown task result name {name!r}; expected one of {TASKS} or linear_probe_<k>shot / _full")
