"""Zero-shot classification: class prototypes from prompt-template ensembles, scored by cosine similarity.

Metric names and definitions follow CLIP_benchmark (``acc1``, ``acc5``, ``mean_per_class_recall``),
so results are comparable with its tables; ties between classes go to the lower class index.
"""

from __future__ import annotations

import logging
from collections import Counter
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from tulip.eval.features import text_features

logger = logging.getLogger(__name__)


def load_templates(name_or_path: str) -> list[str]:
    """Read a template set: a file shipped in ``tulip/eval/templates`` by stem, or a path to a text file.

    One template per line with ``{}`` where the class name goes; lines starting with ``#`` are comments.
    """
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        shipped = resources.files("tulip.eval") / "templates" / f"{name_or_path}.txt"
        if not shipped.is_file():
            available = sorted(Path(str(p)).stem for p in (resources.files("tulip.eval") / "templates").iterdir())
            raise FileNotFoundError(
                f"template set {name_or_path!r} is neither a file nor a shipped set; shipped sets: {available}"
            )
        text = shipped.read_text(encoding="utf-8")
    templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates must contain exactly one '{{}}' for the class name: {bad}")
    if not templates:
        raise ValueError(f"template set {name_or_path!r} contains no templates")
    return templates


def class_prototypes(
    model, tokenizer, classnames: list[str], templates: list[str], device="cpu", precision: str = "fp32",
    batch_size: int = 256,
) -> torch.Tensor:
    """Return normalised class embeddings [C, D]: the mean of each class's normalised template embeddings."""
    prompts = [template.format(name) for name in classnames for template in templates]
    features = text_features(model, tokenizer, prompts, batch_size, device, precision)  # [C * T, D]
    features = features.view(len(classnames), len(templates), -1).mean(dim=1)  # [C, D]
    return F.normalize(features, dim=-1)


def rank_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Return the indices [N, k] of the k highest logits per row; equal logits rank the lower class first."""
    # A stable descending sort keeps equal logits in index order, on every backend.
    return torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]


def per_class_recall(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Return each class's top-1 recall, or None for a class with no examples."""
    correct = rank_classes(logits, 1)[:, 0] == labels  # [N]
    totals = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels[correct], minlength=num_classes)
    return [(hits[c] / totals[c]).item() if totals[c] > 0 else None for c in range(num_classes)]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 and top-5 accuracy and mean per-class recall for logits [N, C] and labels [N].

    As in CLIP_benchmark, ``acc5`` is reported only with at least 5 classes, and the mean per-class
    recall averages over the classes that have examples (scikit-learn's balanced accuracy).
    """
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} columns but there are {num_classes} classes")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min().item()}, {labels.max().item()}]")
    k = min(5, num_classes)
    ranked = rank_classes(logits, k)  # [N, k]
    metrics = {"acc1": (ranked[:, 0] == labels).float().mean().item()}
    if num_classes >= 5:
        metrics["acc5"] = (ranked == labels[:, None]).any(dim=1).float().mean().item()
    recalls = [r for r in per_class_recall(logits, labels, num_classes) if r is not None]
    metrics["mean_per_class_recall"] = sum(recalls) / len(recalls)
    return metrics


def check_class_mapping(classnames: list[str], labels: torch.Tensor) -> dict:
    """Check that labels index into ``classnames`` and describe the mapping for the result file.

    Raises ``ValueError`` for a label outside the class list. Returns the number of classes, how many
    have examples, and the names that occur more than once (their prototypes coincide, so they tie).
    """
    num_classes = len(classnames)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels span [{labels.min().item()}, {labels.max().item()}] but there are {num_classes} class names; "
            "the class list does not match the dataset"
        )
    duplicates = sorted(name for name, count in Counter(classnames).items() if count > 1)
    if duplicates:
        logger.warning("class names occurring more than once tie in zero-shot scoring: %s", duplicates)
    return {
        "num_classes": num_classes,
        "classes_with_examples": int((torch.bincount(labels, minlength=num_classes) > 0).sum()),
        "duplicate_classnames": duplicates,
    }


def zeroshot_classify(image_feats: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> dict[str, float]:
    """Score normalised image features [N, D] against class prototypes [C, D]."""
    return classification_metrics(image_feats @ prototypes.T, labels, prototypes.shape[0])
