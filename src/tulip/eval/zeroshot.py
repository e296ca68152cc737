"""Zero-shot classification: class prototypes from prompt-template ensembles, scored by cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tulip.eval.features import text_features


def class_prototypes(model, tokenizer, classnames: list[str], templates: list[str], device="cpu") -> torch.Tensor:
    """Return normalised class embeddings [C, D]: the mean of each class's normalised template embeddings."""
    prompts = [template.format(name) for name in classnames for template in templates]
    features = text_features(model, tokenizer, prompts, device=device)  # [C * T, D]
    features = features.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(features, dim=-1)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1, top-5 accuracy and mean per-class recall for logits [N, C] and labels [N]; ties go to the lower index."""
    k = min(5, num_classes)
    # A stable descending sort breaks ties by class index, so results do not depend on the backend.
    ranked = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]  # [N, k]
    top1 = ranked[:, 0] == labels
    topk = (ranked == labels[:, None]).any(dim=1)
    recalls = [top1[labels == c].float().mean().item() for c in range(num_classes) if (labels == c).any()]
    return {
        "acc1": top1.float().mean().item(),
        "acc5": topk.float().mean().item(),
        "mean_per_class_recall": sum(recalls) / len(recalls),
    }


def zeroshot_classify(image_feats: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> dict[str, float]:
    """Score normalised image features [N, D] against class prototypes [C, D]."""
    return classification_metrics(image_feats @ prototypes.T, labels, prototypes.shape[0])
