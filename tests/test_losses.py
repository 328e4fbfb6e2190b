"""Tests of modeling_pemscl/losses.py.

The oracle for every loss is a slow per-pair loop written straight from the paper's equations
(Eq. 3-13) on Python floats; the fast tensor implementations must match it.
"""

import math

import pytest
import torch

from modeling_pemscl.losses import (
    GroupedPairEmbeddings,
    _grouped_dot,
    atlop_loss,
    bce_loss,
    binary_entropy_from_logits,
    contrastive_loss,
    decode_evidence,
    decode_relations,
    entropy_loss,
    evidence_loss,
    pair_dot,
    pair_similarity,
    pair_squared_norm,
    pemscl_objective,
    pmt_loss,
    sample_negative_mask,
    sentence_evidence,
)

# ------------------------------------------------------------------------------------------------
# Oracles: Python floats, one pair and one relation at a time.
# ------------------------------------------------------------------------------------------------


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def entropy(d):
    """Eq. 5 on the pairwise distribution P^r(r) = sigmoid(f_r - f_eta), P^eta(r) = 1 - P^r(r)."""
    p = sigmoid(d)
    q = sigmoid(-d)
    return -((p * math.log(p) if p > 0 else 0.0) + (q * math.log(q) if q > 0 else 0.0))


def logsumexp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def sets(labels_row, mask_row=None):
    """(P, N used in the sums, |N| full) for one pair; relations are columns 1..R."""
    r_count = len(labels_row) - 1
    pos = [r for r in range(1, r_count + 1) if labels_row[r] != 0]
    neg_full = [r for r in range(1, r_count + 1) if labels_row[r] == 0]
    neg = neg_full
    if mask_row is not None and not pos:  # Eq. 12: only NA pairs are sampled
        neg = [r for r in neg_full if mask_row[r]]
    return pos, neg, len(neg_full)


def oracle_pmt(logits, labels, mask=None):
    out = []
    for i, f in enumerate(logits):
        pos, neg, _ = sets(labels[i], None if mask is None else mask[i])
        eta = f[0]
        out.append(sum(-math.log(sigmoid(f[r] - eta)) for r in pos)
                   + sum(-math.log(sigmoid(eta - f[r])) for r in neg))
    return out


def oracle_entropy(logits, labels, mask=None, gamma_pos="count", gamma_neg="count"):
    out = []
    for i, f in enumerate(logits):
        pos, neg, neg_full = sets(labels[i], None if mask is None else mask[i])
        g1 = len(pos) if gamma_pos == "count" else 1
        g2 = neg_full if gamma_neg == "count" else 1
        value = 0.0
        if pos:
            value += sum(entropy(f[r] - f[0]) for r in pos) / g1
        if neg:
            value += sum(entropy(f[r] - f[0]) for r in neg) / g2
        out.append(value)
    return out


def oracle_contrastive(emb, labels, tau, average="inside", anchors="positive"):
    """Eq. 8-10; with anchors="all" an NA pair is an anchor too, with no positive example (Eq. 9)."""
    n = len(emb)
    unit = []
    for x in emb:
        norm = math.sqrt(sum(v * v for v in x))
        unit.append([v / norm for v in x])
    s = [[sum(a * b for a, b in zip(unit[i], unit[j])) / tau for j in range(n)] for i in range(n)]
    pos = [set(r for r in range(1, len(row)) if row[r] != 0) for row in labels]
    out = []
    for i in range(n):
        others = [d for d in range(n) if d != i]
        if (not pos[i] and anchors == "positive") or not others:
            out.append(0.0)
            continue
        denom = sum(math.exp(s[i][d]) for d in others)
        shared = [p for p in others if pos[i] & pos[p]]
        if not shared:  # Eq. 9
            out.append(math.log(denom))
        elif average == "inside":  # Eq. 8
            out.append(-math.log(sum(math.exp(s[i][p]) / denom for p in shared) / len(shared)))
        else:
            out.append(sum(-math.log(math.exp(s[i][p]) / denom) for p in shared) / len(shared))
    return out


def oracle_atlop(logits, labels, mask=None):
    out = []
    for i, f in enumerate(logits):
        pos, neg, _ = sets(labels[i], None if mask is None else mask[i])
        lse_pos = logsumexp([f[0]] + [f[r] for r in pos])
        lse_neg = logsumexp([f[0]] + [f[r] for r in neg])
        out.append(sum(-(f[r] - lse_pos) for r in pos) - (f[0] - lse_neg))
    return out


def oracle_bce(logits, labels, mask=None):
    out = []
    for i, f in enumerate(logits):
        pos, neg, _ = sets(labels[i], None if mask is None else mask[i])
        out.append(sum(-math.log(sigmoid(f[r])) for r in pos)
                   + sum(-math.log(sigmoid(-f[r])) for r in neg))
    return out


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
R = 7
# Positive relations of each pair: NA pairs, single positives, many positives, relation 7 that
# no other pair has (the Eq. 9 path), relation 6 shared by exactly two pairs.
POSITIVES = [[], [1], [1, 2], [2, 3, 4, 5], [7], [], [3], [1, 2, 3, 4, 5, 6], [], [6], [], [4]]


