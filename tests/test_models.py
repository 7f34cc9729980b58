"""Thin-ResNet-34 and pooling: size, shapes, determinism, gradients, mixed precision, registry."""

from __future__ import annotations

import pytest
import torch

from sourcetrace.config import Config
from sourcetrace.models import build_model
from sourcetrace.models.pooling import POOLINGS, AttentiveStatsPooling, SelfAttentivePooling
from sourcetrace.models.thin_resnet34 import ThinResNet34

# Exact counts: 1,371,030 backbone + SAP parameters, plus (128 + 1) x D for the final linear.
PARAMS = {10: 1_372_320, 50: 1_377_480, 200: 1_396_830, 512: 1_437_078}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dim", sorted(PARAMS))
def test_parameter_count_and_embedding_sizes(dim):
    model = build_model(Config.from_dict({"model.embedding_dim": dim}))
    assert isinstance(model, ThinResNet34) and model.embedding_dim == dim
    assert n_params(model) == PARAMS[dim]
    assert 1.3e6 <= n_params(model) <= 1.5e6  # the paper's "~1.4 M"
    assert model.eval()(torch.randn(2, 32000)).shape == (2, dim)


def test_from_config_reads_channels_and_features():
    cfg = Config.from_dict({"model.channels": 8, "features.n_mels": 64, "model.embedding_dim": 20})
    model = ThinResNet34.from_config(cfg)
    assert model.fbank.n_mels == 64 and model.conv1.out_channels == 8 and model.fc.in_features == 64
    assert model.eval()(torch.randn(1, 16000)).shape == (1, 20)


@pytest.mark.parametrize("samples", [3200, 32000, 16000 * 6, 16000 * 6 + 123])
def test_variable_crop_lengths(samples):
    model = ThinResNet34(50).eval()
    with torch.no_grad():
        frames = model.frame_features(torch.randn(2, samples))
        out = model(torch.randn(2, samples))
    assert frames.shape[:2] == (2, 128) and frames.shape[2] == -(-(samples // 160 + 1) // 4)
    assert out.shape == (2, 50) and torch.isfinite(out).all()


def test_eval_is_deterministic_and_batch_independent():
    model, wave = ThinResNet34(50).eval(), torch.randn(3, 32000)
    with torch.no_grad():
        a, b = model(wave), model(wave)
        single = model(wave[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:2], single, atol=1e-5, rtol=1e-4)


def test_gradient_reaches_every_parameter():
    model = ThinResNet34(50).train()
    emb = model(torch.randn(4, 32000))
    (emb.pow(2).sum() + emb[:, 0].sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_runs_under_cpu_bf16_autocast():
    model, wave = ThinResNet34(50), torch.randn(4, 32000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = model.train()(wave)
    assert emb.shape == (4, 50) and torch.isfinite(emb.float()).all()
    emb.float().sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.eval()(wave).float()
    with torch.no_grad():
        full = model(wave)
    cos = torch.nn.functional.cosine_similarity(low, full, dim=1)
    assert (cos > 0.98).all()  # bf16 embeddings point where fp32 ones do


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast_matches_fp32():
    model, wave = ThinResNet34(50).cuda().eval(), torch.randn(4, 32000, device="cuda")
    with torch.no_grad():
        full = model(wave)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(wave).float()
    assert (torch.nn.functional.cosine_similarity(low, full, dim=1) > 0.98).all()


def test_pooling_and_last_linear_stay_fp32_under_bf16_autocast():
    model, wave = ThinResNet34(16, channels=8).eval(), torch.randn(2, 16000)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        frames = model.frame_features(wave)
        emb = model(wave)
    assert frames.dtype == torch.bfloat16 and emb.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(emb, model.fc(model.pool(frames.float())))


@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_pooling_shapes_and_thin_resnet_option(name):
    pool = POOLINGS[name](16)
    x = torch.randn(3, 16, 9)
    assert pool(x).shape == (3, pool.out_dim)
    w = pool.weights(x)
    assert w.shape == (3, 9, 1)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3, 1))
    model = ThinResNet34(50, pooling=name).eval()
    assert model(torch.randn(2, 16000)).shape == (2, 50)


def test_sap_with_flat_attention_is_the_mean_and_asp_adds_the_std():
    x = torch.randn(2, 8, 11)
    sap = SelfAttentivePooling(8)
    asp = AttentiveStatsPooling(8)
    with torch.no_grad():
        sap.attention.zero_()
        asp.attention.zero_()
    torch.testing.assert_close(sap(x), x.mean(dim=2))
    expected = torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)
    torch.testing.assert_close(asp(x), expected, atol=1e-5, rtol=1e-4)


def test_sap_attends_to_the_salient_frame():
    sap = SelfAttentivePooling(4)
    with torch.no_grad():
        sap.linear.weight.copy_(torch.eye(4))
        sap.linear.bias.zero_()
        sap.attention.copy_(torch.tensor([[50.0], [0.0], [0.0], [0.0]]))
    x = torch.zeros(1, 4, 5)
    x[0, :, 3] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(sap(x), x[:, :, 3], atol=1e-4, rtol=0)


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="unknown pooling 'xvec'; valid: asp, sap"):
        ThinResNet34(50, pooling="xvec")


