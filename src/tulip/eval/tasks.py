"""Evaluation tasks, one function each, returning a result record.

Records have CLIP_benchmark's result shape (``dataset``, ``model``, ``pretrained``, ``task``,
``language``, ``metrics``), so ``clip_benchmark build`` can tabulate them, plus task details such
as class names, templates or the probe's chosen penalty.
"""

from __future__ import annotations

import logging

import torch

from tulip.eval import registry
from tulip.eval.datasets import open_dataset
from tulip.eval.features import EvalSettings, image_features, pair_features, text_features
from tulip.eval.linear_probe import ProbeConfig, few_shot_probe
from tulip.eval.mmvp import mmvp_scores
from tulip.eval.models import EvalModel
from tulip.eval.retrieval import retrieval_metrics
from tulip.eval.winoground import winoground_scores
from tulip.eval.zeroshot import (
    check_class_mapping,
    class_prototypes,
    classification_metrics,
    load_templates,
    per_class_recall,
)

logger = logging.getLogger(__name__)


def result_record(dataset: str, model_name: str, pretrained: str, task: str, metrics: dict, **details) -> dict:
    return {"dataset": dataset, "model": model_name, "pretrained": pretrained, "task": task, "language": "en",
            "metrics": metrics, **details}


def zeroshot_classification(model: EvalModel, features: dict[str, dict], entry: dict, settings: EvalSettings) -> dict:
    """Score the cached test features against prompt-ensemble prototypes. ``features`` maps a role to its payload."""
    test = features["test"]
    classnames = test["classnames"]
    mapping = check_class_mapping(classnames, test["labels"])
    templates = load_templates(entry.get("templates") or "clip_imagenet")
    prototypes = class_prototypes(model.model, model.tokenizer, classnames, templates, settings.device,
                                  settings.precision, settings.batch_size)  # [C, D]
    logits = test["features"] @ prototypes.T  # [N, C]
    metrics = classification_metrics(logits, test["labels"], len(classnames))
    recalls = per_class_recall(logits, test["labels"], len(classnames))
    return result_record(
        test["dataset"], test["model"], test["pretrained"], registry.ZEROSHOT_CLASSIFICATION, metrics,
        classnames=classnames, class_ids=test["class_ids"], templates=templates, class_mapping=mapping,
        per_class_recall={name: r for name, r in zip(classnames, recalls)}, num_test=len(test["labels"]),
        split=test["split"],
    )


def linear_probe(features: dict[str, dict], shots: int | str, cfg: ProbeConfig, device: str | torch.device = "cpu") -> dict:
    """Fit and test the probe on ``device``. A GPU pays off for many classes or the full training pool.

    NOTE: the probe has only run on CPU so far, so the CUDA path is untested.
    """
    missing = {"train", "test"} - set(features)
    if missing:
        raise ValueError(f"a linear probe needs the features of both splits; missing {sorted(missing)}")
    train, test = features["train"], features["test"]
    probe = few_shot_probe(train["features"].to(device), train["labels"].to(device), test["features"].to(device),
                           test["labels"].to(device), shots, cfg)
    counts = list(probe.fitted_per_class.values())
    logger.info("%s linear probe (%s shots, %s): %s; fitted %d to %d examples per class over %d classes",
                test["dataset"], shots, cfg.solver, probe.metrics, min(counts), max(counts), len(counts))
    names = test["classnames"]
    return result_record(
        test["dataset"], test["model"], test["pretrained"], registry.LINEAR_PROBE, probe.metrics,
        shots=shots, solver=cfg.solver, trials=len(probe.trial_metrics), val_per_class=cfg.val_per_class,
        penalty=probe.penalty, penalty_name="weight_decay" if cfg.solver == "logistic" else "ridge_penalty",
        validation_acc1=probe.validation_acc1, trial_metrics=probe.trial_metrics,
        fitted_per_class={names[c]: n for c, n in probe.fitted_per_class.items()},
        classnames=names, num_test=len(test["labels"]), split=test["split"], train_split=train["split"],
    )


def zeroshot_retrieval(model: EvalModel, dataset: str, entry: dict, recall_k: list[int], settings: EvalSettings) -> dict:
    data = open_dataset(entry, "test", model.transform)
    images = _ImagesOnly(data)
    image_feats, _ = image_features(model.model, images, settings.batch_size, settings.device, settings.workers,
                                    settings.precision)
    caption_feats = text_features(model.model, model.tokenizer, data.captions, settings.batch_size, settings.device,
                                  settings.precision)
    metrics = retrieval_metrics(image_feats, caption_feats, torch.tensor(data.caption_image), recall_k)
    return result_record(dataset, model.name, model.pretrained, registry.ZEROSHOT_RETRIEVAL, metrics,
                         num_images=len(data), num_captions=len(data.captions), split=registry.dataset_split(entry, "test"))


def image_caption_selection(model: EvalModel, dataset: str, entry: dict, settings: EvalSettings) -> dict:
    data = open_dataset(entry, "test", model.transform)
    image_feats, text_feats = pair_features(model.model, model.tokenizer, data, settings.batch_size, settings.device,
                                            settings.workers, settings.precision)
    metrics = winoground_scores(image_feats, text_feats, data.tags)
    return result_record(dataset, model.name, model.pretrained, registry.IMAGE_CAPTION_SELECTION, metrics,
                         num_examples=len(data))


def mmvp_vlm(model: EvalModel, dataset: str, entry: dict, prompt_prefix: str, settings: EvalSettings) -> dict:
    data = open_dataset(entry, "test", model.transform)
    image_feats, text_feats = pair_features(model.model, model.tokenizer, data, settings.batch_size, settings.device,
                                            settings.workers, settings.precision, text_prefix=prompt_prefix)
    metrics = mmvp_scores(image_feats, text_feats, data.categories)
    counts = {c: data.categories.count(c) for c in sorted(set(data.categories))}
    return result_record(dataset, model.name, model.pretrained, registry.MMVP_VLM, metrics, num_pairs=len(data),
                         pairs_per_category=counts, prompt_prefix=prompt_prefix)


class _ImagesOnly(torch.utils.data.Dataset):
    """Images of a retrieval set with their index as the label, so captions are not collated."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index][0], index
