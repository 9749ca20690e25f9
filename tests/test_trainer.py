"""The training loop: its schedule and weight averaging on a plain module (the loop only needs parameters), and
its stopping rules and best-weights restore with the real `fit` on the tiny corpus."""

import copy
from types import SimpleNamespace

import mlflow
import pytest
import torch

from ner.training import trainer
from ner.training.trainer import Average, Loop, TrainerConfig, fit
from tests.conftest import compose_train


def test_plateau_annealing_multiplies_the_lr_after_patience_epochs_without_a_better_dev_f1():
    cfg = TrainerConfig(lr=0.1, lr_decay=0.0, anneal_patience=2, anneal_factor=0.5)
    loop = Loop(torch.nn.Linear(3, 2), cfg, seed=0)
    lrs = []
    for epoch, improved in enumerate([True, False, False, False, False, True, False], start=1):
        loop.epoch = epoch
        if improved:
            loop.result.best_epoch = epoch
        loop.optimizer.step()  # no gradients: a no-op, in the order torch expects
        loop.anneal()
        loop.schedule.step()
        lrs.append(loop.optimizer.param_groups[0]["lr"])
    # halved 2 and 4 epochs after the best (epochs 3 and 5); a new best (epoch 6) restarts the count
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025])


def test_annealing_is_off_by_default_and_the_inverse_decay_still_applies():
    loop = Loop(torch.nn.Linear(3, 2), TrainerConfig(lr=0.1, lr_decay=0.5), seed=0)
    for epoch in range(1, 5):
        loop.epoch = epoch
        loop.optimizer.step()  # no gradients: a no-op, in the order torch expects
        loop.anneal()
        loop.schedule.step()
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / (1 + 0.5 * 4))


def test_a_linear_schedule_reaches_lr_over_n_in_the_last_of_n_epochs():
    loop = Loop(torch.nn.Linear(3, 2), TrainerConfig(lr=0.1, lr_schedule="linear", max_epochs=4), seed=0)
    lrs = [loop.optimizer.param_groups[0]["lr"]]
    for epoch in range(1, 4):
        loop.epoch = epoch
        loop.optimizer.step()  # no gradients: a no-op, in the order torch expects
        loop.schedule.step()
        lrs.append(loop.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.075, 0.05, 0.025])


def test_the_time_budget_moves_the_end_of_a_linear_schedule_to_the_last_epoch_that_fits():
    cfg = TrainerConfig(lr=0.1, lr_schedule="linear", max_epochs=100, max_minutes=1)
    assert trainer.epochs_that_fit(cfg, done=2, elapsed=30.0) == 4  # 15 s an epoch, 60 s in all
    assert trainer.epochs_that_fit(cfg, done=1, elapsed=0.5) == 100  # max_epochs comes first
    assert trainer.epochs_that_fit(cfg, done=1, elapsed=90.0) == 1  # over budget: the run ends with this epoch
    loop = Loop(torch.nn.Linear(3, 2), cfg, seed=0)
    for epoch in range(1, 4):  # as fit does after each epoch: the estimate first, then the step
        loop.epoch, loop.last_epoch = epoch, trainer.epochs_that_fit(cfg, done=epoch, elapsed=15.0 * epoch)
        loop.optimizer.step()
        loop.schedule.step()
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 4)  # the 4th epoch, the last that fits


def test_the_average_follows_the_weights_and_is_only_swapped_in_inside_the_block():
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    average = Average(model, decay=0.75)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(4.0)
    average.update()  # average = 0.75 * start + 0.25 * (start + 4) = start + 1
    trained = [p.detach().clone() for p in model.parameters()]
    with average.swapped_in():
        for p, s in zip(model.parameters(), start, strict=True):
            torch.testing.assert_close(p.detach(), s + 1.0)
    for p, t in zip(model.parameters(), trained, strict=True):
        assert torch.equal(p.detach(), t)


def test_a_checkpoint_carries_the_schedule_scale_and_the_average():
    cfg = TrainerConfig(lr=0.1, anneal_patience=1, ema_decay=0.5)
    loop = Loop(torch.nn.Linear(3, 2), cfg, seed=0)
    loop.lr_scale = 0.25
    torch._foreach_add_(loop.average.weights, 1.0)
    state = loop.state()
    fresh = Loop(torch.nn.Linear(3, 2), cfg, seed=1)
    fresh.restore(state)
    assert fresh.lr_scale == 0.25
    for a, b in zip(fresh.average.weights, loop.average.weights, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "bad", [{"ema_decay": 1.0}, {"anneal_factor": 0.0}, {"anneal_patience": -1}, {"swa_from": -1},
            {"ema_decay": 0.99, "swa_from": 3}, {"lr_schedule": "cosine"}]
)  # fmt: skip
def test_out_of_range_schedule_settings_are_refused(bad):
    with pytest.raises(ValueError, match="trainer"):
        TrainerConfig(**bad)