def make_labels(positives=POSITIVES, r=R, dtype=torch.float32):
    labels = torch.zeros(len(positives), r + 1, dtype=dtype)
    for i, rels in enumerate(positives):
        if rels:
            labels[i, rels] = 1
        else:
            labels[i, 0] = 1
    return labels


def make_logits(n, r=R, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, r + 1, generator=g) * scale


def make_mask(n, r=R, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, r + 1, generator=g) < 0.5
    mask[:, 0] = False  # column 0 of the mask must be ignored
    return mask


def as_lists(t):
    return t.double().tolist()


def assert_close_list(actual, expected, tol=1e-5):
    assert actual.dtype == torch.float32
    assert actual.shape == (len(expected),)
    torch.testing.assert_close(actual.double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# Eq. 4 / 12: pairwise moving threshold
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_dtype", [torch.float32, torch.bool, torch.int64])
def test_pmt_matches_oracle(label_dtype):
    labels = make_labels(dtype=label_dtype)
    logits = make_logits(len(POSITIVES))
    expected = oracle_pmt(as_lists(logits), as_lists(labels))
    assert_close_list(pmt_loss(logits, labels), expected)


def test_pmt_with_mask_matches_oracle_and_changes_only_na_rows():
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=3)
    mask = make_mask(len(POSITIVES))
    masked = pmt_loss(logits, labels, mask)
    assert_close_list(masked, oracle_pmt(as_lists(logits), as_lists(labels), mask.tolist()))
    full = pmt_loss(logits, labels)
    is_na = labels[:, 1:].sum(1) == 0
    assert torch.equal(masked[~is_na], full[~is_na])
    assert (masked[is_na] < full[is_na]).all()


def test_pmt_all_na_batch():
    labels = make_labels([[]] * 5)
    logits = make_logits(5, seed=4)
    assert_close_list(pmt_loss(logits, labels), oracle_pmt(as_lists(logits), as_lists(labels)))


# ------------------------------------------------------------------------------------------------
# Eq. 5-6 / 12: entropy minimization
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma_pos", ["count", "one"])
@pytest.mark.parametrize("gamma_neg", ["count", "one"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_entropy_matches_oracle(gamma_pos, gamma_neg, use_mask):
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=5, scale=2.0)
    mask = make_mask(len(POSITIVES)) if use_mask else None
    actual = entropy_loss(logits, labels, mask, gamma_pos=gamma_pos, gamma_neg=gamma_neg)
    expected = oracle_entropy(as_lists(logits), as_lists(labels),
                              None if mask is None else mask.tolist(), gamma_pos, gamma_neg)
    assert_close_list(actual, expected)


def test_entropy_mask_changes_only_na_rows_and_keeps_full_gamma():
    labels = make_labels([[], [2]], r=4)
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5], [0.0, 1.0, 2.0, -1.0, 0.5]])
    mask = torch.tensor([[True, False, True, False, False]] * 2)
    actual = entropy_loss(logits, labels, mask)
    # NA row: only relation 2 kept, still divided by |N| = 4.
    assert actual[0].item() == pytest.approx(entropy(2.0) / 4, rel=1e-6)
    assert actual[1].item() == pytest.approx(entropy_loss(logits, labels)[1].item(), rel=1e-7)


def test_entropy_rejects_unknown_gamma():
    labels = make_labels()
    with pytest.raises(ValueError, match="count"):
        entropy_loss(make_logits(len(POSITIVES)), labels, gamma_pos="mean")


