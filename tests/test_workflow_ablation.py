"""End to end: the ablation ladder at test scale, its MLflow runs, its report, and what reruns after a change."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import FASHION_MNIST, copy_repository, planned_counts, snakemake

pytestmark = pytest.mark.slow

TEST_CONFIG = ".test/config/config.yaml"
DRY_RUN = ("ablation", "-n", "--configfile", TEST_CONFIG)
RUNS = [("siglip", "siglip", 0), ("siglip", "siglip", 1), ("+geco", "plus-geco", 0), ("+geco", "plus-geco", 1)]
EVAL_FILES = [
    "fashion_mnist/zeroshot_classification.json",
    "fashion_mnist/linear_probe_1shot.json",
    "fashion_mnist/linear_probe_5shot.json",
    "vision_probe/mmvp_vlm.json",
]


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    """Run `ablation` at test scale in a copy of the repository, then build Snakemake's HTML report."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    workdir = copy_repository(tmp_path_factory.mktemp("ablation"))
    result = snakemake(workdir, "ablation", "--cores", "2", "--configfile", TEST_CONFIG)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"ablation failed:\n{result.stderr[-5000:]}\n{logs}")
    report = snakemake(workdir, "ablation", "--cores", "2", "--configfile", TEST_CONFIG, "--report", "snakemake-report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    return workdir


def _planned_after_edit(workdir, edit) -> dict[str, int]:
    path = workdir / TEST_CONFIG
    backup = path.read_text()
    config = yaml.safe_load(backup)
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        result = snakemake(workdir, *DRY_RUN)
    finally:
        path.write_text(backup)
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_counts(result)


class _Tables(HTMLParser):
    """Collect the rows of every table with an id, and the text of list items, from an HTML page."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.lists: dict[str, list[str]] = {}
        self.images = 0
        self._table = self._list = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = ""
        elif tag == "ul":
            self._list = attrs.get("id")
            self.lists[self._list] = []
        elif tag == "li" and self._list:
            self.lists[self._list].append("")
        elif tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "ul":
            self._list = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._list and self.lists[self._list]:
            self.lists[self._list][-1] += data


@pytest.fixture(scope="module")
def report_page(ablation_run):
    parser = _Tables()
    parser.feed((ablation_run / "results/ablation/report/ablation.html").read_text())
    return parser


def test_every_run_is_trained_and_evaluated(ablation_run):
    for _, slug, seed in RUNS:
        folder = ablation_run / f"results/ablation/{slug}/seed{seed}"
        for name in ("model.pt", "metrics.jsonl", "summary.json", "tracked.json"):
            assert (folder / name).is_file(), folder / name
        for name in EVAL_FILES:
            assert (ablation_run / f"results/evaluate/ablation-{slug}-seed{seed}/{name}").is_file(), name


def test_runs_share_steps_and_differ_by_overrides(ablation_run):
    """Every run trains the ladder's steps; the siglip rung trains one term, +geco all five."""
    configs = {v["name"]: v["train"] for v in json.loads((ablation_run / "results/ablation/report/configs.json").read_text())}
    assert {c["steps"] for c in configs.values()} == {20}
    for _, slug, seed in RUNS:
        summary = json.loads((ablation_run / f"results/ablation/{slug}/seed{seed}/summary.json").read_text())
        assert summary["steps"] == 20
    siglip = json.loads((ablation_run / "results/ablation/siglip/seed0/metrics.jsonl").read_text().splitlines()[-1])
    geco = json.loads((ablation_run / "results/ablation/plus-geco/seed0/metrics.jsonl").read_text().splitlines()[-1])
    assert "image_image_loss" not in siglip
    assert "text_reconstruction_loss" in geco


def test_seeds_give_different_runs(ablation_run):
    first = (ablation_run / "results/ablation/siglip/seed0/metrics.jsonl").read_text().splitlines()[0]
    second = (ablation_run / "results/ablation/siglip/seed1/metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(first)["loss"] != json.loads(second)["loss"]


@pytest.fixture(scope="module")
def mlflow_runs(ablation_run):
    client = MlflowClient(tracking_uri=f"sqlite:///{ablation_run / 'results/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("tulip-test-ablation")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`tulip.current` = 'true'")
    return client, experiment, runs


def test_one_current_mlflow_run_per_variant_and_seed(mlflow_runs):
    _, _, runs = mlflow_runs
    found = sorted((r.data.tags["variant"], int(r.data.tags["seed"])) for r in runs)
    assert found == sorted((variant, seed) for variant, _, seed in RUNS)


def test_mlflow_run_tags(mlflow_runs, ablation_run):
    client, experiment, runs = mlflow_runs
    workflow = client.get_experiment_by_name("tulip-test")
    workflow_runs = {r.info.run_id for r in client.search_runs([workflow.experiment_id], "tags.`tulip.level` = 'workflow'")}
    ladder_parents = client.search_runs([experiment.experiment_id], "tags.`tulip.level` = 'workflow'")
    assert {r.data.tags["tulip.workflow_run_id"] for r in ladder_parents} <= workflow_runs
    for run in runs:
        tags = run.data.tags
        assert len(tags["git_commit"]) >= 40
        assert len(tags["config_hash"]) == 16
        assert tags["snakemake.rule"] == "ablation_pretrain"
        slug = {variant: slug for variant, slug, _ in RUNS}[tags["variant"]]
        assert json.loads(tags["snakemake.wildcards"]) == {"variant": slug, "seed": tags["seed"]}
        assert tags["tulip.workflow_run_id"] in workflow_runs
        assert tags["mlflow.parentRunId"] in {r.info.run_id for r in ladder_parents}
        assert run.info.run_name == f"{tags['variant']} seed {tags['seed']}"


def test_mlflow_run_params_curves_metrics_artifacts(mlflow_runs):
    client, _, runs = mlflow_runs
    run = next(r for r in runs if r.data.tags["variant"] == "+geco")
    assert run.data.params["steps"] == "20"
    assert run.data.params["objective.image_image.generated_views"] == "True"
    history = client.get_metric_history(run.info.run_id, "text_text_loss")
    assert [m.step for m in history] == [5, 10, 15, 20]
    assert 0.0 <= run.data.metrics["eval/fashion_mnist/zeroshot_classification/acc1"] <= 1.0
    assert "eval/vision_probe/mmvp_vlm/pair_acc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "metrics.jsonl", "summary.json", "loss_curve.png", "evaluation"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation/fashion_mnist")}
    assert "evaluation/fashion_mnist/zeroshot_classification.json" in evaluation


