"""wav2vec2 front end + AASIST: loading (local folder, offline hub), layers, fine-tuning modes, counts.

A tiny random Wav2Vec2Config is saved with save_pretrained and loaded back through ssl.source, the
same path users take with a real XLS-R folder (no model can be downloaded here).
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from sourcetrace.config import Config
from sourcetrace.errors import ConfigError
from sourcetrace.models import build_model
from sourcetrace.models.aasist import W2V2AASIST
from sourcetrace.models.w2v2 import XLSR_300M_CONFIG, SSLFrontEnd, ssl_param_count, wants_normalization

# XLS-R 300M: 315,438,720 in Wav2Vec2Model (incl. the 1,024-d SpecAugment mask vector, unused here);
# AASIST adds 446,730 + 161 x (D - 2) (131,200 of it the 1024 -> 128 projection).
XLSR_SSL_PARAMS = 315_438_720
FULL_PARAMS = {10: 315_886_738, 50: 315_893_178, 200: 315_917_328, 512: 315_967_560}

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 8, 8),
    conv_stride=(5, 8, 8),  # 320x down: 50 frames/s, as XLS-R
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    do_stable_layer_norm=True,
    feat_extract_norm="layer",
    conv_bias=True,
    mask_time_prob=0.075,
)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """A folder as a user makes it: model.save_pretrained + feature_extractor.save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny_w2v2")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return str(folder)


def cfg_for(source, **extra) -> Config:
    return Config.from_dict({"model.name": "w2v2_aasist", "ssl.source": source, **extra})


def reference_states(source, wave):
    """All hidden states of the unmodified model: 0..L-1 as HF records them, L = last_hidden_state."""
    ref = Wav2Vec2Model.from_pretrained(source).eval()
    norm = (wave - wave.mean(1, keepdim=True)) / torch.sqrt(wave.var(1, keepdim=True, unbiased=False) + 1e-7)
    with torch.no_grad():
        out = ref(norm, output_hidden_states=True)
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


@pytest.mark.parametrize("dim", [10, 50, 200, 512])
def test_forward_shapes_through_the_registry(tiny_source, dim):
    model = build_model(cfg_for(tiny_source, **{"model.embedding_dim": dim})).eval()
    assert isinstance(model, W2V2AASIST) and model.embedding_dim == dim
    with torch.no_grad():
        out = model(torch.randn(2, 32000))
    assert out.shape == (2, dim) and torch.isfinite(out).all()


def test_bf16_autocast_and_eval_lengths(tiny_source):
    model = build_model(cfg_for(tiny_source)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 16000 * 6))
    assert out.shape == (2, 50) and torch.isfinite(out.float()).all()
    with pytest.raises(ValueError, match="too short"):
        model(torch.randn(1, 800))


@pytest.mark.parametrize("layer", [0, 1, 2, -1, -2, -3])
def test_layer_selection_matches_the_full_model(tiny_source, layer):
    wave = torch.randn(2, 16000)
    states = reference_states(tiny_source, wave)
    front = SSLFrontEnd(cfg_for(tiny_source, **{"ssl.layer": layer}).ssl).eval()
    k = layer % 3
    assert len(front.model.encoder.layers) == k  # layers above the chosen one are not built
    with torch.no_grad():
        torch.testing.assert_close(front(wave), states[k])


def test_layer_out_of_range_names_the_key(tiny_source):
    for layer in (3, -4):
        with pytest.raises(ConfigError, match=r"ssl\.layer=.*2 transformer layers"):
            SSLFrontEnd(cfg_for(tiny_source, **{"ssl.layer": layer}).ssl)


def test_weighted_sum_of_all_hidden_states(tiny_source):
    wave = torch.randn(2, 16000)
    states = reference_states(tiny_source, wave)
    front = SSLFrontEnd(cfg_for(tiny_source, **{"ssl.weighted_layers": True}).ssl).eval()
    assert front.weights.shape == (3,) and len(front.model.encoder.layers) == 2
    with torch.no_grad():
        torch.testing.assert_close(front(wave), sum(states) / 3)  # zero init: the plain mean
        front.weights.copy_(torch.tensor([-30.0, 30.0, -30.0]))
        torch.testing.assert_close(front(wave), states[1])
    front.weights.data.zero_()
    front(wave).square().mean().backward()
    assert front.weights.grad is not None and front.weights.grad.abs().sum() > 0


def test_normalisation_follows_the_feature_extractor(tiny_source, tmp_path):
    model = build_model(cfg_for(tiny_source)).eval()
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model(3.0 * wave + 0.1), atol=1e-4, rtol=1e-4)
    assert model.frontend.normalize
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).save_pretrained(tmp_path)  # no preprocessor_config.json
    assert wants_normalization(str(tmp_path))  # "layer" models were trained on normalised input
    assert not wants_normalization(Wav2Vec2Config(**{**TINY, "feat_extract_norm": "group"}))


def _trainable_ssl(model):
    return {n for n, p in model.frontend.model.named_parameters() if p.requires_grad}


def test_finetune_modes_set_the_trainable_parameters(tiny_source):
    names = {n for n, _ in Wav2Vec2Model.from_pretrained(tiny_source).named_parameters()}
    full = build_model(cfg_for(tiny_source, **{"ssl.finetune": "full"}))
    assert _trainable_ssl(full) == names - {"masked_spec_embed"}
    frozen = build_model(cfg_for(tiny_source, **{"ssl.finetune": "frozen"}))
    assert _trainable_ssl(frozen) == set()
    assert all(p.requires_grad for p in frozen.backend.parameters())
    top = build_model(cfg_for(tiny_source, **{"ssl.finetune": "top", "ssl.top_layers": 1}))
    assert _trainable_ssl(top) == {n for n in names if n.startswith(("encoder.layers.1.", "encoder.layer_norm."))}
    counts = top.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for p in top.trainable_parameters()) < counts["total"]
    top.train()
    assert not top.frontend.model.feature_extractor.training and not top.frontend.model.encoder.layers[0].training
    assert top.frontend.model.encoder.layers[1].training and top.backend.training
    for model in (frozen, top):  # gradients reach exactly the trainable parameters
        model.train()
        model(torch.randn(2, 16000)).square().mean().backward()
        for p in model.parameters():
            assert (p.grad is not None) == p.requires_grad or p.numel() == 0


