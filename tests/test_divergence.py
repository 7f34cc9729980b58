"""Divergence is a training failure naming the epoch and the learning rate; a non-finite lr is a config error."""

import pytest
import torch
from test_train import QUICK, quick

from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.errors import ConfigError, DivergenceError
from sourcetrace.training.faults import StepGuard, check_weights
from sourcetrace.training.loop import train
from sourcetrace.validation import validate


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_lr_is_rejected_by_validation(value):
    with pytest.raises(ConfigError, match=rf"train.lr={value.replace('-', '-?')}.* is not a finite number"):
        validate(Config.from_dict({"train.lr": value}))


def test_cli_train_with_lr_inf_is_one_line_before_any_data_is_read(tmp_path, capsys):
    code = main(["train", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--set", "train.lr=inf"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr=inf is not a finite number" in err[0]


def test_exploding_training_names_epoch_and_lr(tiny_corpus, tmp_path):
    """lr=1e6 keeps the loss finite but blows the weights up: caught after the epoch, not as a crash in EER."""
    cfg = quick(tiny_corpus, **{"train.lr": 1e6, "train.epochs": 1, "train.warmup_epochs": 0})
    with pytest.raises(DivergenceError, match=r"training diverged: .* at epoch 1 .*train.lr=1e\+06.*lower train.lr"):
        train(cfg, tmp_path / "run")


def test_cli_train_divergence_is_one_line(tiny_corpus, tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in QUICK.items()] + ["train.lr=1e6", "train.epochs=1", "train.warmup_epochs=0"]
    argv = ["train", "--root", str(tiny_corpus), "--out", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 1  # a runtime failure: the command was right
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and "train.lr=1e+06" in err[0]


def test_non_finite_embeddings_and_weights_are_caught():
    cfg = Config()
    emb, bad = torch.ones(4, 8), torch.ones(4, 8)
    bad[1, 2] = float("nan")
    guard = StepGuard(cfg, epoch=3, device=torch.device("cpu"), every=4)
    guard.record(1, torch.tensor(1.0), emb, lr_now=1e-4)
    guard.record(2, torch.tensor(1.0), bad, lr_now=2e-3)  # recorded, not read yet: no sync
    guard.record(3, torch.tensor(float("inf")), bad, lr_now=3e-3)  # a later bad step does not replace the first
    with pytest.raises(DivergenceError, match=r"non-finite embeddings at epoch 3, step 2 \(.*lr then 0.002"):
        guard.record(4, torch.tensor(1.0), emb, lr_now=4e-3)  # the 4th step reads the flag
    loss_guard = StepGuard(cfg, epoch=1, device=torch.device("cpu"))
    loss_guard.record(1, torch.tensor(float("nan")), emb, lr_now=1e-4)
    with pytest.raises(DivergenceError, match=r"non-finite loss \(nan\) at epoch 1, step 1"):
        loss_guard.check()  # the epoch's end reads it
    bn = torch.nn.BatchNorm1d(4)
    check_weights(cfg, [bn], epoch=5, lr_now=1e-4)
    bn.running_var[0] = float("inf")
    with pytest.raises(DivergenceError, match=r"non-finite values in running_var at epoch 5"):
        check_weights(cfg, [bn], epoch=5, lr_now=1e-4)
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight[0, 0] = 1e9
    with pytest.raises(DivergenceError, match=r"weights exploded \(max \|weight\| = 1e\+09\) at epoch 5"):
        check_weights(cfg, [lin], epoch=5, lr_now=1e-4)