def tiny_fit(tmp_path, *overrides: str):
    """A fresh model with the encoded train split, the dev split, the trainer config and the seed, built from the
    real conf/ on the tiny corpus as `ner.training.pipeline.train` builds them."""
    from ner.data import schemes
    from ner.data.corpus import Sentences
    from ner.training import pipeline

    run = pipeline.RunConfig.of(compose_train(tmp_path, *overrides))
    pipeline.seed_everything(run.seed)
    _, corpus, _, featurizer, model = pipeline.build(run)
    train, dev = Sentences.of(corpus["train"]), Sentences.of(corpus["validation"])
    gold = [schemes.convert(t, run.data.train_scheme) for t in train.gold]
    encoded = featurizer.encode(train.tokens, gold, train.documents)
    return model, encoded, dev, run.trainer, run.seed


def script_dev_f1(monkeypatch, values: list[float]) -> None:
    """The loop reads dev F1 `values[e - 1]` after epoch e (the other dev scores stay the real ones)."""
    real, script = trainer.metrics.score, iter(values)

    def score(gold, pred):
        return {**real(gold, pred), "f1": next(script)}

    monkeypatch.setattr(trainer, "metrics", SimpleNamespace(score=score))


@pytest.mark.parametrize(("minutes", "epochs"), [(1.5, 1), (3.5, 3)])
def test_the_time_budget_stops_training_before_another_epoch_would_overrun_it(tmp_path, monkeypatch, minutes, epochs):
    """A fake clock: each epoch takes one minute, each reading of the clock a millisecond."""
    clock = [0.0]

    def perf_counter() -> float:
        clock[0] += 1e-3
        return clock[0]

    real_epoch = trainer.train_epoch

    def minute_long_epoch(*args, **kwargs):
        clock[0] += 60.0
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(trainer, "train_epoch", minute_long_epoch)
    model, train, dev, cfg, seed = tiny_fit(
        tmp_path, "trainer.max_epochs=20", "trainer.patience=0", f"trainer.max_minutes={minutes}"
    )
    result = fit(model, train, dev, cfg, seed)
    # e.g. 3.5 minutes: after 3 epochs (3 minutes) a 4th would end at 4 > 3.5, so there is no 4th
    assert (result.stopped, len(result.history)) == ("time budget", epochs)
    assert epochs * 60 < result.seconds < 60 * minutes


def test_patience_stops_after_that_many_epochs_without_a_better_dev_f1(tmp_path, monkeypatch):
    # a tie (epochs 3 and 7) is no improvement; a new best (epoch 5) starts the count again: 6, 7, 8 -> stop
    script_dev_f1(monkeypatch, [10.0, 30.0, 30.0, 20.0, 40.0, 35.0, 40.0, 39.0, 90.0, 90.0, 90.0, 90.0])
    model, train, dev, cfg, seed = tiny_fit(tmp_path, "trainer.max_epochs=12", "trainer.patience=3")
    result = fit(model, train, dev, cfg, seed)
    assert result.stopped == "patience"
    assert [h.epoch for h in result.history] == list(range(1, 9))
    assert (result.best_epoch, result.best_dev_f1) == (5, 40.0)


def test_the_best_dev_weights_are_restored_before_the_test_score(tmp_path, monkeypatch):
    """Dev F1 peaks at epoch 2 of 4: the model scored on test (and saved) holds epoch 2's weights, not epoch 4's."""
    from ner.data.corpus import Sentences, load_corpus
    from ner.evaluation import metrics
    from ner.model.engine import Engine
    from ner.training import pipeline

    script_dev_f1(monkeypatch, [20.0, 60.0, 40.0, 30.0])
    states, seen = {}, {}
    real_fit = pipeline.fit

    def recording_fit(model, *args, on_epoch, **kwargs):
        def snapshot(res):  # the weights at the end of each epoch, copied outside the loop's own bookkeeping
            states[res.epoch] = copy.deepcopy(model.state_dict())
            on_epoch(res)

        seen["result"] = real_fit(model, *args, on_epoch=snapshot, **kwargs)
        seen["model"] = model
        return seen["result"]

    monkeypatch.setattr(pipeline, "fit", recording_fit)
    cfg = compose_train(
        tmp_path, "trainer.max_epochs=4", "trainer.patience=0", "tracking.log_model=false", "tracking.experiment=best"
    )
    final = pipeline.train(cfg)
    model, result = seen["model"], seen["result"]
    assert result.best_epoch == final["best_epoch"] == 2 and sorted(states) == [1, 2, 3, 4]

    def same(a: dict, b: dict) -> bool:
        assert a.keys() == b.keys()
        return all(torch.equal(a[k], b[k]) for k in a)

    assert not same(states[2], states[4])  # training moved the weights after the best epoch
    assert same(model.state_dict(), states[2]) and same(model.state_dict(), result.best_state)

    corpus, _ = load_corpus(pipeline.RunConfig.of(cfg).data)
    test = Sentences.of(corpus["test"])
    rescored = metrics.score(test.gold, Engine(model).predict(test.tokens, test.documents))["f1"]
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(final["run_id"])
    assert final["test_f1"] == run.data.metrics["test/f1"] == rescored


