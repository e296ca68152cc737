"""The ablation ladder's config resolution and statistics, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import yaml

from conftest import REPO
from tulip.report.ablation_stats import HELPED, HURT, ONE_SEED, UNCLEAR, ladder_changes, paired_change, seed_spread
from tulip.train.ablation import deep_merge, ladder_plan, ladder_runs, variant_slug
from tulip.train.config import TrainConfig

TRAIN = {
    "steps": 400,
    "batch_size": 256,
    "seed": 0,
    "betas": [0.9, 0.95],
    "loss_weights": {"image_text_loss": 1.0, "image_image_loss": 0.0},
    "objective": {"image_image": {"generated_views": True, "dim": None}, "teacher": {"momentum": 0.996}},
}


def _ablation(**extra):
    return {
        "variants": {
            "siglip": {"objective": {"image_image": {"generated_views": False}}},
            "+image-image": {"loss_weights": {"image_image_loss": 0.1}},
        },
        "seeds": [0, 1],
        "train": {"steps": 20, "batch_size": 64},
        **extra,
    }


def test_deep_merge_keeps_sibling_keys():
    merged = deep_merge(TRAIN, {"objective": {"image_image": {"generated_views": False}}})
    assert merged["objective"]["image_image"] == {"generated_views": False, "dim": None}
    assert merged["objective"]["teacher"] == {"momentum": 0.996}
    assert merged["steps"] == 400


def test_deep_merge_replaces_lists_and_leaves_inputs():
    overrides = {"betas": [0.8, 0.9]}
    merged = deep_merge(TRAIN, overrides)
    assert merged["betas"] == [0.8, 0.9]
    assert TRAIN["betas"] == [0.9, 0.95]
    merged["loss_weights"]["image_text_loss"] = 5.0
    assert TRAIN["loss_weights"]["image_text_loss"] == 1.0


def test_deep_merge_value_replaces_mapping():
    assert deep_merge({"a": {"b": 1}}, {"a": None}) == {"a": None}


@pytest.mark.parametrize(
    ("name", "slug"),
    [("siglip", "siglip"), ("+contrastive-views", "plus-contrastive-views"), ("+geco", "plus-geco"),
     ("SigLIP + I/I", "siglip-plus-i-i"), ("lr 1e-3", "lr-1e-3")],
)
def test_variant_slug_cases(name, slug):
    assert variant_slug(name) == slug


def test_variant_slug_rejects_punctuation_only():
    assert variant_slug("+") == "plus"
    with pytest.raises(ValueError, match="no letters or digits"):
        variant_slug("-.-")


def test_ladder_runs_resolve_base_shared_variant_seed():
    """Each run is train <- ablation.train <- its own overrides <- its seed, never the previous rung."""
    runs = ladder_runs(TRAIN, _ablation())
    assert [(r.variant, r.seed) for r in runs] == [("siglip", 0), ("siglip", 1), ("+image-image", 0), ("+image-image", 1)]
    second = runs[3].train
    assert second["steps"] == 20
    assert second["batch_size"] == 64
    assert second["seed"] == 1
    assert second["loss_weights"] == {"image_text_loss": 1.0, "image_image_loss": 0.1}
    assert second["objective"]["image_image"]["generated_views"] is True
    assert runs[0].train["objective"]["image_image"]["generated_views"] is False
    assert runs[2].model_name == "ablation-plus-image-image-seed0"


def test_ladder_selects_and_orders_variants():
    runs = ladder_runs(TRAIN, _ablation(ladder=["+image-image"]))
    assert {r.variant for r in runs} == {"+image-image"}


@pytest.mark.parametrize(
    ("ablation", "message"),
    [
        (_ablation(ladder=["siglip", "missing"]), "does not define"),
        (_ablation(train={"step": 20}), r"ablation.train.step is not a key"),
        ({**_ablation(), "variants": {"a": {"objective": {"image_image": {"generated_view": False}}}}},
         r"objective.image_image.generated_view is not a key"),
        ({**_ablation(), "variants": {"a": {"loss_weights": 0.5}}}, "is a mapping in the train section"),
        ({**_ablation(), "variants": {"a b": {}, "a-b": {}}}, "same file name"),
        (_ablation(seeds=[0, 0]), "seed twice"),
    ],
    ids=["unknown-variant", "misspelt-shared-key", "misspelt-nested-key", "value-for-mapping", "slug-clash",
         "repeated-seed"],
)
def test_ladder_runs_reject_bad_config(ablation, message):
    with pytest.raises(ValueError, match=message):
        ladder_runs(TRAIN, ablation)


def test_default_ladder_resolves_to_valid_train_configs():
    """Every variant of config/config.yaml builds a TrainConfig, and the rungs add terms cumulatively."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    plan = ladder_plan(config["train"], config["ablation"])
    assert [v["name"] for v in plan] == ["siglip", "+contrastive-views", "+reconstruction", "+geco"]
    enabled = [set(TrainConfig.from_dict(v["train"]).enabled_terms()) for v in plan]
    assert enabled[0] == {"image_text_loss"}
    assert enabled[1] == {"image_text_loss", "image_image_loss", "text_text_loss"}
    assert enabled[2] == enabled[3] == {"image_text_loss", "image_image_loss", "text_text_loss",
                                        "image_reconstruction_loss", "text_reconstruction_loss"}
    assert [v["train"]["use_views"] for v in plan] == [False, False, False, True]
    assert {v["train"]["steps"] for v in plan} == {config["ablation"]["train"]["steps"]}


