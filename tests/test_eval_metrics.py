"""Evaluation metrics: oracle cases with known answers, and CLIP_benchmark's own functions as peers.

The peer checks feed CLIP_benchmark a model whose ``encode_image`` and ``encode_text`` return fixed
embeddings, so both implementations score exactly the same vectors and only the metric code differs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tulip.eval.mmvp import category_key, mmvp_scores
from tulip.eval.retrieval import first_positive_rank, retrieval_metrics
from tulip.eval.winoground import winoground_scores
from tulip.eval.zeroshot import (
    check_class_mapping,
    class_prototypes,
    classification_metrics,
    per_class_recall,
    zeroshot_classify,
)


class FixedEmbeddings(torch.nn.Module):
    """A CLIP-like model whose inputs are indices into fixed image and text embedding tables."""

    def __init__(self, image_table: torch.Tensor, text_table: torch.Tensor):
        super().__init__()
        self.image_table, self.text_table = image_table, text_table

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.image_table[images.flatten(1)[:, 0].long()]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text_table[tokens[:, 0]]
        return F.normalize(features, dim=-1) if normalize else features


class TableTokenizer:
    """Maps each known string to its row in the text table, as a [B, 1] id tensor."""

    def __init__(self, texts: list[str]):
        self.ids = {text: i for i, text in enumerate(texts)}

    def __call__(self, texts):
        return torch.tensor([[self.ids[t]] for t in texts])


class IndexImages(Dataset):
    """Images are their own index (a [1] tensor); ``classes`` as CLIP_benchmark expects of datasets."""

    def __init__(self, labels: torch.Tensor, classes: list[str]):
        self.labels, self.classes = labels, classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.tensor([i]), int(self.labels[i])


def _random_unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


# Zero-shot classification


def test_zeroshot_oracle_embeddings_score_perfectly():
    """Image embeddings equal to their class prototype are all classified correctly."""
    prototypes = _random_unit(5, 8, seed=0)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 2])
    metrics = zeroshot_classify(prototypes[labels], labels, prototypes)
    assert metrics == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_zeroshot_oracle_class_text_embedding():
    """An image embedding equal to its class's (single-template) text embedding is classified correctly."""
    classnames = ["cat", "dog", "car", "tree", "boat", "lamp"]
    text_table = _random_unit(len(classnames), 16, seed=1)
    prompts = [f"a photo of a {name}." for name in classnames]
    model = FixedEmbeddings(text_table, text_table)
    prototypes = class_prototypes(model, TableTokenizer(prompts), classnames, ["a photo of a {}."])
    labels = torch.tensor([3, 0, 5, 1, 1, 2, 4])
    metrics = zeroshot_classify(text_table[labels], labels, prototypes)
    assert metrics["acc1"] == 1.0
    assert metrics["mean_per_class_recall"] == 1.0


def test_classification_metrics_break_ties_by_class_index():
    logits = torch.tensor([
        [0.5, 0.5, 0.1, 0.0, 0.0],
        [0.2, 0.9, 0.9, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.3, 0.3, 0.3, 0.3],
    ])
    labels = torch.tensor([1, 1, 2, 4])
    metrics = classification_metrics(logits, labels, num_classes=5)
    # Row 0 ties 0/1 -> 0 (wrong); row 1 ties 1/2 -> 1 (right); row 2 ties all -> 0 (wrong);
    # row 3 ties 1..4 -> 1 (wrong), and class 4 is still in its top 5.
    assert metrics["acc1"] == pytest.approx(1 / 4)
    assert metrics["acc5"] == pytest.approx(1.0)
    # Class 1 recall 1/2, class 2 recall 0/1, class 4 recall 0/1.
    assert metrics["mean_per_class_recall"] == pytest.approx(1 / 6)


def test_classification_metrics_omit_top5_below_five_classes():
    """As in CLIP_benchmark, top-5 accuracy is not reported for fewer than five classes."""
    metrics = classification_metrics(torch.eye(3), torch.arange(3), num_classes=3)
    assert "acc5" not in metrics
    assert metrics["acc1"] == 1.0


def test_per_class_recall_marks_classes_without_examples():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    recalls = per_class_recall(logits, torch.tensor([0, 0, 1]), num_classes=3)
    assert recalls == [0.5, 0.0, None]


def test_class_mapping_rejects_labels_beyond_classnames():
    with pytest.raises(ValueError, match="3 class names"):
        check_class_mapping(["a", "b", "c"], torch.tensor([0, 3]))


def test_class_mapping_reports_duplicate_names():
    mapping = check_class_mapping(["missile", "ship", "missile"], torch.tensor([0, 1, 1]))
    assert mapping["duplicate_classnames"] == ["missile"]
    assert mapping["classes_with_examples"] == 2