@pytest.mark.parametrize(("n_mels", "rows"), [(40, 5), (64, 8), (80, 10)])
def test_flatten_head_keeps_each_frequency_row(n_mels, rows):
    """model.frequency=flatten (ResNetSE34V2): the last stage's frequency rows become channels, not a mean."""
    cfg = Config.from_dict(
        {"model.channels": 8, "features.n_mels": n_mels, "model.frequency": "flatten", "model.pooling": "asp"}
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        frames = model.frame_features(torch.randn(2, 16000))
        trunk = model.stages(model.relu(model.bn1(model.conv1(model.fbank(torch.randn(2, 16000)).unsqueeze(1)))))
    assert trunk.shape[2] == rows and frames.shape[1] == 64 * rows
    assert model.pool.out_dim == 2 * 64 * rows and model(torch.randn(2, 16000)).shape == (2, 50)


def test_unknown_head_options_are_config_errors():
    from sourcetrace.errors import ConfigError
    from sourcetrace.validation import validate

    with pytest.raises(ConfigError, match="model.frequency='rows' is not one of mean, flatten"):
        validate(Config.from_dict({"model.frequency": "rows"}))
    with pytest.raises(ConfigError, match="model.pooling='xvec' is not one of sap, asp"):
        validate(Config.from_dict({"model.pooling": "xvec"}))


def test_band_stats_give_back_what_instance_norm_removes():
    """model.band_stats: a gain change is invisible to the instance-normalised trunk; the band means carry it
    (with the raw input level, features.level=none; the default level=rms takes the gain out before)."""
    wave = torch.randn(2, 16000) * torch.linspace(0.2, 1.0, 16000)  # not stationary: each band has a spread
    raw = {"model.channels": 8, "features.level": "none"}
    plain = build_model(Config.from_dict(raw)).eval()
    with_stats = build_model(Config.from_dict(raw | {"model.band_stats": True})).eval()
    levelled = build_model(Config.from_dict({"model.channels": 8, "model.band_stats": True})).eval()
    assert with_stats.fc.in_features == plain.fc.in_features + 2 * 40
    assert n_params(with_stats) == n_params(plain) + 80 * 50 + 2 * 80  # the linear's new inputs and the norm
    with torch.no_grad():
        x, stats = with_stats.fbank.with_band_stats(wave)
        x2, stats2 = with_stats.fbank.with_band_stats(wave * 4)
        torch.testing.assert_close(x, x2, atol=1e-3, rtol=0)  # the trunk's input ignores the gain
        torch.testing.assert_close(
            stats2[:, :40] - stats[:, :40],
            torch.full((2, 40), 2 * torch.log(torch.tensor(4.0)).item()),
            atol=1e-3,
            rtol=0,
        )
        torch.testing.assert_close(stats2[:, 40:], stats[:, 40:], atol=1e-3, rtol=0)  # the spread is gain-free
        torch.testing.assert_close(plain(wave), plain(wave * 4), atol=1e-4, rtol=0)
        assert (with_stats(wave) - with_stats(wave * 4)).abs().max() > 1e-3
        torch.testing.assert_close(levelled(wave), levelled(wave * 4), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="built with band_stats"):
        with_stats.embed_fbank(x)


def test_band_stats_dropout_drops_whole_branch_of_some_training_clips():
    cfg = {"model.channels": 8, "model.band_stats": True, "model.band_stats_dropout": 0.5}
    model = build_model(Config.from_dict(cfg))
    seen = []
    model.fc.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, -80:].detach()))
    wave = torch.randn(64, 8000)
    model.train()(wave)
    model.eval()(wave)
    dropped = [int((stats.abs().sum(1) == 0).sum()) for stats in seen]
    assert 16 <= dropped[0] <= 48 and dropped[1] == 0  # about half while training, none when embedding
    kept = seen[0][seen[0].abs().sum(1) > 0]
    assert kept.std(0).mean() > 1.5  # batch-normalised, then scaled by 1 / (1 - p) = 2


def test_band_stats_dropout_out_of_range_is_a_config_error():
    from sourcetrace.errors import ConfigError
    from sourcetrace.validation import validate

    with pytest.raises(ConfigError, match="model.band_stats_dropout=1.0 is out of range"):
        validate(Config.from_dict({"model.band_stats_dropout": 1.0}))


def test_band_stats_dim_projects_the_statistics_to_k_numbers():
    cfg = {"model.channels": 8, "model.band_stats": True, "model.band_stats_dim": 8}
    model = build_model(Config.from_dict(cfg)).eval()
    plain = build_model(Config.from_dict({"model.channels": 8})).eval()
    assert model.fc.in_features == plain.fc.in_features + 8
    assert n_params(model) == n_params(plain) + 2 * 80 + (80 * 8 + 8) + 8 * 50
    with torch.no_grad():
        assert model(torch.randn(3, 16000)).shape == (3, 50)