def test_seed_spread_hand_computed():
    spread = seed_spread([0.5, 0.7, 0.9])
    assert spread.mean == pytest.approx(0.7)
    assert spread.std == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    assert (spread.minimum, spread.maximum) == (0.5, 0.9)


def test_seed_spread_one_seed_has_no_std():
    assert seed_spread([0.3]).std is None


def test_paired_change_hand_computed():
    """Differences 0.10, 0.12, 0.14: mean 0.12, sd 0.02, se 0.02/sqrt(3), t(0.975, 2) = 4.302653."""
    change = paired_change({0: 0.50, 1: 0.60, 2: 0.40}, {0: 0.60, 1: 0.72, 2: 0.54})
    sem = 0.02 / math.sqrt(3)
    assert change.n == 3
    assert change.mean == pytest.approx(0.12)
    assert change.sem == pytest.approx(sem)
    assert change.low == pytest.approx(0.12 - 4.302653 * sem, rel=1e-6)
    assert change.high == pytest.approx(0.12 + 4.302653 * sem, rel=1e-6)
    assert change.verdict == HELPED


def test_paired_change_pairs_by_seed_not_position():
    """A seed-paired difference is small even when the seeds spread widely."""
    change = paired_change({2: 0.9, 0: 0.1, 1: 0.5}, {0: 0.11, 1: 0.51, 2: 0.91})
    assert change.mean == pytest.approx(0.01)
    assert change.sem == pytest.approx(0.0, abs=1e-12)


def test_paired_change_verdicts():
    assert paired_change({0: 0.6, 1: 0.7, 2: 0.5}, {0: 0.5, 1: 0.58, 2: 0.41}).verdict == HURT
    assert paired_change({0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.6, 1: 0.4, 2: 0.5}).verdict == UNCLEAR
    assert paired_change({0: 0.5}, {0: 0.6}).verdict == ONE_SEED


def test_paired_change_two_seed_interval():
    """Two seeds: t(0.975, 1) = 12.706205, so a consistent +0.1 and +0.3 does not exclude 0."""
    change = paired_change({0: 0.0, 1: 0.0}, {0: 0.1, 1: 0.3})
    assert change.sem == pytest.approx(0.1)
    assert change.low == pytest.approx(0.2 - 12.706205 * 0.1, rel=1e-6)
    assert change.verdict == UNCLEAR


def test_paired_change_rejects_unmatched_seeds():
    with pytest.raises(ValueError, match="paired seeds differ"):
        paired_change({0: 0.5, 1: 0.5}, {0: 0.6})