def test_binary_entropy_values():
    d = torch.tensor([0.0, 1.0, -3.0, 1e4, -1e4])
    expected = [math.log(2), entropy(1.0), entropy(-3.0), 0.0, 0.0]
    torch.testing.assert_close(binary_entropy_from_logits(d).double(),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Eq. 8-10: contrastive
# ------------------------------------------------------------------------------------------------
def make_embeddings(n, d=16, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


@pytest.mark.parametrize("average", ["inside", "outside"])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_contrastive_matches_oracle(average, tau):
    labels = make_labels()
    emb = make_embeddings(len(POSITIVES))
    actual = contrastive_loss(emb, labels, tau, average)
    expected = oracle_contrastive(as_lists(emb), as_lists(labels), tau, average)
    assert_close_list(actual, expected, tol=1e-4)
    # NA anchors give 0; the unshared relation 7 (pair 4) takes the Eq. 9 path.
    assert (actual[labels[:, 0] == 1] == 0).all()
    sims = pair_similarity(emb, torch.tensor([4]))[0] / tau
    assert actual[4].item() == pytest.approx(
        torch.logsumexp(torch.cat([sims[:4], sims[5:]]), 0).item(), rel=1e-5)


@pytest.mark.parametrize("average", ["inside", "outside"])
def test_contrastive_all_anchors_matches_oracle(average):
    labels = make_labels()
    emb = make_embeddings(len(POSITIVES))
    tau = 0.3
    actual = contrastive_loss(emb, labels, tau, average, anchors="all")
    assert_close_list(actual, oracle_contrastive(as_lists(emb), as_lists(labels), tau, average, "all"), tol=1e-4)
    # An NA anchor is pushed away from every other pair (Eq. 9); pairs with a relation are unchanged.
    na = labels[:, 0] == 1
    sims = pair_similarity(emb) / tau
    for i in na.nonzero().flatten().tolist():
        others = torch.cat([sims[i, :i], sims[i, i + 1:]])
        assert actual[i].item() == pytest.approx(torch.logsumexp(others, 0).item(), rel=1e-5)
    torch.testing.assert_close(actual[~na], contrastive_loss(emb, labels, tau, average)[~na])


def test_contrastive_all_anchors_grouped_equals_materialized():
    labels = make_labels()
    grouped = make_grouped(len(POSITIVES))
    fast = contrastive_loss(grouped, labels, 0.2, "outside", anchors="all")
    slow = contrastive_loss(grouped.materialize(), labels, 0.2, "outside", anchors="all")
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    fast.sum().backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in grouped)
    # Every row an anchor takes the symmetric gradient path: it equals the gradient through the pair vectors.
    grad_head, grad_tail = grouped.head.grad.clone(), grouped.tail.grad.clone()
    grouped.head.grad = grouped.tail.grad = None
    contrastive_loss(grouped.materialize(), labels, 0.2, "outside", anchors="all").sum().backward()
    torch.testing.assert_close(grad_head, grouped.head.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_tail, grouped.tail.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [None, [3, 7, 7, 0], "mask"])
def test_grouped_dot_and_its_gradient_equal_the_pair_vectors(rows):
    """The factorized Gram products against x_a . x_b of the materialized vectors, in float64, for
    every row, an index with a repeated row, and a boolean mask; any upstream gradient."""
    gen = torch.Generator().manual_seed(3)
    head = torch.randn(9, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    tail = torch.randn(9, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    if rows == "mask":
        rows = torch.tensor([True, False, True, True, False, False, False, True, False])
    elif rows is not None:
        rows = torch.tensor(rows)
    grouped = GroupedPairEmbeddings(head, tail)
    x = grouped.materialize()
    expected = x @ x.T if rows is None else x[rows] @ x.T
    upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (head, tail))
    actual = _grouped_dot(head, tail, rows)
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad((actual * upstream).sum(), (head, tail)), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_contrastive_inside_and_outside_agree_with_one_positive_example():
    labels = make_labels([[1], [1], [], [2]])
    emb = make_embeddings(4)
    torch.testing.assert_close(contrastive_loss(emb, labels, 0.3, "inside"),
                               contrastive_loss(emb, labels, 0.3, "outside"))


def test_contrastive_edge_cases():
    emb = make_embeddings(1)
    emb.requires_grad_(True)
    single = contrastive_loss(emb, make_labels([[1]]), 0.2)
    assert single.tolist() == [0.0]
    single.sum().backward()  # a grad path even with no other pair
    assert torch.equal(emb.grad, torch.zeros_like(emb))

    all_na = contrastive_loss(make_embeddings(4), make_labels([[]] * 4), 0.2)
    assert all_na.tolist() == [0.0] * 4
    emb, labels = make_embeddings(4), make_labels([[]] * 4)
    all_na_anchors = contrastive_loss(emb, labels, 0.2, anchors="all")  # every pair through Eq. 9
    assert_close_list(all_na_anchors, oracle_contrastive(as_lists(emb), as_lists(labels), 0.2, anchors="all"))
    assert (all_na_anchors != 0).all()
    with pytest.raises(ValueError, match="anchors"):
        contrastive_loss(make_embeddings(4), make_labels([[1]] * 4), 0.2, anchors="na")

    with pytest.raises(ValueError, match="inside"):
        contrastive_loss(make_embeddings(4), make_labels([[1]] * 4), 0.2, average="mean")
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(make_embeddings(4), make_labels([[1]] * 4), 0.0)


def make_grouped(n, g=3, kh=4, kt=5, seed=11, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    head = (torch.randn(n, g, kh, generator=gen) * scale).requires_grad_(True)
    tail = (torch.randn(n, g, kt, generator=gen) * scale).requires_grad_(True)
    return GroupedPairEmbeddings(head, tail)


def test_grouped_materialize_layout():
    grouped = make_grouped(2, g=2, kh=3, kt=3)
    x = grouped.materialize()
    assert x.shape == (2, 2 * 3 * 3)
    n, g, i, j = 1, 1, 2, 0
    assert x[n, g * 9 + i * 3 + j].item() == pytest.approx(
        (grouped.head[n, g, i] * grouped.tail[n, g, j]).item())


@pytest.mark.parametrize("average", ["inside", "outside"])
def test_grouped_path_equals_materialized(average):
    labels = make_labels()
    grouped = make_grouped(len(POSITIVES))
    x = grouped.materialize().detach().requires_grad_(True)
    rows = torch.tensor([1, 4, 7])
    torch.testing.assert_close(pair_dot(grouped, rows), pair_dot(x, rows), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair_squared_norm(grouped), pair_squared_norm(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair_similarity(grouped), pair_similarity(x), rtol=1e-5, atol=1e-5)

    fast = contrastive_loss(grouped, labels, 0.2, average)
    slow = contrastive_loss(x, labels, 0.2, average)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert_close_list(fast, oracle_contrastive(as_lists(x.detach()), as_lists(labels), 0.2, average),
                      tol=1e-4)

    # Gradients agree too: d/dhead through the materialized vector vs the factorized path.
    fast.sum().backward()
    grad_head, grad_tail = grouped.head.grad.clone(), grouped.tail.grad.clone()
    grouped.head.grad = grouped.tail.grad = None
    contrastive_loss(grouped.materialize(), labels, 0.2, average).sum().backward()
    torch.testing.assert_close(grad_head, grouped.head.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_tail, grouped.tail.grad, rtol=1e-5, atol=1e-5)


def test_grouped_contrastive_at_model_size_never_builds_the_pair_vectors():
    """N = 2,500 pairs, ~10% positive, G = 12 groups of K = 64: x would be 2,500 x 49,152 floats (490 MB). The
    factored Gram products keep every tensor the loss touches far smaller (speed lives in bench/speed.py)."""
    n, num_rel = 2500, 96
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(n, num_rel + 1)
    positive_rows = torch.randperm(n, generator=gen)[:250]
    labels[positive_rows, torch.randint(1, num_rel + 1, (250,), generator=gen)] = 1
    labels[:, 0] = (labels[:, 1:].sum(1) == 0).float()
    grouped = GroupedPairEmbeddings(torch.randn(n, 12, 64, generator=gen).requires_grad_(True),
                                    torch.randn(n, 12, 64, generator=gen).requires_grad_(True))
    largest = []

    def record(tensor):
        largest.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(record, lambda tensor: tensor):
        loss = contrastive_loss(grouped, labels, 0.2)
    loss.mean().backward()
    assert torch.isfinite(loss).all() and (loss[labels[:, 0] == 1] == 0).all()
    assert torch.isfinite(grouped.head.grad).all()
    # Nothing saved for backward is anywhere near the pair matrix (the largest is a [G, anchors, N] Gram).
    assert max(largest) <= 12 * 250 * n < n * 12 * 64 * 64 / 10


# ------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_mask", [False, True])
def test_atlop_and_bce_match_oracle(use_mask):
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=9)
    mask = make_mask(len(POSITIVES)) if use_mask else None
    mask_list = None if mask is None else mask.tolist()
    assert_close_list(atlop_loss(logits, labels, mask),
                      oracle_atlop(as_lists(logits), as_lists(labels), mask_list))
    assert_close_list(bce_loss(logits, labels, mask),
                      oracle_bce(as_lists(logits), as_lists(labels), mask_list))


# ------------------------------------------------------------------------------------------------
# Stability: extreme logits, bf16, autocast
# ------------------------------------------------------------------------------------------------
def extreme_logits(n, r=R, seed=13):
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n, r + 1), generator=g).float() * 2 - 1
    logits = signs * 1e4
    logits[::3] = torch.randn(len(logits[::3]), r + 1, generator=g)  # some ordinary rows too
    return logits


LOGIT_LOSSES = [pmt_loss, entropy_loss, atlop_loss, bce_loss]


@pytest.mark.parametrize("loss_fn", LOGIT_LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extreme_logits_are_finite(loss_fn, dtype):
    labels = make_labels()
    logits = extreme_logits(len(POSITIVES)).to(dtype).requires_grad_(True)
    for mask in (None, make_mask(len(POSITIVES))):
        logits.grad = None
        value = loss_fn(logits, labels, mask)
        assert value.dtype == torch.float32
        assert torch.isfinite(value).all()
        value.sum().backward()
        assert torch.isfinite(logits.grad.float()).all()


def test_extreme_logit_values():
    # A positive relation 2e4 below the threshold costs 2e4; a confident right answer costs ~0.
    labels = make_labels([[1], [1]], r=2)
    logits = torch.tensor([[1e4, -1e4, -1e4], [0.0, 1e4, -1e4]], requires_grad=True)
    assert pmt_loss(logits, labels).tolist() == pytest.approx([2e4, 0.0])
    assert entropy_loss(logits, labels).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    entropy_loss(logits, labels).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("average", ["inside", "outside"])
def test_contrastive_extreme_is_finite(grouped, average):
    labels = make_labels()
    n = len(POSITIVES)
    if grouped:
        emb = make_grouped(n, scale=1e4)
        leaves = list(emb)
    else:
        emb = (make_embeddings(n) * 1e4).requires_grad_(True)
        leaves = [emb]
    value = contrastive_loss(emb, labels, 1e-3, average)  # 1 / tau = 1000
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)


@pytest.mark.parametrize("loss_fn", LOGIT_LOSSES, ids=lambda f: f.__name__)
def test_bf16_logits_close_to_float32(loss_fn):
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=17)
    low = loss_fn(logits.bfloat16(), labels)
    assert low.dtype == torch.float32
    # Same inputs upcast: identical computation in float32.
    torch.testing.assert_close(low, loss_fn(logits.bfloat16().float(), labels))
    # Against the float32 inputs: within bf16 input rounding.
    torch.testing.assert_close(low, loss_fn(logits, labels), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("grouped", [False, True])
def test_bf16_embeddings_close_to_float32(grouped):
    labels = make_labels()
    n = len(POSITIVES)
    if grouped:
        emb = make_grouped(n)
        low = GroupedPairEmbeddings(emb.head.detach().bfloat16(), emb.tail.detach().bfloat16())
    else:
        emb = make_embeddings(n)
        low = emb.bfloat16()
    value = contrastive_loss(low, labels, 0.2)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, contrastive_loss(emb, labels, 0.2).detach(),
                               rtol=2e-2, atol=5e-2)


