"""End to end on the tiny corpus: the real config tree, a real MLflow store in tmp_path, a real pyfunc load."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ner.config import ConfigError
from tests.conftest import ROOT, TINY, compose_train


def test_contract_overrides_reach_the_config(tmp_path):
    cfg = compose_train(
        tmp_path,
        "model.cell=gru",
        "model.bidirectional=false",
        "model.head=softmax",
        "trainer.max_epochs=3",
        "seed=7",
        "tracking.experiment=x",
    )
    assert (cfg.model.cell, cfg.model.bidirectional, cfg.model.head) == ("gru", False, "softmax")
    assert (cfg.trainer.max_epochs, cfg.seed, cfg.tracking.experiment) == (3, 7, "x")
    assert cfg.data.path.endswith("tiny")


PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def compose_conf(*overrides: str, conf: Path = ROOT / "conf"):
    """The config tree `conf` (the real conf/ by default) as `python -m ner.train [overrides]` composes it."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_configs(cfg) -> dict:
    """The dataclasses a run builds from the composed config, by the config path they are read from."""
    from ner.config import checked
    from ner.data.corpus import DataConfig
    from ner.data.vocab import EmbeddingsConfig
    from ner.model.tagger import ModelConfig
    from ner.tracking.store import TrackingConfig
    from ner.training.trainer import TrainerConfig

    return {
        "data": checked(DataConfig, cfg.data, "data"),
        "model": checked(ModelConfig, cfg.model, "model", skip=("embeddings",)),
        "model.embeddings": checked(EmbeddingsConfig, cfg.model.embeddings, "model.embeddings"),
        "trainer": checked(TrainerConfig, cfg.trainer, "trainer"),
        "tracking": checked(TrackingConfig, cfg.tracking, "tracking"),
    }


def leaves(node: dict, prefix: str = "") -> dict:
    """{"model.embeddings.path": None, ...}: every value of a nested mapping by its dotted path."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        out.update(leaves(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def field_values(cfg) -> dict:
    """Every knob a run reads, by dotted path, as the dataclasses hold it (after their own conversions)."""
    values = {"seed": cfg.seed}
    for group, obj in run_configs(cfg).items():
        values.update({f"{group}.{f.name}": getattr(obj, f.name) for f in dataclasses.fields(obj)})
    return values


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_changes_what_it_states_and_nothing_else(preset):
    stated = leaves(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / f"{preset}.yaml")))
    base, got = field_values(compose_conf()), field_values(compose_conf(f"experiment={preset}"))
    assert stated and set(stated) <= set(got), f"{preset} sets keys no dataclass reads: {set(stated) - set(got)}"
    assert {k: got[k] for k in stated} == stated
    assert {k: v for k, v in got.items() if k not in stated} == {k: v for k, v in base.items() if k not in stated}
    assert any(base[k] != v for k, v in stated.items()), f"{preset} changes nothing"


def test_a_preset_can_set_the_seed_and_the_command_line_still_wins(tmp_path):
    """train.yaml lists _self_ first, so its `seed: 1` is a default that an experiment preset may change."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "experiment" / "seeded.yaml").write_text("# @package _global_\nseed: 42\ntrainer:\n  max_epochs: 3\n")
    assert compose_conf(conf=conf).seed == 1
    seeded = compose_conf("experiment=seeded", conf=conf)
    assert (seeded.seed, seeded.trainer.max_epochs) == (42, 3)
    assert compose_conf("experiment=seeded", "seed=7", conf=conf).seed == 7


def test_wnut17_is_conll2003_but_for_the_path():
    conll, wnut = (OmegaConf.to_container(compose_conf(f"data={name}").data) for name in ("conll2003", "wnut17"))
    assert wnut.pop("path").endswith("wnut17") and conll.pop("path").endswith("conll2003")
    assert wnut == conll
    assert compose_conf("data=wnut17", "data.scheme=iob2").data.scheme == "iob2"  # inherited knobs still override