def test_zeroshot_matches_clip_benchmark():
    """Top-1, top-5 and mean per-class recall equal those of CLIP_benchmark's classifier and logits.

    CLIP_benchmark 1.6.2's ``accuracy`` calls ``float()`` on a one-element array, which numpy 2.4
    rejects, so its ``evaluate`` cannot run here. Its own ``zero_shot_classifier`` and
    ``run_classification`` produce the logits, and scikit-learn scores them as its ``evaluate`` would.
    """
    from clip_benchmark.metrics import zeroshot_classification as reference
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

    classnames = [f"class {i}" for i in range(12)]
    templates = ["a photo of a {}.", "a drawing of a {}.", "{} in the wild."]
    prompts = [t.format(name) for name in classnames for t in templates]
    text_table = _random_unit(len(prompts), 32, seed=2)
    labels = torch.randint(0, 12, (300,), generator=torch.Generator().manual_seed(3))
    # Images near their class's first prompt, so accuracy is neither 0 nor 1.
    image_table = F.normalize(text_table[labels * 3] + 0.9 * _random_unit(300, 32, seed=4), dim=-1)
    model, tokenizer = FixedEmbeddings(image_table, text_table), TableTokenizer(prompts)

    ours = zeroshot_classify(image_table, labels, class_prototypes(model, tokenizer, classnames, templates))
    loader = DataLoader(IndexImages(labels, classnames), batch_size=64)
    classifier = reference.zero_shot_classifier(model, tokenizer, classnames,
                                                [t.replace("{}", "{c}") for t in templates], "cpu", amp=False)
    logits, target = reference.run_classification(model, classifier, loader, "cpu", amp=False)
    peer = {
        "acc1": top_k_accuracy_score(target, logits, k=1, labels=range(12)),
        "acc5": top_k_accuracy_score(target, logits, k=5, labels=range(12)),
        "mean_per_class_recall": balanced_accuracy_score(target, logits.argmax(dim=1)),
    }
    assert 0.05 < ours["acc1"] < 0.95
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours[key] == pytest.approx(peer[key], abs=1e-6), key


# Retrieval


class CaptionedImages(Dataset):
    def __init__(self, captions_per_image: list[list[str]]):
        self.captions = captions_per_image

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, i):
        return torch.tensor([i]), self.captions[i]


def test_retrieval_matches_clip_benchmark():
    """Recall@1/5/10 in both directions equal CLIP_benchmark's, with one to seven captions per image."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval as reference

    generator = torch.Generator().manual_seed(5)
    counts = torch.randint(1, 8, (60,), generator=generator).tolist()
    captions = [[f"image {i} caption {j}" for j in range(n)] for i, n in enumerate(counts)]
    flat = [c for per_image in captions for c in per_image]
    caption_image = torch.tensor([i for i, n in enumerate(counts) for _ in range(n)])
    image_table = _random_unit(60, 24, seed=6)
    text_table = F.normalize(image_table[caption_image] + 1.2 * _random_unit(len(flat), 24, seed=7), dim=-1)
    model, tokenizer = FixedEmbeddings(image_table, text_table), TableTokenizer(flat)

    ours = retrieval_metrics(image_table, text_table, caption_image, [1, 5, 10])
    loader = DataLoader(CaptionedImages(captions), batch_size=16, collate_fn=image_captions_collate_fn)
    peer = reference.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    assert 0.05 < ours["image_retrieval_recall@1"] < 0.95
    assert set(ours) == set(peer)
    for key in peer:
        assert ours[key] == pytest.approx(peer[key], abs=1e-6), key


def test_first_positive_rank_breaks_ties_by_index():
    scores = torch.tensor([
        [0.5, 0.5, 0.5, 0.1],  # positive at 2 ties with 0 and 1, which rank first
        [0.2, 0.9, 0.9, 0.9],  # positive at 1 ties with 2 and 3 and ranks first among them
        [0.3, 0.3, 0.7, 0.3],  # positives 0 and 3: index 0 wins the tie at 0.3, behind index 2
    ])
    positives = torch.tensor([
        [False, False, True, False],
        [False, True, False, False],
        [True, False, False, True],
    ])
    assert first_positive_rank(scores, positives).tolist() == [2, 0, 1]


def test_retrieval_hand_made_ties():
    """Two identical images tie for every caption: the lower index ranks first, deterministically."""
    image_features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text_features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    caption_image = torch.tensor([0, 1, 2, 2])
    metrics = retrieval_metrics(image_features, text_features, caption_image, [1, 2])
    # Text to image: caption 0 -> image 0 (rank 0); caption 1 -> image 0 first, image 1 second;
    # caption 2 -> image 2 (rank 0); caption 3 scores 0.6, 0.6, 0.8 -> image 2 first.
    assert metrics["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(1.0)
    # Image to text: images 0 and 1 both tie captions 0 and 1, which rank in index order, so
    # image 1's caption ranks second. Image 2's captions 2 and 3 rank first.
    assert metrics["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert metrics["text_retrieval_recall@2"] == pytest.approx(1.0)


def test_retrieval_rejects_images_without_captions():
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(_random_unit(3, 4, 0), _random_unit(2, 4, 1), torch.tensor([0, 1]), [1])


# Winoground


def _pairs(similarities: list[list[list[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Build features [E, 2, D] whose image-caption dot products equal the given [E, 2, 2] matrices."""
    scores = torch.tensor(similarities)  # [E, image, caption]
    images = torch.eye(2).expand(len(similarities), 2, 2)  # image i is the i-th unit vector
    texts = scores.transpose(1, 2)  # caption c has coordinate i = s(image i, caption c)
    return images, texts