def test_objective_under_bf16_autocast():
    labels = make_labels()
    n = len(POSITIVES)
    layer = torch.nn.Linear(16, R + 1)
    features = make_embeddings(n)
    reference = pemscl_objective(layer(features), labels, features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        assert logits.dtype == torch.bfloat16
        out = pemscl_objective(logits, labels, features)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], reference["loss"], rtol=3e-2, atol=3e-2)
    # The contrastive Gram products run in float32 even under autocast.
    torch.testing.assert_close(out["contrastive_loss"], reference["contrastive_loss"])
    out["loss"].backward()
    assert torch.isfinite(layer.weight.grad).all()


# ------------------------------------------------------------------------------------------------
# Section 3.5: negative label sampling
# ------------------------------------------------------------------------------------------------
def test_sample_negative_mask_shape_and_counts():
    num_rel = 96
    positives = [[] for _ in range(40)] + [[3], [5, 6]]
    labels = make_labels(positives, r=num_rel)
    mask = sample_negative_mask(labels, 0.1, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == labels.shape
    assert mask[:, 0].all()
    assert (mask[:40, 1:].sum(1) == 10).all()  # max(1, round(0.1 * 96)) = 10
    assert mask[40:].all()
    assert len({tuple(row.tolist()) for row in mask[:40]}) == 40  # one subset per NA pair
    # At least one relation even for a tiny ratio.
    tiny = sample_negative_mask(labels, 1e-3)
    assert (tiny[:40, 1:].sum(1) == 1).all()


def test_sample_negative_mask_is_uniform():
    n, num_rel, ratio = 4000, 20, 0.25
    labels = make_labels([[]] * n, r=num_rel)
    mask = sample_negative_mask(labels, ratio, generator=torch.Generator().manual_seed(1))
    counts = mask[:, 1:].sum(0).double()
    expected = n * 5 / num_rel
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 60.0, chi2  # 19 degrees of freedom; p < 1e-5 above 60


def test_sample_negative_mask_generator_and_ratio():
    labels = make_labels([[]] * 30 + [[1]], r=12)
    a = sample_negative_mask(labels, 0.3, generator=torch.Generator().manual_seed(5))
    b = sample_negative_mask(labels, 0.3, generator=torch.Generator().manual_seed(5))
    c = sample_negative_mask(labels, 0.3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_negative_mask(labels, 1.0).all()
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            sample_negative_mask(labels, bad)
    empty = sample_negative_mask(make_labels([], r=12), 0.3)
    assert empty.shape == (0, 13)


# ------------------------------------------------------------------------------------------------
# Objective
# ------------------------------------------------------------------------------------------------
def test_objective_by_hand():
    logits = torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.0, 0.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # pair 0: relation 1; pair 1: NA
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out = pemscl_objective(logits, labels, emb, temperature=0.5, contrastive_weight=0.3)
    pmt = [2 * softplus(-1.0), 2 * softplus(-0.5)]
    ent = [entropy(1.0) / 1 + entropy(-1.0) / 1, (entropy(-0.5) + entropy(-0.5)) / 2]
    # Pair 0 is the only anchor and shares nothing: Eq. 9 over the one other pair = cos / tau.
    con = [(1 / math.sqrt(2)) / 0.5, 0.0]
    assert out["pmt_loss"].item() == pytest.approx(sum(pmt) / 2, rel=1e-6)
    assert out["entropy_loss"].item() == pytest.approx(sum(ent) / 2, rel=1e-6)
    assert out["contrastive_loss"].item() == pytest.approx(sum(con) / 2, rel=1e-6)
    assert out["loss"].item() == pytest.approx(
        (sum(pmt) + sum(ent)) / 2 + 0.3 * sum(con) / 2, rel=1e-6)
    assert out["atlop_loss"] is None and out["bce_loss"] is None

    no_extras = pemscl_objective(logits, labels, use_entropy=False, use_contrastive=False)
    assert no_extras["entropy_loss"] is None and no_extras["contrastive_loss"] is None
    assert no_extras["loss"].item() == pytest.approx(sum(pmt) / 2, rel=1e-6)

    gamma_one = pemscl_objective(logits, labels, use_contrastive=False, gamma_neg="one")
    assert gamma_one["entropy_loss"].item() == pytest.approx(
        (ent[0] + 2 * entropy(-0.5)) / 2, rel=1e-6)


def test_objective_mask_changes_only_na_terms():
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=21)
    emb = make_embeddings(len(POSITIVES))
    mask = make_mask(len(POSITIVES))
    plain = pemscl_objective(logits, labels, emb)
    masked = pemscl_objective(logits, labels, emb, negative_mask=mask)
    is_na = labels[:, 0] == 1
    n = len(POSITIVES)
    pmt_full, pmt_masked = pmt_loss(logits, labels), pmt_loss(logits, labels, mask)
    assert masked["pmt_loss"].item() == pytest.approx(
        (pmt_full[~is_na].sum() + pmt_masked[is_na].sum()).item() / n, rel=1e-6)
    assert masked["pmt_loss"] < plain["pmt_loss"]
    assert masked["entropy_loss"] < plain["entropy_loss"]
    assert masked["contrastive_loss"].item() == plain["contrastive_loss"].item()


def test_objective_baselines_and_precomputed_contrastive():
    labels = make_labels()
    logits = make_logits(len(POSITIVES), seed=23)
    for kind, fn in (("atlop", atlop_loss), ("bce", bce_loss)):
        out = pemscl_objective(logits, labels, loss=kind)
        assert out["loss"].item() == pytest.approx(fn(logits, labels).mean().item(), rel=1e-6)
        assert out[f"{kind}_loss"] is out["loss"]
        assert out["pmt_loss"] is None and out["contrastive_loss"] is None

    emb = make_embeddings(len(POSITIVES))
    gathered = torch.cat([contrastive_loss(emb, labels, 0.2), torch.zeros(4)])
    out = pemscl_objective(logits, labels, contrastive_per_pair=gathered)
    assert out["contrastive_loss"].item() == pytest.approx(gathered.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="not both"):
        pemscl_objective(logits, labels, emb, contrastive_per_pair=gathered)


def test_objective_contrastive_anchors():
    labels = make_labels()
    logits = make_logits(len(POSITIVES))
    emb = make_embeddings(len(POSITIVES))
    expected = oracle_contrastive(as_lists(emb), as_lists(labels), 0.2, "outside", "all")
    out = pemscl_objective(logits, labels, emb, contrastive_average="outside", contrastive_anchors="all")
    # The contrastive mean runs over every pair, NA anchors now included with their Eq. 9 term.
    assert out["contrastive_loss"].item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    positive_only = pemscl_objective(logits, labels, emb, contrastive_average="outside")
    assert out["contrastive_loss"].item() > positive_only["contrastive_loss"].item()


def test_objective_validation():
    labels = make_labels()
    logits = make_logits(len(POSITIVES))
    emb = make_embeddings(len(POSITIVES))
    for kwargs, allowed in (
        ({"loss": "focal"}, "pemscl"),
        ({"gamma_pos": 2}, "count"),
        ({"gamma_neg": "all"}, "count"),
        ({"contrastive_average": "both"}, "outside"),
        ({"contrastive_anchors": "na"}, "positive"),
        ({"temperature": -1.0}, "temperature"),
        ({"contrastive_weight": -0.1}, "contrastive_weight"),
    ):
        with pytest.raises(ValueError, match=allowed):
            pemscl_objective(logits, labels, emb, **kwargs)
    with pytest.raises(ValueError, match="embeddings"):
        pemscl_objective(logits, labels)


@pytest.mark.parametrize("kind", ["pemscl", "atlop", "bce"])
def test_objective_with_no_pairs_backpropagates(kind):
    logits = torch.zeros(0, R + 1, requires_grad=True)
    labels = torch.zeros(0, R + 1)
    emb = GroupedPairEmbeddings(torch.zeros(0, 3, 4, requires_grad=True),
                                torch.zeros(0, 3, 4, requires_grad=True))
    out = pemscl_objective(logits, labels, emb, loss=kind)
    assert out["loss"].item() == 0.0 and out["loss"].dim() == 0
    out["loss"].backward()
    assert logits.grad is not None and logits.grad.shape == (0, R + 1)


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
def test_decode_relations():
    logits = torch.tensor([
        [0.0, 1.0, 2.0, 3.0, -1.0],   # three above the threshold, cap 2 keeps relations 2, 3
        [5.0, 1.0, 2.0, 3.0, 4.0],    # none above: NA
        [1.0, 1.0, 0.5, 1.5, -2.0],   # tie with the threshold is not a prediction
    ])
    pred = decode_relations(logits, max_relations=2)
    assert pred.dtype == torch.bool
    assert pred.tolist() == [
        [False, False, True, True, False],
        [True, False, False, False, False],
        [False, False, False, True, False],
    ]
    assert decode_relations(logits, max_relations=None)[0].tolist() == [False, True, True, True, False]
    assert decode_relations(logits, max_relations=2, threshold="global").tolist() == [
        [False, False, True, True, False],
        [False, False, False, True, True],
        [False, True, False, True, False],
    ]
    assert decode_relations(torch.zeros(0, 5)).shape == (0, 5)
    with pytest.raises(ValueError, match="adaptive"):
        decode_relations(logits, threshold="fixed")


def test_a_new_loss_needs_only_the_function_and_its_registration(monkeypatch):
    """docs/adding-a-loss.md: a per-pair function, an entry in LOSSES and, for a global threshold,
    GLOBAL_THRESHOLD_LOSSES; the config, the objective, the model and decoding then use it."""
    from model_helpers import make_batch, random_document, tiny_model

    from modeling_pemscl import losses

    def squared_margin_loss(logits, labels, negative_mask=None):
        """A toy loss: every relation's logit pushed towards +1 (positive) or -1 (negative)."""
        target = labels[:, 1:].float() * 2 - 1
        return ((logits[:, 1:].float() - target) ** 2).sum(dim=1)

    monkeypatch.setitem(losses.LOSSES, "squared", squared_margin_loss)
    monkeypatch.setattr(losses, "GLOBAL_THRESHOLD_LOSSES", {"bce", "squared"})
    generator = torch.Generator().manual_seed(0)
    model = tiny_model(loss="squared").train()
    batch = make_batch([random_document(generator, 20, 3), random_document(generator, 16, 4)], generator=generator)
    output = model(**batch, return_predictions=True)
    expected = squared_margin_loss(output.logits, batch["labels"]).mean()
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.bilinear.weight.grad is not None
    # Decoded against a global 0, as registered: column r predicted iff its logit > 0 (top-4 per pair).
    assert torch.equal(output.predictions, losses.decode_relations(output.logits.detach(), 4, threshold="global"))
    with pytest.raises(ValueError, match="must be one of"):
        tiny_model(loss="unregistered")


# ------------------------------------------------------------------------------------------------
# Evidence: per-sentence pooling of the pair attention, the KL term, decoding
# ------------------------------------------------------------------------------------------------
EVIDENCE_TITLES = ("Mess of Blues (Jeff Healey album)", "Soccer Academy", "The Sacramento Bee")  # 6, 7, 5 sentences


@pytest.fixture(scope="module")
def real_pair_attention():
    """The localized-context attention of every pair of three real documents (MiniLM encoder, new head), each pair's
    `sentence_ids` row and the batch's gold `evidence_labels`."""
    from model_helpers import fixture_batch, minilm_model

    batch, _, _ = fixture_batch(EVIDENCE_TITLES)
    model = minilm_model()
    with torch.no_grad():
        hidden, mention_attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
        _, _, pair_attention = model.pair_representations(hidden, mention_attention, batch["mention_positions"],
                                                          batch["hts"], batch["pair_document_index"])
    return pair_attention, batch["sentence_ids"][batch["pair_document_index"]], batch["evidence_labels"]


def oracle_sentence_evidence(attention, sentence_ids, num_sentences):
    """One pair: its attention summed over each sentence's tokens, divided by the total over all sentences."""
    shares = [0.0] * num_sentences
    for weight, sentence in zip(attention, sentence_ids):
        if sentence >= 0:
            shares[sentence] += weight
    total = sum(shares)
    return [share / total for share in shares]


def oracle_evidence_loss(evidence, gold_rows, log=math.log, eps=1e-8):
    """KL(g || p) of each pair with gold evidence, g spread evenly over its gold sentences (sentences outside the
    gold have g = 0 and add nothing). `log=torch.log` on rows of 0-d tensors gives the loop's gradient."""
    values = []
    for p, gold in zip(evidence, gold_rows):
        sentences = [s for s, flag in enumerate(gold) if flag]
        if not sentences:
            continue
        g = 1.0 / len(sentences)
        values.append(sum(g * (math.log(g) - log(p[s] + eps)) for s in sentences))
    return values


def test_sentence_evidence_matches_a_loop_on_real_attention(real_pair_attention):
    attention, sentence_ids, gold = real_pair_attention
    num_sentences = gold.shape[1]
    evidence = sentence_evidence(attention, sentence_ids, num_sentences)
    assert evidence.dtype == torch.float32 and evidence.shape == (attention.shape[0], num_sentences)
    expected = [oracle_sentence_evidence(a, ids, num_sentences)
                for a, ids in zip(attention.double().tolist(), sentence_ids.tolist())]
    torch.testing.assert_close(evidence.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(evidence.sum(-1), torch.ones(len(evidence)))
    # The special tokens hold some of the attention that the sentences share out (the renormalization matters), and
    # a document's padding sentences get none.
    inside = (attention * (sentence_ids >= 0)).sum(-1)
    assert (inside < attention.sum(-1) - 1e-4).all()
    documents_sentences = (sentence_ids.max(-1).values + 1).tolist()
    assert len(set(documents_sentences)) == 3
    for row, count in zip(evidence, documents_sentences):
        assert (row[count:] == 0).all()


def test_sentence_evidence_gradient_matches_the_loop(real_pair_attention):
    attention, sentence_ids, gold = real_pair_attention
    rows = torch.cat([gold.sum(-1).nonzero()[:15, 0], (gold.sum(-1) == 0).nonzero()[:5, 0]])  # gold and no gold
    leaf = attention[rows].double().requires_grad_()
    ids = sentence_ids[rows]
    upstream = torch.rand(len(rows), gold.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fast = sentence_evidence(leaf, ids, gold.shape[1])
    (fast_grad,) = torch.autograd.grad((fast.double() * upstream).sum(), leaf)
    slow = 0.0
    for i in range(len(rows)):
        positions = [[l for l, s in enumerate(ids[i].tolist()) if s == sentence] for sentence in range(gold.shape[1])]
        shares = [leaf[i, p].sum() for p in positions]
        total = sum(shares)
        slow = slow + sum(upstream[i, s] * share / total for s, share in enumerate(shares))
    (slow_grad,) = torch.autograd.grad(slow, leaf)
    # float32 inside sentence_evidence: compare at its precision, relative to the gradient's scale.
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-4, atol=1e-4 * slow_grad.abs().max().item())


def test_sentence_evidence_leaves_out_tokens_outside_sentences():
    attention = torch.tensor([[0.5, 0.1, 0.2, 0.1, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    sentence_ids = torch.tensor([[-1, 0, 0, 2, -1, -1], [-1, 0, 1, 1, -1, -1]])
    evidence = sentence_evidence(attention, sentence_ids, 3)
    torch.testing.assert_close(evidence[0], torch.tensor([0.75, 0.0, 0.25]))
    assert evidence[1].tolist() == [0.0, 0.0, 0.0]  # no attention on any sentence: zeros, not NaN
    assert sentence_evidence(torch.zeros(0, 6), torch.zeros(0, 6, dtype=torch.long), 3).shape == (0, 3)


def test_evidence_loss_matches_a_loop_on_real_evidence(real_pair_attention):
    attention, sentence_ids, gold = real_pair_attention
    evidence = sentence_evidence(attention, sentence_ids, gold.shape[1])
    supervised = gold.sum(-1) > 0
    assert 0 < int(supervised.sum()) < len(gold) // 4  # most pairs have no gold evidence
    assert (gold[supervised].sum(-1) > 1).any()  # and some have several sentences
    values = evidence_loss(evidence, gold)
    expected = oracle_evidence_loss(evidence.double().tolist(), gold.tolist())
    assert values.dtype == torch.float32 and values.shape == (int(supervised.sum()),)
    torch.testing.assert_close(values.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert (values >= 0).all()
    # KL of a distribution from itself is 0: the even gold distribution as the prediction.
    even = gold / gold.sum(-1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(evidence_loss(even, gold), torch.zeros(len(values)), atol=1e-6, rtol=0)


def test_evidence_loss_gradient_matches_the_loop(real_pair_attention):
    attention, sentence_ids, gold = real_pair_attention
    evidence = sentence_evidence(attention, sentence_ids, gold.shape[1]).double().requires_grad_()
    supervised = gold.sum(-1) > 0
    upstream = torch.rand(int(supervised.sum()), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (fast_grad,) = torch.autograd.grad((evidence_loss(evidence, gold).double() * upstream).sum(), evidence)
    rows = [[evidence[i, s] for s in range(gold.shape[1])] for i in range(len(gold))]
    slow = oracle_evidence_loss(rows, gold.tolist(), log=torch.log)
    (slow_grad,) = torch.autograd.grad(sum(weight * value for weight, value in zip(upstream, slow)), evidence)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-5, atol=1e-6)
    # Pairs without gold evidence contribute nothing: no gradient, and any evidence of theirs leaves the values.
    assert (fast_grad[~supervised] == 0).all() and (fast_grad[supervised] != 0).any()
    shuffled = evidence.detach().clone()
    shuffled[~supervised] = shuffled[~supervised].flip(-1)
    assert torch.equal(evidence_loss(shuffled, gold), evidence_loss(evidence.detach(), gold))


def test_evidence_loss_edge_cases():
    evidence = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    gold = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    values = evidence_loss(evidence, gold)
    # Row 1: g = (1/2, 0, 1/2): 1/2 log(1/2 / 0.2) + 1/2 log(1/2 / 0.5); row 2: a gold sentence with p = 0 stays finite.
    expected = [0.5 * math.log(0.5 / (0.2 + 1e-8)) + 0.5 * math.log(0.5 / (0.5 + 1e-8)), -math.log(1e-8)]
    torch.testing.assert_close(values, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert evidence_loss(evidence, torch.zeros(3, 3)).shape == (0,)  # no supervised pair: an empty vector
    assert evidence_loss(evidence, gold.bool()).tolist() == values.tolist()  # multi-hot of any dtype
    with pytest.raises(ValueError, match=r"same shape \[N, S\]"):
        evidence_loss(evidence, gold[:, :2])


def test_decode_evidence(real_pair_attention):
    attention, sentence_ids, gold = real_pair_attention
    evidence = sentence_evidence(attention, sentence_ids, gold.shape[1])
    for threshold in (0.05, 0.2, 0.5):
        decoded = decode_evidence(evidence, threshold)
        expected = [[share >= threshold for share in row] for row in evidence.tolist()]
        assert decoded.dtype == torch.bool and decoded.tolist() == expected
    assert decode_evidence(evidence, 0.2).any() and not decode_evidence(evidence, 0.2).all()
    # A share equal to the threshold is evidence; the threshold is a share, so at most 1 / threshold sentences.
    shares = torch.tensor([[0.25, 0.25, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert decode_evidence(shares, 0.25).tolist() == [[True, True, True, False], [False, False, True, True]]
    assert decode_evidence(evidence, 0.3).sum(-1).max() <= 3
