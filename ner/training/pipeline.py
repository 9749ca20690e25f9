"""One training run from a composed config: build data and model, fit, score dev and test, track it all in MLflow.

`python -m ner.train` (ner/train.py) is a thin Hydra entry point around `train(cfg)`; tests call `train` directly.
A little past 300 lines: `train` and what a run logs about itself (params, data report, names, description) are
read together; the scoring and its files are in `ner.evaluation.assess`.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ner.config import ConfigError, checked
from ner.data import schemes
from ner.data.batching import Featurizer
from ner.data.corpus import DataConfig, Sentences, load_corpus, with_dev
from ner.data.vocab import EmbeddingsConfig, Vocab, build_word_vocab, coverage, init_embeddings, read_vectors
from ner.evaluation.assess import EvaluationConfig, assess
from ner.model.engine import Engine
from ner.model.tagger import ModelConfig, Tagger
from ner.tracking import backlog, store
from ner.training import checkpoint, gradients, objectives
from ner.training.trainer import EpochResult, Stop, TrainerConfig, fit


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# overrides left out of run names: said otherwise (the seed, the architecture), or no difference between runs
NOT_IN_NAMES = ("seed", "model.cell", "model.bidirectional", "model.head", "tracking.", "hydra.", "data.cache_dir")
NOT_IN_NAMES += ("trainer.threads", "trainer.device", "trainer.resume", "trainer.checkpoint_dir", "trainer.progress")


def run_name(model: ModelConfig, seed: int, overrides: list[str] = ()) -> str:
    """What sets a run apart, for the MLflow run list: the architecture, then every override that changes the
    result (a preset, a group choice, a value; paths by their last part), then the seed.
    e.g. "bilstm-crf-s1" for the defaults, "bigru-crf full_budget hidden_size=400 s2" for a sweep job."""
    parts = [f"{'bi' if model.bidirectional else ''}{model.cell}-{model.head}"]
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith(NOT_IN_NAMES):
            continue
        if key == "trainer.teachers":  # model URIs: how many, not which
            value = str(len([t for t in value.strip("[]").split(",") if t.strip()]))
        value = Path(value).name if "/" in value else value
        parts.append(value if "." not in key else f"{key.rsplit('.', 1)[-1]}={value}")
    return f"{parts[0]}-s{seed}" if len(parts) == 1 else " ".join([*parts, f"s{seed}"])[:250]


@dataclass
class RunConfig:
    """Every group of the composed training config as its typed dataclass, checked before anything runs."""

    data: DataConfig
    model: ModelConfig
    embeddings: EmbeddingsConfig
    trainer: TrainerConfig
    evaluation: EvaluationConfig
    tracking: store.TrackingConfig
    seed: int

    @classmethod
    def of(cls, cfg: DictConfig) -> RunConfig:
        """A `ConfigError` naming the key for any unknown key, mistyped value or value out of range."""
        known = {"data", "model", "trainer", "evaluation", "tracking", "seed", "experiment", "hparams_search"}
        unknown = [k for k in cfg if k not in known]
        if unknown:
            known_keys = "data, model, trainer, evaluation, tracking, seed"
            raise ConfigError(f"unknown config key {', '.join(unknown)} (known: {known_keys})")
        seed = cfg.seed
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed={seed!r} is not a whole number")
        return cls(
            data=checked(DataConfig, cfg.data, "data"),
            model=checked(ModelConfig, cfg.model, "model", skip=("embeddings",)),
            embeddings=checked(EmbeddingsConfig, cfg.model.embeddings, "model.embeddings"),
            trainer=checked(TrainerConfig, cfg.trainer, "trainer"),
            evaluation=checked(EvaluationConfig, cfg.get("evaluation", {}), "evaluation"),
            tracking=checked(store.TrackingConfig, cfg.tracking, "tracking"),
            seed=seed,
        )


def build(cfg: DictConfig | RunConfig):
    """Corpus, vectors, vocabularies and a fresh model from the composed config."""
    run = cfg if isinstance(cfg, RunConfig) else RunConfig.of(cfg)
    data_cfg, model_cfg, emb_cfg = run.data, run.model, run.embeddings
    corpus, data_report = load_corpus(data_cfg)
    if run.trainer.train_with_dev:
        corpus = with_dev(corpus)
        data_report["train_with_dev"] = len(corpus["train"])  # the splits above are the files, as read
    if model_cfg.context_tokens and len(set(corpus["train"]["document"])) == len(corpus["train"]):
        print(
            f"note: model.context_tokens={model_cfg.context_tokens}, but the training file has no -DOCSTART- lines, "
            "so its sentences are unrelated: each is read alone (context_tokens=0 in the saved model)",
            flush=True,
        )
        model_cfg = replace(model_cfg, context_tokens=0)
    vectors = read_vectors(emb_cfg.path, cache_dir=emb_cfg.cache_dir) if emb_cfg.path else None
    train_tokens = corpus["train"]["tokens"]
    words, trainable = build_word_vocab(train_tokens, vectors, emb_cfg)
    training_words = trainable  # the training data's words come first
    if emb_cfg.freeze:
        trainable = 1  # only <pad> trains (and it is zero): every vector stays as loaded
    labels = schemes.labels_for(
        schemes.entity_types(corpus["train"].features["ner_tags"].feature.names), data_cfg.train_scheme
    )
    chars = Vocab.build(c for sent in train_tokens for w in sent for c in w)
    featurizer = Featurizer(words, chars, Vocab(labels), trainable, training_words)
    matrix, emb_stats = init_embeddings(words, vectors, vectors.dim if vectors else model_cfg.word_dim, run.seed)
    data_report["vectors"] = {**emb_stats, **{s: coverage(corpus[s]["tokens"], vectors) for s in corpus}}
    model = Tagger(model_cfg, featurizer, data_cfg.train_scheme, matrix)
    return data_cfg, corpus, data_report, featurizer, model


def train(cfg: DictConfig) -> dict[str, float]:
    """One run: returns the final metrics (dev and test), also logged to MLflow."""
    run = RunConfig.of(cfg)  # every value checked before any data is read or a run is created
    seed_everything(run.seed)
    trainer_cfg, tracking_cfg = run.trainer, run.tracking
    torch.set_num_threads(trainer_cfg.threads)
    data_cfg, corpus, data_report, featurizer, model = build(run)
    print(_data_summary(data_report), flush=True)
    splits = {s: Sentences.of(corpus[s]) for s in corpus}
    train_gold = [schemes.convert(t, data_cfg.train_scheme) for t in splits["train"].gold]
    train_enc = featurizer.encode(splits["train"].tokens, train_gold, splits["train"].documents)
    train_enc = train_enc.in_context(model.cfg.context_tokens)[0] if model.cfg.context_tokens else train_enc
    name = tracking_cfg.run_name or run_name(model.cfg, run.seed, _hydra_overrides())
    tags = {
        "cell": model.cfg.cell,
        "head": model.cfg.head,
        "dataset": Path(data_cfg.path).name,
        "git_commit": store.git_commit(),
        "dataset_fingerprint": data_report.get("fingerprint", ""),
        "train_with_dev": str(trainer_cfg.train_with_dev).lower(),  # such runs have no dev score: their own rows
    }
    params = store.flatten(OmegaConf.to_container(cfg, resolve=True))
    resume_id = checkpoint.find_resumable(tracking_cfg, trainer_cfg.resume, trainer_cfg.checkpoint_dir, params)
    with store.run(tracking_cfg, name, tags, run_id=resume_id) as active:
        run_id = active.info.run_id
        if resume_id is None:
            _log_setup(cfg, model.cfg, corpus, data_report)
        print(f"MLflow run {run_id} ({name}) in {mlflow.get_tracking_uri()}", flush=True)
        print(f"  runs table (with `mlflow ui`, README): {store.runs_url(active.info.experiment_id)}", flush=True)
        ckpt = checkpoint.folder(trainer_cfg.checkpoint_dir, run_id) / "last.pt"
        mlflow.set_tag("checkpoint", str(ckpt))
        dev = None if trainer_cfg.train_with_dev else splits["validation" if "validation" in corpus else "train"]
        loss = objectives.build(trainer_cfg, tracking_cfg.uri, model, splits["train"], train_enc)
        metric_log = backlog.MetricLog()

        def on_epoch(res: EpochResult) -> None:
            metric_log.log(store.logged(_epoch_metrics(res)), res.epoch)
            every = tracking_cfg.grad_profile_every
            if every and res.epoch % every == 0:
                try:
                    gradients.log_gradient_profile(model, train_enc, res.epoch)
                except Exception as err:  # noqa: BLE001 - a diagnostic must not stop training
                    print(f"warning: gradient profile not logged ({err})", flush=True)

        try:
            result = fit(
                model,
                train_enc,
                dev,
                trainer_cfg,
                run.seed,
                on_epoch=on_epoch,
                checkpoint_path=ckpt,
                should_stop=STOP.is_set,
                objective=loss,
            )
        except Stop as stop:  # the command to continue, with this run's id
            raise Stop(f"{stop}; resume with trainer.resume={run_id}") from None
        try:  # the end of a run talks to the store directly: a server gone now would stall it for minutes
            store.check_reachable(mlflow.get_tracking_uri(), timeout=5)
        except store.TrackingError as err:
            raise store.TrackingError(
                f"{err}; training is done and its checkpoint kept: resume with "
                f"trainer.resume={run_id} once the store is back"
            ) from None
        metric_log.flush()
        final = _evaluate(model, splits, run)
        final.update(
            {"best_epoch": result.best_epoch, "epochs": len(result.history), "train_minutes": result.seconds / 60}
        )
        mlflow.log_metrics(store.logged(final))
        mlflow.set_tag("stopped", result.stopped)
        mlflow.set_tag("mlflow.note.content", _description(final))
        if tracking_cfg.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                model.save(Path(tmp) / "tagger")
                store.log_model(Path(tmp) / "tagger", tracking_cfg.register_as)
        final["run_id"] = run_id
    if not trainer_cfg.keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    return final


def _log_setup(cfg: DictConfig, model_cfg: ModelConfig, corpus, data_report: dict) -> None:
    """Params: the composed config with the model's values as used (the vectors decide word_dim; a corpus without
    documents turns context_tokens off), plus each split's size; the full data report as an artifact."""
    params = store.flatten(OmegaConf.to_container(cfg, resolve=True))
    params.update({f"model.{k}": str(v) for k, v in asdict(model_cfg).items()})
    for split, stats in data_report["splits"].items():
        params.update({f"data_size.{split}.{k}": str(stats[k]) for k in ("sentences", "tokens", "entities")})
    mlflow.log_params(params)
    store.log_texts(
        {
            "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
            "data_report.json": json.dumps(data_report, indent=2),
        }
    )
    overrides = _hydra_overrides()
    if overrides:
        mlflow.set_tag("overrides", " ".join(overrides))
        store.log_texts({"hydra/overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(overrides))})  # as Hydra writes it
    from mlflow.data.huggingface_dataset import from_huggingface

    for split in corpus:
        with warnings.catch_warnings():  # "integer columns cannot hold missing values": `document` never misses one
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
            dataset = from_huggingface(
                corpus[split],
                path=str(cfg.data.path),
                name=f"{cfg.data.path}:{split}",
                digest=str(data_report.get("fingerprint", ""))[:20],
            )
            mlflow.log_input(dataset, context=split)


def _hydra_overrides() -> list[str]:
    """The command line's overrides, or none when composed without @hydra.main (tests, notebooks)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def _data_summary(data_report: dict) -> str:
    """A few lines a user can check before the first epoch: wrong data shows up here, not after an hour."""
    lines = [f"data: source scheme {data_report['source_scheme']}"]
    for split, st in data_report["splits"].items():
        types = ", ".join(f"{k} {v}" for k, v in st["entities_by_type"].items())
        cov = data_report.get("vectors", {}).get(split, {})
        vec = f", vectors cover {100 * cov['token_coverage']:.1f}% of tokens" if cov else ""
        lines.append(
            f"  {split}: {st['sentences']} sentences, {st['tokens']} tokens, {st['entities']} entities ({types}),"
            f" {st['invalid_sequences_repaired']} invalid sequences repaired{vec}"
        )
    if "train_with_dev" in data_report:
        lines.append(f"  training on train + validation: {data_report['train_with_dev']} sentences, no dev score")
    for split, limit in data_report.get("limited", {}).items():
        lines.append(f"  {split}: using the first {limit} sentences only (data.max_*_samples)")
    if data_report.get("labels_only_in_eval"):
        lines.append(f"  warning: labels never seen in training: {', '.join(data_report['labels_only_in_eval'])}")
    return "\n".join(lines)


def _epoch_metrics(res: EpochResult) -> dict[str, float]:
    return {
        "train_loss": res.train_loss,
        "tokens_per_s": res.tokens_per_s,
        "lr": res.lr,
        "seconds": res.seconds,
        **{f"dev_{k}": v for k, v in res.dev.items()},
    }


def _evaluate(model: Tagger, splits: dict[str, Sentences], run: RunConfig) -> dict[str, float]:
    """Calibrate, then score dev and test once with the best-on-dev weights; log the files a person reads."""
    engine = Engine(model, batch_size=run.trainer.eval_batch_size, device=run.trainer.device)
    train_words = [w for sent in splits["train"].tokens for w in sent]
    with tempfile.TemporaryDirectory() as tmp:
        found = assess(engine, splits, run.evaluation, train_words, Path(tmp))
        for image in found.images:
            mlflow.log_artifact(str(image))
    store.log_texts(found.files)
    print("\n" + found.files["scores.md"], flush=True)
    if run.evaluation.calibrate and "validation" in splits:
        print(f"entity scores calibrated on dev: temperature {found.temperature:.3f}", flush=True)
    return found.metrics


def _description(final: dict[str, float]) -> str:
    """The run's description, the first thing its MLflow page shows under the tags: the headline scores."""
    nan = float("nan")
    text = f"**test F1 {final.get('test_f1', nan):.2f}** (strict {final.get('test_f1_strict', nan):.2f})"
    if "best_dev_f1" in final:
        text += f" · dev F1 {final['best_dev_f1']:.2f} · best epoch {final['best_epoch']} of {final['epochs']}"
    else:
        text += f" · trained on train + dev for {final['epochs']} epochs (no dev score; the last epoch is the model)"
    if "test_ece" in final and "temperature" in final:
        text += (
            f" · entity scores calibrated on dev (temperature {final.get('temperature', nan):.2f}): test ECE"
            f" {final['test_ece_uncalibrated']:.2f}% → {final['test_ece']:.2f}%"
        )
    return text


STOP = threading.Event()  # set by the app's signal handler; ner/train.py names it as pipeline.STOP, so that
# cloudpickle never copies the Event (a lock) with a launcher's job


def request_stop(signum, frame) -> None:
    """First SIGINT/SIGTERM: finish the current batch, then stop (run KILLED, checkpoint kept). Second: now."""
    if STOP.is_set():
        raise KeyboardInterrupt(f"signal {signum}")
    STOP.set()
    print(f"\nsignal {signum}: stopping after this batch (send again to stop at once)", file=sys.stderr, flush=True)
