"""A stopped and resumed run continues exactly where an uninterrupted run would be."""

from __future__ import annotations

import pytest
import torch

from knnsvc.training.trainer import train
from tests.training.corpus import prematched_corpus
from tests.training.test_trainer import tiny_config


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path_factory):
    corpus, features = prematched_corpus(tmp_path_factory)
    # 6 training items / batch 2 = 3 updates per epoch: stopping at 4 is mid-epoch, after one
    # per-epoch learning-rate decay (lr_decay 0.5 makes a missed or doubled decay visible)
    settings = dict(max_steps=7, lr_decay=0.5, validation_interval=0, checkpoint_interval=0)
    straight_dir, resumed_dir = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    straight = train(tiny_config(straight_dir, corpus, features, **settings))
    first = train(tiny_config(resumed_dir, corpus, features, **{**settings, "max_steps": 4}))
    assert first.steps == 4 and first.epoch == 1
    second = train(tiny_config(resumed_dir, corpus, features, **settings))
    assert second.steps == 7 and second.epoch == straight.epoch == 2

    def losses(result):
        return [(e["train/loss_g"], e["train/loss_d"], e["train/mel_l1"]) for e in result.history]

    assert losses(first) + losses(second) == losses(straight)

    g_straight = torch.load(straight_dir / "g_00000007.pt", weights_only=True)["generator"]
    g_resumed = torch.load(resumed_dir / "g_00000007.pt", weights_only=True)["generator"]
    assert all(torch.equal(g_straight[key], g_resumed[key]) for key in g_straight)
    do_straight = torch.load(straight_dir / "do_00000007.pt", weights_only=True)
    do_resumed = torch.load(resumed_dir / "do_00000007.pt", weights_only=True)
    for name in ("mpd", "msd"):
        assert all(torch.equal(do_straight[name][k], do_resumed[name][k]) for k in do_straight[name])
    assert (
        do_straight["optim_d"]["param_groups"][0]["lr"]
        == do_resumed["optim_d"]["param_groups"][0]["lr"]
        == 2.5e-4
    )
    exp_avg = lambda state: [s["exp_avg"] for s in state["optim_g"]["state"].values()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(exp_avg(do_straight), exp_avg(do_resumed), strict=True))