def test_ladder_changes_consecutive_rungs():
    table = {"acc": {"a": {0: 0.1, 1: 0.2}, "b": {0: 0.3, 1: 0.5}, "c": {0: 0.3, 1: 0.4}}}
    rows = ladder_changes(table, ["a", "b", "c"])
    assert [(r["before"], r["after"]) for r in rows] == [("a", "b"), ("b", "c")]
    assert rows[0]["change"].mean == pytest.approx(0.25)
    assert rows[1]["change"].mean == pytest.approx(-0.05)


def _write_run(folder, seed, acc1, term_losses):
    """Write the files one ladder run leaves: metrics.jsonl, summary.json and a zero-shot result."""
    import json

    folder.mkdir(parents=True)
    records = [{"step": step, "loss": sum(terms.values()), **terms} for step, terms in term_losses]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"seconds": 10.0 + seed, "steps": records[-1]["step"]}))
    result = {"dataset": "fashion_mnist", "model": folder.name, "task": "zeroshot_classification",
              "metrics": {"acc1": acc1}, "classnames": [str(i) for i in range(10)]}
    (folder / "zeroshot.json").write_text(json.dumps(result))
    return {"metrics": str(folder / "metrics.jsonl"), "summary": str(folder / "summary.json"),
            "eval": [str(folder / "zeroshot.json")]}


def test_report_tables_from_run_files(tmp_path):
    """The report's change row is the seed-paired mean difference with its t interval, from the result files."""
    from html.parser import HTMLParser

    from tulip.report.ablation_render import build_ablation_report

    plan = [
        {"name": "siglip", "slug": "siglip", "overrides": {}, "seeds": [0, 1, 2],
         "train": {"steps": 10, "batch_size": 8}},
        {"name": "+image-image", "slug": "plus-image-image", "overrides": {"loss_weights": {"image_image_loss": 0.1}},
         "seeds": [0, 1, 2], "train": {"steps": 10, "batch_size": 8}},
    ]
    before, after = {0: 0.50, 1: 0.60, 2: 0.40}, {0: 0.60, 1: 0.72, 2: 0.54}
    runs = []
    for seed in (0, 1, 2):
        files = _write_run(tmp_path / f"siglip-{seed}", seed, before[seed], [(5, {"image_text_loss": 2.0})])
        runs.append({"variant": "siglip", "seed": seed, **files})
        files = _write_run(tmp_path / f"ii-{seed}", seed, after[seed],
                           [(5, {"image_text_loss": 2.0, "image_image_loss": 1.0})])
        runs.append({"variant": "+image-image", "seed": seed, **files})

    paths = build_ablation_report(plan, runs, tmp_path / "report")

    changes = paths["changes"].read_text().splitlines()
    assert changes[0] == "before,after,metric,seeds,mean_change,standard_error,ci_low,ci_high,verdict"
    fields = changes[1].split(",")
    assert fields[:4] == ["siglip", "+image-image", "fashion_mnist/zeroshot_classification/acc1", "3"]
    assert float(fields[4]) == pytest.approx(0.12)
    assert float(fields[5]) == pytest.approx(0.02 / math.sqrt(3))
    assert float(fields[6]) == pytest.approx(0.12 - 4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert fields[8] == HELPED

    cells = []

    class Cells(HTMLParser):
        def handle_data(self, data):
            cells.append(data)

    Cells().feed(paths["html"].read_text())
    assert "+image-image against siglip: helped fashion_mnist/zeroshot_classification/acc1 (+12.00 points)." in cells
    assert "50.00 ± 10.00" in cells  # siglip's zero-shot: mean and sample standard deviation, in percent
    assert "[+7.03, +16.97]" in cells  # 12 ± 4.302653 * 1.1547 points
    assert paths["loss_curves"].stat().st_size > 1000


def test_report_rejects_missing_runs(tmp_path):
    from tulip.report.ablation_render import build_ablation_report

    plan = [{"name": "siglip", "slug": "siglip", "overrides": {}, "seeds": [0, 1], "train": {"steps": 1, "batch_size": 2}}]
    runs = [{"variant": "siglip", "seed": 0, **_write_run(tmp_path / "a", 0, 0.5, [(1, {"image_text_loss": 1.0})])}]
    with pytest.raises(ValueError, match=r"missing \[\('siglip', 1\)\]"):
        build_ablation_report(plan, runs, tmp_path / "report")