def test_top_layers_out_of_range_names_the_key(tiny_source):
    for n in (0, 3):
        with pytest.raises(ConfigError, match=r"ssl\.top_layers"):
            build_model(cfg_for(tiny_source, **{"ssl.finetune": "top", "ssl.top_layers": n}))


def test_gradient_checkpointing_gives_the_same_gradients(tiny_source):
    torch.manual_seed(0)
    plain = build_model(cfg_for(tiny_source))
    ckpt = build_model(cfg_for(tiny_source, **{"ssl.grad_checkpointing": True}))
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.frontend.model.is_activation_checkpointing and not plain.frontend.model.is_activation_checkpointing
    wave, grads = torch.randn(2, 16000), []
    for model in (plain, ckpt):
        model.train()
        torch.manual_seed(1)  # same dropout masks (checkpointing replays the RNG state)
        model(wave).square().mean().backward()
        grads.append(model.frontend.model.encoder.layers[0].feed_forward.output_dense.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def _espeak_clips(n_per_voice: int = 4, seconds: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Real synthetic speech: espeak-ng, two voices (the classes), resampled to 16 kHz."""
    import torchaudio.functional as AF

    texts = ["the quick brown fox", "please call me back", "a single step forward", "sea shells by the shore"]
    waves, labels = [], []
    for label, voice in enumerate(("en", "en+f3")):
        for text in texts[:n_per_voice]:
            raw = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
            wave, sr = sf.read(io.BytesIO(raw), dtype="float32")
            wave = AF.resample(torch.from_numpy(wave), sr, 16000).numpy()
            waves.append(np.resize(wave, int(seconds * 16000)))
            labels.append(label)
    return torch.from_numpy(np.stack(waves)), torch.tensor(labels)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng for real speech")
def test_a_few_steps_reduce_a_project_loss_on_real_speech(tiny_source):
    from sourcetrace.losses import LOSSES

    torch.manual_seed(0)
    wave, labels = _espeak_clips(seconds=1.0)
    model = build_model(cfg_for(tiny_source, **{"model.embedding_dim": 16}))
    cfg = Config.from_dict({"loss.name": "aamsoftmax"}).loss
    loss_fn = LOSSES["aamsoftmax"](16, 2, cfg)
    opt = torch.optim.Adam(model.trainable_parameters() + list(loss_fn.parameters()), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = loss_fn(model(wave), labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_unreachable_hub_names_both_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        build_model(cfg_for("sourcetrace-tests/no-such-wav2vec2"))
    text = str(err.value)
    assert "ssl.source='sourcetrace-tests/no-such-wav2vec2'" in text
    assert "local folder" in text and "save_pretrained" in text  # option 1
    assert "HF_HOME" in text and "hub reachable" in text and "HF_HUB_OFFLINE" in text  # option 2


def test_bad_local_folders_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        build_model(cfg_for(str(tmp_path / "missing" / "xlsr")))
    with pytest.raises(ConfigError, match="holds no loadable"):
        build_model(cfg_for(str(tmp_path)))


def test_xlsr_300m_parameter_count_without_weights():
    assert ssl_param_count(XLSR_300M_CONFIG) == XLSR_SSL_PARAMS
    for dim, expected in FULL_PARAMS.items():
        with torch.device("meta"):  # the full-size architecture, no memory, no download
            model = W2V2AASIST.from_config(Config.from_dict({"model.embedding_dim": dim}), XLSR_300M_CONFIG)
        counts = model.parameter_counts()
        assert counts["total"] == expected and counts["ssl"] == XLSR_SSL_PARAMS
        assert abs(expected - 315e6) / 315e6 < 0.005  # XLS-R 300m + AASIST: about 315 M parameters


@pytest.mark.slow
def test_trainer_runs_w2v2_aasist_on_the_tiny_corpus(tiny_corpus, tiny_source, tmp_path):
    """Two epochs of the real trainer with the tiny local wav2vec2, then the best checkpoint reloads."""
    from sourcetrace.training.checkpoint import load_model
    from sourcetrace.training.loop import train

    cfg = Config.from_dict(
        {
            "data.root": str(tiny_corpus),
            "data.crop_seconds": 1.0,
            "data.eval_seconds": 2.0,
            "data.short_clips": "pad",
            "model.name": "w2v2_aasist",
            "model.embedding_dim": 16,
            "ssl.source": tiny_source,
            "ssl.finetune": "top",
            "ssl.top_layers": 1,
            "ssl.layer": -1,
            "train.epochs": 2,
            "train.eval_every": 1,
            "train.warmup_epochs": 1,
            "train.steps_per_epoch": 2,
            "train.batch_size": 8,
            "train.lr": 1e-3,
            "train.eval_test": False,
            "train.device": "cpu",
        }
    )
    result = train(cfg, tmp_path / "run")
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert 0.0 <= result.best_metrics["dev_eer"] <= 100.0 and np.isfinite(result.history[-1]["train_loss"])
    loaded = load_model(tmp_path / "run")
    assert isinstance(loaded.model, W2V2AASIST) and not loaded.model.training
    with torch.no_grad():
        assert loaded.model(torch.randn(2, 16000)).shape == (2, 16)