def test_an_unknown_config_key_is_one_line_naming_it(tmp_path):
    from ner.config import checked
    from ner.data.vocab import EmbeddingsConfig
    from ner.training.pipeline import build

    known = r"\(known: path, freeze, keep, cache_dir\)$"
    with pytest.raises(ConfigError, match=r"^unknown config key model\.embeddings\.frezee " + known):
        build(compose_train(tmp_path, "+model.embeddings.frezee=true"))
    with pytest.raises(ConfigError, match=r"unknown config key data\.pth"):
        build(compose_train(tmp_path, "+data.pth=x"))
    assert checked(EmbeddingsConfig, {"path": "", "freeze": True}, "model.embeddings") == EmbeddingsConfig(
        None, True
    )


def test_a_run_logs_config_metrics_artifacts_and_model(trained_run):
    run_id, uri, final = trained_run
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.cell"] == "lstm" and run.data.params["trainer.max_epochs"] == "25"
    for key in ("test/f1", "test/f1_strict", "test/precision", "test/recall", "dev/f1", "test/f1_PER"):
        assert key in run.data.metrics  # grouped by prefix in the UI's charts: dev/, test/, epoch/, train/
    history = mlflow.MlflowClient().get_metric_history(run_id, "epoch/dev_f1")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    per_epoch = {"epoch/train_loss", "epoch/tokens_per_s", "epoch/dev_precision", "epoch/dev_recall"}
    assert per_epoch | {"gradients/norm_d0", "train/minutes", "train/best_epoch"} <= set(run.data.metrics)
    assert not [k for k in run.data.metrics if "/" not in k]  # every metric in a section
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {
        "config.yaml",
        "data_report.json",
        "test_predictions.conll.txt",
        "test_scores.md",
        "test_errors.md",
        "test_errors.png",
        "test_errors.html",
        "test_thresholds.md",
        "test_reliability.png",
        "test_threshold_curve.png",
        "test_confusion.png",
        "gradients",
    } <= names
    for key in ("test/ece", "test/ece_uncalibrated", "test/invalid_predicted_sequences", "dev/temperature"):
        assert key in run.data.metrics
    assert run.data.metrics["test/invalid_predicted_sequences"] == 0  # the constrained CRF
    assert run.data.tags["mlflow.runName"] == "bilstm-crf-s1"
    assert run.data.params["model.word_dim"] == "5"  # the vectors' size, not the config's 100
    assert run.data.params["data_size.train.sentences"] == str(report_sentences(run_id))
    assert not [k for k in run.data.metrics if k.startswith("data_")]  # counts live in data_report.json and params
    assert run.data.tags["dataset_fingerprint"]
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/data_report.json"))
    assert 0 < report["vectors"]["train"]["token_coverage"] < 1
    # the tiny corpus is learnable: a loose floor, not an expected value
    assert final["test_f1"] > 50


def test_registered_model_gets_a_version(trained_run):
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='tiny-ner'")
    assert versions and versions[0].run_id == trained_run[0]


def test_a_failing_run_is_marked_failed(tmp_path):
    from ner.training.pipeline import train

    cfg = compose_train(tmp_path, "trainer.lr=1e30", "trainer.clip=0", "tracking.experiment=fails")  # diverges
    with pytest.raises(FloatingPointError):
        train(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fails")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.params["trainer.lr"] == "1e+30"


def test_same_seed_gives_identical_results_on_cpu(tmp_path):
    from ner.training.pipeline import train

    runs = [train(compose_train(tmp_path / str(i), "trainer.max_epochs=3", "tracking.log_model=false")) for i in (1, 2)]
    keys = ("best_dev_f1", "test_f1", "test_precision", "test_recall", "best_epoch")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]