@pytest.mark.parametrize("bad", [{"clip": -1.0}, {"lr": -0.1}, {"lr": 0.0}, {"max_epochs": 0}])
def test_values_that_make_a_run_meaningless_are_refused(bad):
    """trainer.clip=-1 used to train by gradient ascent and end FINISHED."""
    with pytest.raises(ValueError, match=f"trainer.{next(iter(bad))}="):
        TrainerConfig(**bad)


def test_a_run_without_a_validation_file_trains_on_a_held_out_dev_and_finishes(tmp_path):
    import shutil

    from ner.training.pipeline import train
    from tests.conftest import TINY

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.txt", "test.txt"):
        shutil.copy(TINY / name, data / name)
    final = train(
        compose_train(tmp_path, f"data.path={data}", "trainer.max_epochs=2", "tracking.log_model=false")
    )  # no KeyError: 'best_dev_f1' after the last epoch
    assert final["epochs"] == 2 and "best_dev_f1" in final


def test_a_failed_checkpoint_write_leaves_no_temporary_file_and_says_what_to_do(tmp_path):
    """A full disk: a 64 KiB tmpfs (root only), a first checkpoint that fits and a second that does not."""
    import subprocess

    from ner.training import checkpoint

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here: needs root")
    try:
        path = disk / "run" / "last.pt"
        checkpoint.save(path, {"epoch": 1, "w": torch.zeros(1000)})
        (path.parent / ".last.pt.tmp-4242").write_bytes(b"x" * 1000)  # of a run killed mid-write
        with pytest.raises(
            checkpoint.CheckpointError, match=r"cannot write the checkpoint .*; the previous checkpoint"
        ):
            checkpoint.save(path, {"epoch": 2, "w": torch.zeros(100_000)})
        assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file keeps the disk full
        assert checkpoint.load(path)["epoch"] == 1
        checkpoint.save(path, {"epoch": 3, "w": torch.zeros(1000)})  # the next write works
        assert checkpoint.load(path)["epoch"] == 3
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_truncated_checkpoint_is_one_line_saying_what_to_do_and_the_run_is_left_alone(tmp_path):
    from ner.training import checkpoint
    from ner.training.pipeline import train

    cfg = ("tracking.experiment=cut", f"trainer.checkpoint_dir={tmp_path / 'ckpt'}", "trainer.keep_checkpoint=true",
           "trainer.max_epochs=1", "tracking.log_model=false")  # fmt: skip
    run_id = train(compose_train(tmp_path, *cfg))["run_id"]
    path = checkpoint.folder(tmp_path / "ckpt", run_id) / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match=r"last.pt is not a readable checkpoint .*; delete it") as err:
        train(compose_train(tmp_path, *cfg, f"trainer.resume={run_id}"))
    assert "\n" not in str(err.value)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FINISHED"  # not turned FAILED by a resume that could not start


def test_swa_makes_the_model_the_mean_of_the_weights_at_the_ends_of_the_epochs_it_averages(tmp_path):
    """Train + dev (no dev to select on), 4 epochs averaged from the 2nd: the model is the mean of the raw weights
    after epochs 2, 3 and 4, and the weights trained on from the raw ones (epoch 1 is outside the mean)."""
    model, train, _, cfg, seed = tiny_fit(tmp_path, "trainer.max_epochs=4", "trainer.swa_from=2")
    ends = {}

    def snapshot(res):  # on_epoch runs with the model's own (raw) weights in place
        ends[res.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    fit(model, train, None, cfg, seed, on_epoch=snapshot)
    assert sorted(ends) == [1, 2, 3, 4]
    for name, value in model.state_dict().items():
        mean = sum(ends[e][name].double() for e in (2, 3, 4)) / 3
        torch.testing.assert_close(value.double(), mean, rtol=1e-5, atol=1e-6)
    moved = [k for k, v in ends[4].items() if v.is_floating_point() and not torch.equal(v, ends[3][k])]
    assert moved, "training moved no weight between epochs 3 and 4: the mean would pass trivially"


def test_with_swa_dev_is_scored_on_the_average_from_its_first_epoch_on(tmp_path, monkeypatch):
    """The kept best state is the average: dev peaks at epoch 3 of 3 (scripted), averaged from epoch 2, so the
    model is the mean of the weights after epochs 2 and 3, not epoch 3's own."""
    script_dev_f1(monkeypatch, [10.0, 20.0, 30.0])
    model, train, dev, cfg, seed = tiny_fit(tmp_path, "trainer.max_epochs=3", "trainer.swa_from=2")
    ends = {}
    fit(model, train, dev, cfg, seed, on_epoch=lambda r: ends.update({r.epoch: copy.deepcopy(model.state_dict())}))
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, ends[3][k]))
    torch.testing.assert_close(model.state_dict()[name], (ends[2][name] + ends[3][name]) / 2)
