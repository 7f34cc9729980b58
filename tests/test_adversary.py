"""train.language_adversary: a gradient-reversed language classifier on the embeddings, trained with the run."""

import pytest
import torch
from test_train import interrupt_after, quick

from sourcetrace.config import Config, LossConfig
from sourcetrace.errors import ConfigError
from sourcetrace.losses import LOSSES
from sourcetrace.losses.adversary import LanguageAdversary, reverse_gradient
from sourcetrace.training.loop import train


def test_reverse_gradient_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -0.25))


def test_adversary_trains_its_classifier_and_pushes_the_embeddings_the_other_way():
    """One small step on the adversary's term alone: the classifier's cross-entropy falls; the same step taken by
    the embeddings (the reversed gradient) makes the language harder to read, i.e. the cross-entropy rises."""
    torch.manual_seed(0)
    adv = LanguageAdversary(LOSSES["angleproto"](8, 4, LossConfig()), n_languages=3, weight=1.0)
    emb = torch.randn(12, 8, requires_grad=True)
    labels, languages = torch.arange(4).repeat_interleave(3), torch.arange(3).repeat(4)

    def cross_entropy(x):  # the adversary's, on the unit sphere where it reads the embeddings
        return torch.nn.functional.cross_entropy(adv.classifier(torch.nn.functional.normalize(x, dim=1)), languages)

    term = adv(emb, labels, languages).loss - adv.loss(emb, labels).loss
    assert term.item() == pytest.approx(cross_entropy(emb).item(), rel=1e-5)
    term.backward()
    with torch.no_grad():
        moved_embeddings = cross_entropy(emb - 0.05 * emb.grad).item()
        for p in adv.classifier.parameters():
            p -= 0.05 * p.grad
        moved_classifier = cross_entropy(emb).item()
    assert moved_classifier < term.item() < moved_embeddings


def test_a_run_with_the_adversary_saves_and_resumes_its_classifier(tiny_corpus, tmp_path):
    cfg = quick(tiny_corpus, **{"train.language_adversary": 0.3, "train.eval_test": False})
    full = train(cfg, tmp_path / "full")
    state = torch.load(tmp_path / "full" / "last" / "state.pt", weights_only=True)
    assert any(k.startswith("classifier.") for k in state["loss"])
    interrupt_after(cfg, tmp_path / "cut", 1)
    resumed = train(cfg, tmp_path / "cut", resume_from=tmp_path / "cut" / "last")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    plain = train(quick(tiny_corpus, **{"train.eval_test": False}), tmp_path / "plain")
    assert plain.history[0]["train_loss"] != full.history[0]["train_loss"]  # the adversary's term is in the loss


def test_negative_adversary_weight_is_a_config_error():
    with pytest.raises(ConfigError, match="train.language_adversary=-0.1 is out of range"):
        Config.from_dict({"train.language_adversary": -0.1}).check_ranges()
