"""Losses: generic behaviour over every LOSSES entry, and each loss against its paper's equation
computed independently by hand (explicit loops in numpy) on a tiny hand-built batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sourcetrace.config import LossConfig
from sourcetrace.losses import LOSSES, LossOutput

D, C = 4, 3
LABELS = torch.tensor([2, 0, 1, 0, 2, 1])  # 3 classes x 2 clips, deliberately not ordered


def make(name: str, n_classes: int = C, dim: int = D, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return LOSSES[name](dim, n_classes, LossConfig(name=name, **kw))


def batch(seed: int = 0, labels: torch.Tensor = LABELS) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), D, generator=g, dtype=torch.float64).float()


def unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(sum(x * x for x in v))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(sum(x * y for x, y in zip(unit(a), unit(b))))


def cross_entropy(rows: list[list[float]], targets: list[int]) -> float:
    total = 0.0
    for row, t in zip(rows, targets):
        top = max(row)
        total += -(row[t] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / len(rows)


# -- generic, over every registry entry ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_loss_and_gradients_reach_embeddings_and_head(name):
    loss_fn = make(name)
    emb = batch().requires_grad_()
    out = loss_fn(emb, LABELS)
    assert isinstance(out, LossOutput) and out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    params = list(loss_fn.named_parameters())
    assert params, f"{name} owns no head parameters"
    for pname, p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    if out.logits is not None:
        assert out.logits.shape == (len(LABELS), C) and not out.logits.requires_grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_min_per_class_declared(name):
    expected = 2 if name in ("ge2e", "angleproto") else 1
    assert LOSSES[name].min_per_class == expected


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_decreases_on_separable_problem(name):
    torch.manual_seed(1)
    centres = torch.randn(C, 8) * 3
    x = centres.repeat_interleave(4, 0) + 0.3 * torch.randn(C * 4, 8)
    y = torch.arange(C).repeat_interleave(4)
    perm = torch.randperm(len(y))
    x, y = x[perm], y[perm]
    model = torch.nn.Linear(8, D)
    loss_fn = make(name)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=0.05)
    losses = []
    for _ in range(40):
        out = loss_fn(model(x), y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])
    if out.logits is not None:
        assert (out.logits.argmax(1) == y).float().mean() == 1.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_malformed_batches_name_the_problem(name):
    loss_fn = make(name)
    with pytest.raises(ValueError, match=r"\[batch, 4\]"):
        loss_fn(torch.randn(6, 5), LABELS)
    with pytest.raises(ValueError, match="labels must lie in"):
        loss_fn(batch(), torch.tensor([0, 0, 1, 1, 3, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        loss_fn(batch(), LABELS.float())


# -- classification losses against their equations ------------------------------------------------
def test_softmax_matches_hand_computation():
    loss_fn, emb = make("softmax"), batch()
    W, bias = loss_fn.fc.weight.detach().double().numpy(), loss_fn.fc.bias.detach().double().numpy()
    e = emb.double().numpy()
    rows = [[sum(W[c, d] * e[i, d] for d in range(D)) + bias[c] for c in range(C)] for i in range(len(e))]
    out = loss_fn(emb, LABELS)
    np.testing.assert_allclose(out.logits.numpy(), rows, rtol=1e-5, atol=1e-6)
    assert out.loss.item() == pytest.approx(cross_entropy(rows, LABELS.tolist()), rel=1e-5)


def _hand_cosines(loss_fn, emb):
    W, e = loss_fn.head.weight.detach().double().numpy(), emb.double().numpy()
    return [[cosine(e[i], W[c]) for c in range(C)] for i in range(len(e))]


def test_amsoftmax_target_and_nontarget_logits():
    loss_fn, emb = make("amsoftmax"), batch()
    s, m = 30.0, 0.3
    cos = _hand_cosines(loss_fn, emb)
    rows = [[s * (cos[i][c] - m) if c == y else s * cos[i][c] for c in range(C)] for i, y in enumerate(LABELS.tolist())]
    logits, _ = loss_fn.margin_logits(emb, LABELS)
    np.testing.assert_allclose(logits.detach().numpy(), rows, rtol=1e-5, atol=1e-4)
    out = loss_fn(emb, LABELS)
    np.testing.assert_allclose(out.logits.numpy(), s * np.array(cos), rtol=1e-5, atol=1e-4)
    assert out.loss.item() == pytest.approx(cross_entropy(rows, LABELS.tolist()), rel=1e-5)


def test_aamsoftmax_target_and_nontarget_logits_including_past_pi():
    loss_fn, emb = make("aamsoftmax"), batch()
    with torch.no_grad():  # clip 0 (label 2) points straight away from class 2: theta = pi, theta + m > pi
        emb[0] = -loss_fn.head.weight[2]
    s, m = 30.0, 0.3
    cos = _hand_cosines(loss_fn, emb)
    rows = []
    for i, y in enumerate(LABELS.tolist()):
        row = []
        for c in range(C):
            theta = math.acos(max(-1.0, min(1.0, cos[i][c])))
            if c != y:
                row.append(s * cos[i][c])
            elif theta + m < math.pi:
                row.append(s * math.cos(theta + m))
            else:  # past pi: keep the penalty monotone, cos(theta) - m*sin(m)
                row.append(s * (cos[i][c] - m * math.sin(m)))
        rows.append(row)
    assert math.acos(max(-1.0, cos[0][2])) + m > math.pi  # the branch is really exercised
    logits, _ = loss_fn.margin_logits(emb, LABELS)
    np.testing.assert_allclose(logits.detach().numpy(), rows, rtol=1e-4, atol=1e-3)
    assert logits[0, 2].item() == pytest.approx(s * (-1.0 - m * math.sin(m)), abs=1e-3)
    out = loss_fn(emb, LABELS)
    assert out.loss.item() == pytest.approx(cross_entropy(rows, LABELS.tolist()), rel=1e-4)


def test_aamsoftmax_is_stable_at_cos_plus_minus_one():
    loss_fn = make("aamsoftmax")
    emb = torch.cat([loss_fn.head.weight[:1], -loss_fn.head.weight[:1]]).detach().clone().requires_grad_()
    out = loss_fn(emb, torch.tensor([0, 0]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(emb.grad).all()


# -- metric losses against their equations --------------------------------------------------------
def _w_b(loss_fn) -> tuple[float, float]:
    return float(loss_fn.scale.w.detach()), float(loss_fn.scale.b.detach())


def test_ge2e_matches_hand_computation_with_leave_one_out():
    loss_fn, emb = make("ge2e", init_w=7.0, init_b=-2.0), batch()
    w, b = _w_b(loss_fn)
    assert w == pytest.approx(7.0, rel=1e-6) and b == -2.0
    e = [unit(v) for v in emb.double().numpy()]  # Wan et al.: normalised d-vectors
    y = LABELS.tolist()
    classes = sorted(set(y))
    rows, targets = [], []
    for i in range(len(e)):
        row = []
        for k in classes:
            members = [j for j in range(len(e)) if y[j] == k and j != i]  # leave the query out of its own class
            centroid = np.mean([e[j] for j in members], axis=0)
            row.append(w * cosine(e[i], centroid) + b)
        rows.append(row)
        targets.append(classes.index(y[i]))
    out = loss_fn(emb, LABELS)
    assert out.loss.item() == pytest.approx(cross_entropy(rows, targets), rel=1e-5)
    np.testing.assert_allclose(out.logits.numpy(), rows, rtol=1e-5, atol=1e-5)  # batch order, class columns


def test_ge2e_leave_one_out_centroid_exact_value():
    """3 clips of class 0 on the axes e1, e2, e3: the query e1's own centroid is (0, .5, .5, 0), cos = 0
    exactly (the all-clips centroid would give cos = 1/sqrt(3)); so S = w*0 + b = b."""
    loss_fn = make("ge2e", init_w=10.0, init_b=-5.0)
    eye = torch.eye(4)
    emb = torch.stack([eye[0], eye[1], eye[2], eye[3], eye[3], -eye[0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    s, _, _ = loss_fn.similarities(emb, labels)
    assert s[0, 0, 0].item() == pytest.approx(-5.0, abs=1e-6)
    # vs class 1's full centroid (e4 + e4 - e1)/3: cos(e1, .) = -1/sqrt(5)
    assert s[0, 0, 1].item() == pytest.approx(10.0 * (-1 / math.sqrt(5)) - 5.0, abs=1e-5)
    # class 1's query e4: own leave-one-out centroid (e4 - e1)/2 -> cos = 1/sqrt(2)
    assert s[1, 0, 1].item() == pytest.approx(10.0 / math.sqrt(2) - 5.0, abs=1e-5)


def test_ge2e_does_not_depend_on_batch_order():
    loss_fn, emb = make("ge2e"), batch()
    perm = torch.tensor([3, 1, 5, 0, 2, 4])
    a, b = loss_fn(emb, LABELS), loss_fn(emb[perm], LABELS[perm])
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-6)
    torch.testing.assert_close(a.logits[perm], b.logits)


def test_angleproto_matches_hand_computation():
    loss_fn, emb = make("angleproto", init_w=7.0, init_b=-2.0), batch()
    w, b = _w_b(loss_fn)
    e, y = emb.double().numpy(), LABELS.tolist()
    classes = sorted(set(y))
    last = {k: max(j for j in range(len(y)) if y[j] == k) for k in classes}  # query = last clip in batch order
    proto = {k: np.mean([e[j] for j in range(len(y)) if y[j] == k and j != last[k]], axis=0) for k in classes}
    rows = [[w * cosine(e[last[q]], proto[k]) + b for k in classes] for q in classes]
    out = loss_fn(emb, LABELS)
    assert out.logits is None
    np.testing.assert_allclose(loss_fn.similarities(emb, LABELS).detach().numpy(), rows, rtol=1e-5, atol=1e-5)
    assert out.loss.item() == pytest.approx(cross_entropy(rows, list(range(len(classes)))), rel=1e-5)


@pytest.mark.parametrize("name", ["ge2e", "angleproto"])
def test_w_stays_positive_when_the_loss_pushes_it_negative(name):
    # Each class's clips are (nearly) opposite and other classes lie in between: the loss wants w < 0.
    eye = torch.eye(4)
    emb = torch.stack([eye[0], -eye[0], eye[1], -eye[1], eye[2], -eye[2]]) + 0.01 * eye[3]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = make(name)
    out = loss_fn(emb, labels)
    out.loss.backward()
    assert loss_fn.scale.rho.grad > 0  # gradient descent does push w down
    opt = torch.optim.SGD(loss_fn.parameters(), lr=50.0)
    for _ in range(500):
        opt.zero_grad()
        loss_fn(emb, labels).loss.backward()
        opt.step()
    assert float(loss_fn.scale.w.detach()) > 0 and torch.isfinite(loss_fn(emb, labels).loss)
    assert float(loss_fn.scale.w.detach()) < 1e-3  # it did go as low as it could


@pytest.mark.parametrize("name", ["ge2e", "angleproto"])
def test_metric_losses_reject_unbalanced_batches(name):
    loss_fn = make(name)
    with pytest.raises(ValueError, match=r"clips per label \{0: 3, 1: 2, 2: 1\}"):
        loss_fn(batch(), torch.tensor([0, 0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="balanced"):  # one clip per label (a random sampler's batch)
        loss_fn(batch()[:3], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=">= 2 labels"):
        loss_fn(batch(), torch.zeros(6, dtype=torch.long))


def test_init_w_must_be_positive():
    with pytest.raises(ValueError, match="init_w"):
        make("ge2e", init_w=0.0)


@pytest.mark.parametrize("per_class", [2, 3, 5])
def test_grouping_by_the_samplers_layout_equals_grouping_by_counting(per_class):
    """What the metric losses do on a GPU (shapes from the batch size, no host sync) gives the same groups as
    the checked path on every balanced batch the sampler can lay out, whatever the batch order."""
    from sourcetrace.losses.base import group_by_label, group_by_layout

    gen = torch.Generator().manual_seed(per_class)
    for _ in range(5):
        classes = torch.randperm(40, generator=gen)[:6]
        labels = classes.repeat_interleave(per_class)[torch.randperm(6 * per_class, generator=gen)]
        emb = torch.randn(len(labels), 8, generator=gen)
        for a, b in zip(group_by_label("ge2e", emb, labels, 2), group_by_layout("ge2e", emb, labels, 2, per_class)):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="a batch of 7 cannot be laid out 2 clips per label"):
        group_by_layout("ge2e", emb[:7], labels[:7], 2, 2)


@pytest.mark.parametrize("name", ["ge2e", "angleproto"])
def test_metric_losses_never_read_the_labels_back_on_a_device_when_the_layout_is_known(name):
    """On a device that is not the host's (``meta`` stands in for a GPU: reading a value from it is an error,
    as a host sync would be), a metric loss told the balanced layout runs; without it, it must read counts."""
    loss = LOSSES[name](16, 10, LossConfig()).to("meta")
    emb = torch.randn(12, 16, device="meta", requires_grad=True)
    labels = torch.arange(6).repeat_interleave(2).to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        loss(emb, labels)  # counting the labels needs their values on the host
    loss.per_class = 2
    out = loss(emb, labels)
    out.loss.backward()
    assert out.loss.shape == () and emb.grad.shape == emb.shape
    cpu = LOSSES[name](16, 10, LossConfig())
    x, y = torch.randn(12, 16), torch.arange(6).repeat_interleave(2)[torch.randperm(12)]
    before = cpu(x, y).loss
    cpu.per_class = 2
    assert torch.equal(cpu(x, y).loss, before)  # on the CPU the checked path runs: results unchanged