def test_winoground_oracle_scores():
    images, texts = _pairs([
        [[0.9, 0.1], [0.2, 0.8]],  # all correct
        [[0.9, 0.8], [0.95, 0.96]],  # text correct (each image prefers its caption), image wrong
        [[0.5, 0.6], [0.1, 0.9]],  # image correct (each caption prefers its image), text wrong
        [[0.5, 0.5], [0.2, 0.8]],  # a tie fails the text score, and the image score passes
    ])
    metrics = winoground_scores(images, texts, ["Object", "Object", "Relation", "Both"])
    assert metrics["text_score"] == pytest.approx(2 / 4)
    assert metrics["image_score"] == pytest.approx(3 / 4)
    assert metrics["group_score"] == pytest.approx(1 / 4)
    assert metrics["group_score.object"] == pytest.approx(1 / 2)
    assert metrics["image_score.relation"] == pytest.approx(1.0)


def test_winoground_matches_clip_benchmark():
    """Text, image and group scores equal CLIP_benchmark's text_acc, image_acc and acc."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import image_caption_selection as reference

    class Examples(Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            images = torch.tensor([2 * i, 2 * i + 1]).view(2, 1, 1, 1)  # [images, C, H, W]
            return images, [f"ex {i} caption 0", f"ex {i} caption 1"]

    image_table = _random_unit(100, 16, seed=8)
    captions = [f"ex {i} caption {c}" for i in range(50) for c in range(2)]
    text_table = F.normalize(image_table + 2.5 * _random_unit(100, 16, seed=9), dim=-1)
    model, tokenizer = FixedEmbeddings(image_table, text_table), TableTokenizer(captions)

    ours = winoground_scores(image_table.view(50, 2, 16), text_table.view(50, 2, 16))
    loader = DataLoader(Examples(), batch_size=8, collate_fn=image_captions_collate_fn)
    peer = reference.evaluate(model, loader, tokenizer, "cpu", amp=False)
    assert 0.05 < ours["group_score"] < 0.95
    assert ours["text_score"] == pytest.approx(peer["text_acc"], abs=1e-6)
    assert ours["image_score"] == pytest.approx(peer["image_acc"], abs=1e-6)
    assert ours["group_score"] == pytest.approx(peer["acc"], abs=1e-6)


# MMVP-VLM


def test_mmvp_oracle_pair_and_question_accuracy():
    """Known pair and per-statement accuracy, including the tie rule (a tie picks the second image)."""
    images, texts = _pairs([
        [[0.9, 0.1], [0.2, 0.8]],  # both statements pick their image: pair right, 2 questions right
        [[0.9, 0.85], [0.2, 0.8]],  # statement 1 prefers image 0: pair wrong, 1 question right
        [[0.1, 0.9], [0.8, 0.2]],  # both pick the other image: pair wrong, 0 questions right
        [[0.5, 0.3], [0.5, 0.9]],  # statement 0 ties: picks image 1, wrong; statement 1 right
    ])
    categories = ["Color", "Color", "Count", "Count"]
    metrics = mmvp_scores(images, texts, categories)
    assert metrics["pair_acc"] == pytest.approx(1 / 4)
    assert metrics["question_acc"] == pytest.approx(4 / 8)
    assert metrics["pair_acc.color"] == pytest.approx(1 / 2)
    assert metrics["pair_acc.count"] == pytest.approx(0.0)


def test_mmvp_image_direction_is_reported_apart():
    """Each image picking its own statement is a different rule from each statement picking its image."""
    # Statements both prefer image 0, but each image still prefers its own statement.
    images, texts = _pairs([[[0.9, 0.8], [0.1, 0.7]]])
    metrics = mmvp_scores(images, texts, ["Count"])
    assert metrics["pair_acc"] == 0.0
    assert metrics["image_pair_acc"] == 1.0


def test_mmvp_category_key():
    assert category_key("Positional and Relational Context") == "positional_and_relational_context"