def test_mlflow_report_run_logs_figures(mlflow_runs):
    client, experiment, _ = mlflow_runs
    reports = client.search_runs([experiment.experiment_id], "tags.`tulip.level` = 'ablation_report'")
    assert len(reports) == 1
    artifacts = {a.path for a in client.list_artifacts(reports[0].info.run_id, "report")}
    assert {"report/ablation.html", "report/loss_curves.png", "report/evaluation.png", "report/changes.csv"} <= artifacts


def test_report_change_table_covers_every_metric(report_page):
    header, *rows = report_page.tables["changes"]
    assert header[:3] == ["rung", "metric", "seeds"]
    assert {row[0] for row in rows} == {"siglip → +geco"}
    assert {row[1] for row in rows} == {
        "fashion_mnist/zeroshot_classification/acc1",
        "fashion_mnist/linear_probe_1shot/lp_acc1",
        "fashion_mnist/linear_probe_5shot/lp_acc1",
        "vision_probe/mmvp_vlm/pair_acc",
        "vision_probe/mmvp_vlm/question_acc",
    }
    for row in rows:
        assert row[2] == "2"
        assert row[5].startswith("[")
        assert row[6] in ("helped", "hurt", "no clear change")


def test_report_matches_evaluation_files(report_page, ablation_run):
    """The evaluation table's mean for siglip's zero-shot is the mean of its two result files."""
    values = [
        json.loads((ablation_run / f"results/evaluate/ablation-siglip-seed{s}/{EVAL_FILES[0]}").read_text())["metrics"]["acc1"]
        for s in (0, 1)
    ]
    header, *rows = report_page.tables["evaluation"]
    row = next(r for r in rows if r[0] == "fashion_mnist/zeroshot_classification/acc1")
    assert row[header.index("siglip")].startswith(f"{100 * sum(values) / 2:.2f} ± ")


def test_report_states_verdict_setup_and_configs(report_page):
    assert report_page.lists["verdict"][0].startswith("+geco against siglip: ")
    assert any("20 steps of 64 pairs" in note for note in report_page.lists["setup"])
    assert any("random-weight stand-in" in note for note in report_page.lists["setup"])
    assert [row[0] for row in report_page.tables["variants"][1:]] == ["siglip", "+geco"]
    assert report_page.images == 2


def test_snakemake_report_includes_ablation(ablation_run):
    page = (ablation_run / "snakemake-report.html").read_text()
    assert "Ablation" in page
    assert "ablation.html" in page
    assert "loss_curves.png" in page


def test_complete_ladder_has_nothing_to_do(ablation_run):
    result = snakemake(ablation_run, *DRY_RUN)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_added_seed_trains_only_new_runs(ablation_run):
    planned = _planned_after_edit(ablation_run, lambda c: c["ablation"].update(seeds=[0, 1, 2]))
    assert planned["ablation_pretrain"] == 2
    assert planned["ablation_track"] == 2
    assert planned["eval_features"] == 4
    assert "shard" not in planned


def test_added_variant_trains_only_its_runs(ablation_run):
    planned = _planned_after_edit(
        ablation_run, lambda c: c["ablation"].update(ladder=["siglip", "+contrastive-views", "+geco"])
    )
    assert planned["ablation_pretrain"] == 2
    assert planned["ablation_track"] == 2


def test_edited_variant_retrains_only_that_variant(ablation_run):
    def edit(config):
        config["ablation"]["variants"] = {"siglip": {"lr": 2.0e-3}}

    planned = _planned_after_edit(ablation_run, edit)
    assert planned["ablation_pretrain"] == 2
    assert planned["ablation_track"] == 2
    assert planned["eval_features"] == 4


def test_main_target_ignores_the_ladder(ablation_run):
    """`all` plans its own pretraining and no ladder job."""
    result = snakemake(ablation_run, "all", "-n", "--configfile", TEST_CONFIG)
    assert result.returncode == 0, result.stderr
    planned = planned_counts(result)
    assert planned["pretrain"] == 1
    assert not {"ablation_pretrain", "ablation_track", "ablation_report"} & set(planned)
