"""The training loop's schedule and weight averaging, on a plain module (the loop only needs parameters)."""

import pytest
import torch

from ner.training.trainer import Average, Loop, TrainerConfig


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


@pytest.mark.parametrize("bad", [{"ema_decay": 1.0}, {"anneal_factor": 0.0}, {"anneal_patience": -1}])
def test_out_of_range_schedule_settings_are_refused(bad):
    with pytest.raises(ValueError, match="trainer"):
        TrainerConfig(**bad)
