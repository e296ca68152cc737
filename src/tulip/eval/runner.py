"""Evaluate one checkpoint on a class-folder dataset: zero-shot classification and few-shot linear probes.

Each task's result is written as JSON in CLIP_benchmark's shape (``dataset``, ``model``,
``pretrained``, ``task``, ``metrics``) so that ``clip_benchmark build`` can tabulate it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tulip.data.io import atomic_write_json
from tulip.eval.datasets import ClassFolderDataset
from tulip.eval.features import image_features
from tulip.eval.linear_probe import few_shot_probe
from tulip.eval.zeroshot import class_prototypes, zeroshot_classify
from tulip.models import create_model_from_checkpoint, get_tokenizer
from tulip.models.transforms import image_transform

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    dataset: str = "fashion_mnist"
    templates: str = "fashion_mnist"  # a template set shipped in tulip/eval/templates, or a path to a text file
    shots: list[int | None] = field(default_factory=lambda: [1, 10])  # None fits on the whole training pool
    weight_decays: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    val_per_class: int = 10
    batch_size: int = 256
    seed: int = 0


def load_templates(name_or_path: str) -> list[str]:
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        shipped = resources.files("tulip.eval") / "templates" / f"{name_or_path}.txt"
        if not shipped.is_file():
            raise FileNotFoundError(f"template set {name_or_path!r} is neither a file nor a shipped template set")
        text = shipped.read_text()
    templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates must contain exactly one '{{}}' for the class name: {bad}")
    return templates


def _result(cfg: EvalConfig, model_name: str, weights: Path, task: str, metrics: dict, **extra) -> dict:
    return {"dataset": cfg.dataset, "model": model_name, "pretrained": str(weights), "task": task,
            "language": "en", "metrics": metrics, **extra}


def evaluate_checkpoint(weights: str | Path, dataset_root: str | Path, out_dir: str | Path, cfg: EvalConfig) -> list[dict]:
    """Run zero-shot and every configured few-shot probe; write one JSON per task and return the results."""
    weights, out_dir = Path(weights), Path(out_dir)
    model = create_model_from_checkpoint(weights)
    model_name = model.cfg.name
    tokenizer = get_tokenizer(model.cfg)
    transform = image_transform(model.cfg, train=False)
    test = ClassFolderDataset(dataset_root, "test", transform)
    pool = ClassFolderDataset(dataset_root, "train", transform)
    test_feats, test_labels = image_features(model, test, cfg.batch_size)
    pool_feats, pool_labels = image_features(model, pool, cfg.batch_size)
    num_classes = len(test.classnames)

    templates = load_templates(cfg.templates)
    prototypes = class_prototypes(model, tokenizer, test.classnames, templates)
    results = [
        _result(cfg, model_name, weights, "zeroshot_classification",
                zeroshot_classify(test_feats, test_labels, prototypes),
                classnames=test.classnames, templates=templates, num_test=len(test))
    ]
    for shots in cfg.shots:
        probe = few_shot_probe(
            pool_feats, pool_labels, test_feats, test_labels, num_classes, shots,
            cfg.weight_decays, cfg.val_per_class, cfg.seed,
        )
        results.append(
            _result(cfg, model_name, weights, "linear_probe", probe.metrics,
                    shots=shots if shots is not None else "full", weight_decay=probe.weight_decay,
                    fitted_per_class=probe.fitted_per_class, validation_acc1=probe.validation_acc1,
                    num_test=len(test))
        )
    for result in results:
        suffix = "" if result["task"] != "linear_probe" else f"_{result['shots']}shot"
        atomic_write_json(out_dir / f"{cfg.dataset}_{result['task']}{suffix}.json", result)
        logger.info("%s %s%s: %s", cfg.dataset, result["task"], suffix, result["metrics"])
    return results