def test_numeric_experiment_and_run_names_stay_text(tmp_path):
    """Hydra parses `tracking.experiment=2024` as an int and `=nan` as a float; MLflow needs the text."""
    from ner.tracking.store import TrackingConfig

    cfg = compose_train(tmp_path, "tracking.experiment=nan", "tracking.run_name=2024")
    tracking_cfg = TrackingConfig(**cfg.tracking)
    assert (tracking_cfg.experiment, tracking_cfg.run_name) == ("nan", "2024")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.bidirectional=maybe", "model.bidirectional='maybe' is not true or false"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 must be >= 1"),
        ("trainer.lr=abc", "trainer.lr='abc' is not a number"),
        ("model.cell=lstmm", "model.cell='lstmm' is not one of lstm, gru, rnn"),
        ("+model.cel=gru", "unknown config key model.cel (known: cell,"),
        ("trainer.device=cuda", "trainer.device=cuda: this torch"),
        ("trainer.device=tpu", "trainer.device='tpu' is not a device: use cpu, cuda or cuda:N"),
        ("data.train_scheme=iob1", "data.train_scheme='iob1' is not one of iob2, bioes"),
        ("seed=one", "seed='one' is not a whole number"),
        ("model.dropout=1.5", "model.dropout=1.5 must be in [0, 1)"),
    ],
)
def test_a_bad_config_value_is_a_config_error_naming_it(tmp_path, override, message):
    from ner.training.pipeline import RunConfig

    if override == "trainer.device=cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA: trainer.device=cuda is valid here")
    with pytest.raises(ConfigError) as err:
        RunConfig.of(compose_train(tmp_path, override))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_apps_print_one_line_for_a_bad_value_before_reading_data_or_creating_a_run(tmp_path):
    store = tmp_path / "mlflow.db"
    train = [sys.executable, "-m", "ner.train", "experiment=smoke", f"tracking.uri=sqlite:///{store}",
             "data.path=/no/such/corpus", "trainer.lr=abc"]  # fmt: skip
    proc = subprocess.run(train, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (2, ["error: trainer.lr='abc' is not a number"])
    assert not store.exists()  # no MLflow store touched, and the missing corpus was never read
    tag = [sys.executable, "-m", "ner.tag", "model=/no/model", f"input={tmp_path}", "workers=two"]
    proc = subprocess.run(tag, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (2, ["error: workers='two' is not a whole number"])


def test_help_shows_every_knob_with_its_comment_and_only_the_app_s_own_config():
    train = subprocess.run([sys.executable, "-m", "ner.train", "--help"], capture_output=True, text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    assert "lr: 0.015  # initial learning rate" in train.stdout  # conf/trainer/default.yaml, comment and all
    assert "experiment=<distill|full_budget|lample2016|ma_hovy2016|smoke|train_with_dev>" in train.stdout
    assert "tag: tag" not in train.stdout and "conf/tag" not in train.stdout
    tag = subprocess.run([sys.executable, "-m", "ner.tag", "--help"], capture_output=True, text=True, timeout=120)
    assert tag.returncode == 0, tag.stderr
    assert "one_per_line: false  # text input: one document per line" in tag.stdout
    assert "trainer" not in tag.stdout


def test_a_redirected_run_prints_a_line_per_epoch_and_leaves_no_outputs_folder(tmp_path):
    """Not a terminal (CI, nohup, `> train.log`): no bar redraws, no MLflow INFO lines, bars or warnings."""
    cmd = [sys.executable, "-m", "ner.train", "experiment=smoke", f"data.path={TINY}", "trainer.progress=true",
           f"data.cache_dir={tmp_path / 'cache'}", "data.max_train_samples=0", "data.max_eval_samples=0"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "\r" not in out and "INFO" not in out and "Downloading" not in out and "Warning" not in out, out
    assert [line[:9] for line in out.splitlines() if line.startswith("epoch")] == ["epoch   1", "epoch   2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mlruns"]  # no outputs/DATE/TIME, no train.log


def report_sentences(run_id: str) -> int:
    return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/data_report.json"))["splits"]["train"]["sentences"]


def test_a_run_is_named_by_what_sets_it_apart_from_the_defaults():
    from ner.model.tagger import ModelConfig
    from ner.training.pipeline import run_name

    assert run_name(ModelConfig(), 1) == "bilstm-crf-s1"
    gru = ModelConfig(cell="gru", bidirectional=False)
    overrides = ["experiment=full_budget", "model.cell=gru", "model.hidden_size=400", "seed=2", "tracking.uri=x"]
    assert run_name(gru, 2, overrides) == "gru-crf full_budget hidden_size=400 s2"
    assert run_name(ModelConfig(), 1, ["data=wnut17", "trainer.threads=2", "data.path=/a/b/mydata"]) == (
        "bilstm-crf wnut17 path=mydata s1"
    )
    teachers = "trainer.teachers=[runs:/a1/model,runs:/b2/model]"  # distillation: how many teachers, not their ids
    assert run_name(ModelConfig(), 3, ["experiment=distill", teachers]) == "bilstm-crf distill teachers=2 s3"
