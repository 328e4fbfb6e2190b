"""Loss functions and decoding of PEMSCL (Guo et al., EACL 2023), sections 3.3-3.5, Eq. 3-13.

Every loss takes the pair logits ``logits`` [N, R+1] and the multi-hot ``labels`` [N, R+1] of N
entity pairs, where column 0 is the NA class, which doubles as the per-pair threshold ``f_eta``.
A relation ``r`` (column 1..R) is *positive* for a pair when ``labels[:, r] != 0`` and *negative*
otherwise; a pair is an *NA pair* when it has no positive relation (``labels[:, 0] == 1``).
Each loss returns one float32 value per pair, shape [N]; inputs in float16/bfloat16 are upcast.
:func:`pemscl_objective` composes them into the training objective (Eq. 7, 11 and 13).

This file ships to the Hugging Face Hub as remote code: it imports torch and the standard
library only.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

__all__ = [
    "GroupedPairEmbeddings",
    "pair_dot",
    "pair_squared_norm",
    "pair_similarity",
    "pmt_loss",
    "entropy_loss",
    "binary_entropy_from_logits",
    "contrastive_loss",
    "sample_negative_mask",
    "atlop_loss",
    "bce_loss",
    "pemscl_objective",
    "evidence_loss",
    "sentence_evidence",
    "decode_relations",
    "decode_evidence",
    "relation_margins",
    "decision_threshold",
    "check_choice",
    "LOSSES",
    "LOSS_KINDS",
    "GLOBAL_THRESHOLD_LOSSES",
    "GAMMA_KINDS",
    "CONTRASTIVE_AVERAGES",
    "CONTRASTIVE_ANCHORS",
    "THRESHOLD_KINDS",
]

# The choices of the loss settings, defined here once; the config, the command line and the card read them.
# `config.loss` names one of LOSSES: "pemscl" is the composed objective of Eq. 11 / 13 (`pemscl_objective`), every
# other entry a per-pair baseline loss `f(logits, labels, negative_mask) -> [N]` (filled in below its definitions).
LOSSES: Dict[str, Optional[Callable]] = {"pemscl": None}
LOSS_KINDS = LOSSES.keys()  # a live view: a loss added to LOSSES is a valid `config.loss` at once
# Losses that learn no threshold class: their relations are decoded against a global 0 (`decision_threshold`).
GLOBAL_THRESHOLD_LOSSES = {"bce"}
GAMMA_KINDS = ("count", "one")
CONTRASTIVE_AVERAGES = ("inside", "outside")
CONTRASTIVE_ANCHORS = ("positive", "all")
THRESHOLD_KINDS = ("adaptive", "global")


def check_choice(name: str, value, choices) -> None:
    """Raise a `ValueError` naming the setting when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def decision_threshold(loss: str) -> str:
    """The threshold a model trained with `loss` decodes with: the bce baseline learns no threshold class, so its
    relations are compared with a global 0 (``"global"``); the other losses with the pair's NA logit
    (``"adaptive"``)."""
    check_choice("loss", loss, LOSS_KINDS)
    return "global" if loss in GLOBAL_THRESHOLD_LOSSES else "adaptive"

_NORM_EPS = 1e-12  # same floor on the L2 norm as torch.nn.functional.normalize


# --------------------------------------------------------------------------------------------
# Pair embeddings
# --------------------------------------------------------------------------------------------
class GroupedPairEmbeddings(NamedTuple):
    """Grouped-bilinear pair embeddings, kept factorized (Appendix D, the ``x_{h,t}`` of Eq. 1).

    Stands for the pair vector ``x = concat_g flatten(head[:, g, :] (outer) tail[:, g, :])``, i.e.
    ``x[n, g*Kh*Kt + i*Kt + j] = head[n, g, i] * tail[n, g, j]``, of size ``D = G * Kh * Kt``
    (12 * 64 * 64 = 49,152 for the ATLOP head) without ever building it: dot products use
    ``<x_a, x_b> = sum_g <head_a^g, head_b^g> * <tail_a^g, tail_b^g>``.

    Fields:
        head: [N, G, Kh] head-entity groups.
        tail: [N, G, Kt] tail-entity groups.
    """

    head: torch.Tensor
    tail: torch.Tensor

    @property
    def num_pairs(self) -> int:
        """N, the number of pairs."""
        return self.head.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The shape of the pair vectors this stands for, ``[N, G*Kh*Kt]`` (nothing is built)."""
        n, g, kh = self.head.shape
        return torch.Size((n, g * kh * self.tail.shape[-1]))

    def materialize(self) -> torch.Tensor:
        """Returns the pair vectors ``x`` [N, G*Kh*Kt] (memory heavy: for tests and small N)."""
        n, g, kh = self.head.shape
        kt = self.tail.shape[-1]
        return (self.head.unsqueeze(-1) * self.tail.unsqueeze(-2)).reshape(n, g * kh * kt)


PairEmbeddings = Union[torch.Tensor, GroupedPairEmbeddings]


def _check_embeddings(embeddings: PairEmbeddings) -> int:
    if isinstance(embeddings, GroupedPairEmbeddings):
        head, tail = embeddings
        if head.dim() != 3 or tail.dim() != 3 or head.shape[:2] != tail.shape[:2]:
            raise ValueError(
                "GroupedPairEmbeddings needs `head` [N, G, Kh] and `tail` [N, G, Kt] with the same "
                f"N and G, got {tuple(head.shape)} and {tuple(tail.shape)}."
            )
        return head.shape[0]
    if not torch.is_tensor(embeddings) or embeddings.dim() != 2:
        raise ValueError(
            "`embeddings` must be a [N, D] tensor or a GroupedPairEmbeddings(head, tail), got "
            f"{type(embeddings).__name__}"
            + (f" of shape {tuple(embeddings.shape)}" if torch.is_tensor(embeddings) else "")
            + "."
        )
    return embeddings.shape[0]


def _autocast_off(device: torch.device):
    """Context that disables autocast on ``device`` (the Gram products must stay in float32)."""
    is_available = getattr(torch.amp, "is_autocast_available", None)
    if is_available is not None and not is_available(device.type):
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support on older torch
        return contextlib.nullcontext()


def _select_rows(t: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
    return t if rows is None else t[rows]


def _rescaled_groups(embeddings: GroupedPairEmbeddings):
    """float32 head/tail, each pair divided by its own (detached) largest magnitude.

    Cosine similarity is invariant to a positive per-pair scale, so with the scale detached the
    values and gradients of :func:`pair_similarity` are unchanged while the Gram products stay far
    from float32 overflow/underflow.
    """
    out = []
    for t in embeddings:
        t = t.float()
        scale = t.detach().abs().amax(dim=(1, 2), keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        out.append(t / scale)
    return out


class _GroupedDot(torch.autograd.Function):
    """``S[a, n] = sum_g <head[rows[a], g], head[n, g]> * <tail[rows[a], g], tail[n, g]>``, one group at a time.

    Autograd through batched Gram products would keep two [G, A, N] Grams and build two more in backward
    (300 MB each for 2,500 pairs and every pair an anchor); here each group's Grams live only while that group
    is processed and are recomputed in backward. With every row an anchor the Grams are symmetric, so the
    gradient of each takes one product, ``((dS + dS^T) * G_other) @ x``, instead of two.
    """

    @staticmethod
    def forward(ctx, head, tail, rows):
        # [G, N, K], contiguous: every group's products then read dense [N, K] blocks.
        head, tail = head.transpose(0, 1).contiguous(), tail.transpose(0, 1).contiguous()
        head_rows = head if rows is None else head[:, rows]
        tail_rows = tail if rows is None else tail[:, rows]
        out = head.new_zeros(head_rows.shape[1], head.shape[1])
        for g in range(head.shape[0]):
            out.addcmul_(head_rows[g] @ head[g].T, tail_rows[g] @ tail[g].T)
        ctx.save_for_backward(head, tail, rows)
        return out

    @staticmethod
    def backward(ctx, grad):
        head, tail, rows = ctx.saved_tensors
        every_row = rows is None
        head_rows = head if every_row else head[:, rows]
        tail_rows = tail if every_row else tail[:, rows]
        grad_head, grad_tail = torch.zeros_like(head), torch.zeros_like(tail)
        # Every row: the Grams are symmetric, so (dS * G) + (dS * G)^T = (dS + dS^T) * G, one product per Gram.
        symmetric_grad = grad + grad.T if every_row else None
        for g in range(head.shape[0]):
            head_gram = head_rows[g] @ head[g].T
            tail_gram = tail_rows[g] @ tail[g].T
            if every_row:
                torch.mm(symmetric_grad * tail_gram, head[g], out=grad_head[g])
                torch.mm(symmetric_grad * head_gram, tail[g], out=grad_tail[g])
                continue
            for d_gram, x, x_rows, out in ((grad * tail_gram, head, head_rows, grad_head),
                                           (grad * head_gram, tail, tail_rows, grad_tail)):
                torch.mm(d_gram.T, x_rows[g], out=out[g])
                out[g].index_add_(0, rows, d_gram @ x[g])
        return grad_head.transpose(0, 1), grad_tail.transpose(0, 1), None


def _grouped_dot(head: torch.Tensor, tail: torch.Tensor, rows: Optional[torch.Tensor]):
    """[n_rows, N] dot products of the factorized pair vectors (head/tail [N, G, K], float32)."""
    if rows is not None and rows.dtype == torch.bool:
        rows = rows.nonzero(as_tuple=True)[0]
    return _GroupedDot.apply(head, tail, rows)


def pair_dot(embeddings: PairEmbeddings, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Raw dot products ``<x_a, x_b>`` of pair embeddings, float32 [n_rows, N].

    Args:
        embeddings: [N, D] tensor or :class:`GroupedPairEmbeddings` (never materialized).
        rows: index (int64 [n_rows]) or bool mask [N] of the anchor rows; None = all N rows.
    """
    _check_embeddings(embeddings)
    if isinstance(embeddings, GroupedPairEmbeddings):
        with _autocast_off(embeddings.head.device):
            return _grouped_dot(embeddings.head.float(), embeddings.tail.float(), rows)
    with _autocast_off(embeddings.device):
        x = embeddings.float()
        return _select_rows(x, rows) @ x.T


def pair_squared_norm(embeddings: PairEmbeddings) -> torch.Tensor:
    """Squared L2 norms ``||x_n||^2`` of pair embeddings, float32 [N].

    For :class:`GroupedPairEmbeddings`: ``sum_g ||head_n^g||^2 * ||tail_n^g||^2``.
    """
    _check_embeddings(embeddings)
    if isinstance(embeddings, GroupedPairEmbeddings):
        head, tail = embeddings.head.float(), embeddings.tail.float()
        return (head.pow(2).sum(-1) * tail.pow(2).sum(-1)).sum(-1)
    return embeddings.float().pow(2).sum(-1)


def pair_similarity(
    embeddings: PairEmbeddings, rows: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Cosine similarities of L2-normalized pair embeddings (the ``x_a . x_b`` of Eq. 8-9).

    Args:
        embeddings: [N, D] tensor or :class:`GroupedPairEmbeddings` (never materialized).
        rows: index (int64 [n_rows]) or bool mask [N] of the anchor rows; None = all N rows.

    Returns:
        float32 [n_rows, N]; a zero embedding has similarity 0 with everything.
    """
    _check_embeddings(embeddings)
    if isinstance(embeddings, GroupedPairEmbeddings):
        device = embeddings.head.device
        with _autocast_off(device):
            head, tail = _rescaled_groups(embeddings)
            dot = _grouped_dot(head, tail, rows)
            sq = (head.pow(2).sum(-1) * tail.pow(2).sum(-1)).sum(-1)
            norm = sq.clamp_min(_NORM_EPS**2).sqrt()
            return dot / (_select_rows(norm, rows).unsqueeze(1) * norm.unsqueeze(0))
    with _autocast_off(embeddings.device):
        x = F.normalize(embeddings.float(), p=2.0, dim=-1, eps=_NORM_EPS)
        return _select_rows(x, rows) @ x.T


# --------------------------------------------------------------------------------------------
# Label helpers
# --------------------------------------------------------------------------------------------
def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"`logits` must be [N, R+1] with R >= 1, got {tuple(logits.shape)}.")
    if labels.shape != logits.shape:
        raise ValueError(
            f"`labels` must have the shape of `logits` {tuple(logits.shape)}, got {tuple(labels.shape)}."
        )


def _positive(labels: torch.Tensor) -> torch.Tensor:
    """bool [N, R]: relation r (columns 1..R) is positive for the pair."""
    return labels[:, 1:] != 0


def _kept_negatives(positive: torch.Tensor, negative_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """bool [N, R]: the negative relations a loss sums over (``N`` or, for NA pairs, ``N'``)."""
    negative = ~positive
    if negative_mask is None:
        return negative
    if negative_mask.shape[0] != positive.shape[0] or negative_mask.shape[1] != positive.shape[1] + 1:
        raise ValueError(
            f"`negative_mask` must be [N, R+1] = {(positive.shape[0], positive.shape[1] + 1)}, "
            f"got {tuple(negative_mask.shape)}."
        )
    keep = negative_mask[:, 1:].to(torch.bool) | positive.any(dim=1, keepdim=True)
    return negative & keep


def _pairwise_margin(logits: torch.Tensor) -> torch.Tensor:
    """float32 [N, R]: ``d_r = f_r - f_eta``, the logit of ``P^r(r)`` in Eq. 3."""
    logits = logits.float()
    return logits[:, 1:] - logits[:, :1]


# --------------------------------------------------------------------------------------------
# Eq. 3-6 and 12: pairwise moving threshold with entropy minimization
# --------------------------------------------------------------------------------------------
def pmt_loss(
    logits: torch.Tensor, labels: torch.Tensor, negative_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pairwise moving-threshold loss, Eq. 4 (with Eq. 3), and its sampled form Eq. 12.

    ``L_pmt = sum_{r in P} softplus(f_eta - f_r) + sum_{r in N} softplus(f_r - f_eta)``, where
    ``f_eta = logits[:, 0]``. With ``negative_mask``, the negative sum of NA pairs runs over the
    kept relations ``N'`` only (first term of Eq. 12); pairs with a positive relation and column 0
    of the mask are not affected.

    Args:
        logits: [N, R+1], any float dtype.
        labels: [N, R+1] multi-hot (float, int or bool), column 0 = NA.
        negative_mask: optional bool [N, R+1], True = keep (see :func:`sample_negative_mask`).

    Returns:
        float32 [N], one loss per pair.
    """
    _check_logits_labels(logits, labels)
    d = _pairwise_margin(logits)
    positive = _positive(labels)
    negative = _kept_negatives(positive, negative_mask)
    zero = d.new_zeros(())
    pos_term = torch.where(positive, F.softplus(-d), zero).sum(dim=1)
    neg_term = torch.where(negative, F.softplus(d), zero).sum(dim=1)
    return pos_term + neg_term


def binary_entropy_from_logits(d: torch.Tensor) -> torch.Tensor:
    """Entropy of the pairwise distribution ``(P^r(r), P^eta(r))`` from its logit ``d``, Eq. 5.

    ``H = -(p log p + (1-p) log(1-p))`` with ``p = sigmoid(d)``, written as
    ``-(sigmoid(d) logsigmoid(d) + sigmoid(-d) logsigmoid(-d))``: every factor is finite, so the
    value and the gradient stay finite for ``|d|`` up to float32 range (0 * finite at the tails).
    """
    d = d.float()
    return -(torch.sigmoid(d) * F.logsigmoid(d) + torch.sigmoid(-d) * F.logsigmoid(-d))


def _gamma(choice: str, size: torch.Tensor) -> torch.Tensor:
    if choice == "count":
        return size.clamp_min(1).float()  # the term is 0 anyway where the set is empty
    if choice == "one":
        return torch.ones_like(size, dtype=torch.float32)
    check_choice("gamma", choice, GAMMA_KINDS)


def entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    negative_mask: Optional[torch.Tensor] = None,
    gamma_pos: str = "count",
    gamma_neg: str = "count",
) -> torch.Tensor:
    """Entropy-minimization loss, Eq. 6 (with H from Eq. 5), and its sampled form Eq. 12.

    ``L_em = (1/gamma_1) sum_{r in P} H(r) + (1/gamma_2) sum_{r in N} H(r)``; with
    ``negative_mask`` the negative sum of NA pairs runs over the kept ``N'`` only (second term of
    Eq. 12), still divided by ``gamma_2`` of the full negative set.

    Args:
        logits: [N, R+1], any float dtype.
        labels: [N, R+1] multi-hot, column 0 = NA.
        negative_mask: optional bool [N, R+1], True = keep.
        gamma_pos: ``"count"`` (``gamma_1 = |P|``) or ``"one"`` (``gamma_1 = 1``).
        gamma_neg: ``"count"`` (``gamma_2 = |N|``, the full negative set, also when sampling) or
            ``"one"``.

    Returns:
        float32 [N]; a term is 0 where its set is empty.

    Raises:
        ValueError: for a gamma outside ``("count", "one")``.
    """
    _check_logits_labels(logits, labels)
    positive = _positive(labels)
    g1 = _gamma(gamma_pos, positive.sum(dim=1))
    g2 = _gamma(gamma_neg, (~positive).sum(dim=1))
    negative = _kept_negatives(positive, negative_mask)
    h = binary_entropy_from_logits(_pairwise_margin(logits))
    zero = h.new_zeros(())
    pos_term = torch.where(positive, h, zero).sum(dim=1) / g1
    neg_term = torch.where(negative, h, zero).sum(dim=1) / g2
    return pos_term + neg_term


# --------------------------------------------------------------------------------------------
# Eq. 8-10: supervised contrastive learning for multi-label, long-tailed relations
# --------------------------------------------------------------------------------------------
def _zero_with_graph(n: int, *tensors: Optional[torch.Tensor], device=None) -> torch.Tensor:
    """float32 zeros [n] connected to the autograd graph of ``tensors`` (backward still works)."""
    out = torch.zeros(n, dtype=torch.float32, device=device)
    for t in tensors:
        if t is not None and t.is_floating_point() and t.requires_grad:
            out = out + t.float().sum() * 0.0
    return out


def contrastive_loss(
    embeddings: PairEmbeddings,
    labels: torch.Tensor,
    temperature: float,
    average: str = "inside",
    anchors: str = "positive",
) -> torch.Tensor:
    """Multi-label supervised contrastive loss, Eq. 8-10 (one value per pair).

    Embeddings are L2-normalized; ``s_ij = x_i . x_j / temperature``. For each anchor ``i`` with at
    least one positive relation, ``S_i`` = the other pairs sharing a positive relation with ``i``
    and the denominator runs over every other pair of the batch (NA pairs included):

    - ``average="inside"`` (Eq. 8 as printed):
      ``-log((1/|S_i|) sum_{p in S_i} exp(s_ip) / sum_{d != i} exp(s_id))``;
    - ``average="outside"`` (supervised-contrastive style):
      ``mean_{p in S_i} -log(exp(s_ip) / sum_{d != i} exp(s_id))``;
    - ``S_i`` empty (Eq. 9): ``log sum_{d != i} exp(s_id)``.

    Which pairs are anchors:

    - ``anchors="positive"`` (Eq. 10 as printed): the pairs of ``B_P``, with a positive relation;
      NA pairs get 0;
    - ``anchors="all"`` (what the released code computes: it zeroes the NA column of the labels
      before this loss): every pair; an NA pair shares no relation with anyone, so it takes the
      Eq. 9 term and is pushed away from every other pair of the batch.

    A batch of one pair gives 0. Similarity rows are only computed for anchors ([n_anchor, N]).

    Args:
        embeddings: [N, D] tensor or :class:`GroupedPairEmbeddings` (never materialized).
        labels: [N, R+1] multi-hot, column 0 = NA.
        temperature: tau > 0.
        average: ``"inside"`` or ``"outside"``.
        anchors: ``"positive"`` or ``"all"``.

    Returns:
        float32 [N].

    Raises:
        ValueError: for an unknown ``average`` or ``anchors``, a non-positive ``temperature`` or
            mismatched shapes.
    """
    check_choice("average", average, CONTRASTIVE_AVERAGES)
    check_choice("anchors", anchors, CONTRASTIVE_ANCHORS)
    _check_temperature(temperature)
    n = _check_embeddings(embeddings)
    if labels.dim() != 2 or labels.shape[0] != n:
        raise ValueError(
            f"`labels` must be [N, R+1] with N = {n} pairs (as in `embeddings`), got {tuple(labels.shape)}."
        )
    parts = tuple(embeddings) if isinstance(embeddings, GroupedPairEmbeddings) else (embeddings,)
    device = parts[0].device
    positive = _positive(labels).to(device)
    is_anchor = positive.any(dim=1) if anchors == "positive" else torch.ones(n, dtype=torch.bool, device=device)
    anchors = is_anchor.nonzero(as_tuple=True)[0]
    if n < 2 or anchors.numel() == 0:
        return _zero_with_graph(n, *parts, device=device)

    with _autocast_off(device):
        # Every pair an anchor: all rows (the Gram products then take their symmetric, cheaper backward).
        rows = None if anchors.numel() == n else anchors
        sim = pair_similarity(embeddings, rows) / temperature  # [A, N]
        per_anchor = _anchor_contrastive_terms(sim, positive, anchors, average)

    out = _zero_with_graph(n, device=device)
    return out.index_put((anchors,), per_anchor)


def _check_temperature(temperature: float) -> None:
    """Raise a `ValueError` unless the temperature tau of Eq. 8-9 is > 0."""
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")


def _anchor_contrastive_terms(
    sim: torch.Tensor, positive: torch.Tensor, anchors: torch.Tensor, average: str
) -> torch.Tensor:
    """The contrastive term of each anchor, float32 [A]: Eq. 8, or Eq. 9 where its ``S_i`` is empty.

    Args:
        sim: [A, N] similarities ``s_ij`` of the anchors to every pair, already divided by the temperature.
        positive: bool [N, R], the positive relations of every pair.
        anchors: int64 [A], the anchors' pair indices.
        average: ``"inside"`` or ``"outside"`` (see :func:`contrastive_loss`).
    """
    pos_f = positive.float()
    shared = (pos_f[anchors] @ pos_f.T) > 0  # [A, N], a relation in common
    not_self = torch.arange(positive.shape[0], device=positive.device).unsqueeze(0) != anchors.unsqueeze(1)
    shared = shared & not_self
    n_shared = shared.sum(dim=1)
    has_shared = n_shared > 0

    log_denominator = torch.logsumexp(sim.masked_fill(~not_self, float("-inf")), dim=1)
    if average == "inside":
        # Rows with an empty S_i get finite dummies so that logsumexp's backward stays finite.
        masked = sim.masked_fill(~shared, float("-inf")).masked_fill(~has_shared.unsqueeze(1), 0.0)
        log_numerator = torch.logsumexp(masked, dim=1) - n_shared.clamp_min(1).float().log()
    else:
        log_numerator = torch.where(shared, sim, sim.new_zeros(())).sum(dim=1) / n_shared.clamp_min(1)
    return torch.where(has_shared, log_denominator - log_numerator, log_denominator)


# --------------------------------------------------------------------------------------------
# Section 3.5: negative label sampling
# --------------------------------------------------------------------------------------------
def sample_negative_mask(
    labels: torch.Tensor, ratio: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Per-pair uniform sampling of the negative relations ``N'_{h,t}`` of NA pairs (Sec. 3.5, Eq. 12).

    Each NA pair (no positive relation) independently keeps exactly ``k = max(1, round(ratio * R))``
    of its R relations, chosen uniformly at random (random keys + top-k, vectorized on
    ``labels.device``); pairs with a positive relation keep everything; column 0 is always True.

    Args:
        labels: [N, R+1] multi-hot, column 0 = NA.
        ratio: fraction of negative relations kept, in (0, 1]; 1.0 turns sampling off (all True).
        generator: optional ``torch.Generator`` on ``labels.device`` for reproducible draws.

    Returns:
        bool [N, R+1], True = keep.

    Raises:
        ValueError: if ``ratio`` is not in (0, 1].
    """
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"`ratio` must be in (0, 1] (1.0 = no sampling), got {ratio!r}.")
    if labels.dim() != 2 or labels.shape[1] < 2:
        raise ValueError(f"`labels` must be [N, R+1] with R >= 1, got {tuple(labels.shape)}.")
    n, num_columns = labels.shape
    r = num_columns - 1
    mask = torch.ones(n, num_columns, dtype=torch.bool, device=labels.device)
    k = min(r, max(1, round(ratio * r)))
    if ratio >= 1.0 or k >= r or n == 0:
        return mask
    keys = torch.rand(n, r, generator=generator, device=labels.device)
    chosen = keys.topk(k, dim=1).indices
    sampled = torch.zeros(n, r, dtype=torch.bool, device=labels.device)
    sampled.scatter_(1, chosen, True)
    is_na = ~_positive(labels).any(dim=1, keepdim=True)
    mask[:, 1:] = sampled | ~is_na
    return mask


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
def atlop_loss(
    logits: torch.Tensor, labels: torch.Tensor, negative_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Adaptive-thresholding loss of ATLOP (Zhou et al., 2021), the baseline PEMSCL compares to (Sec. 3.3).

    ``-sum_{r in P} log softmax_{P u {TH}}(f)_r - log softmax_{N u {TH}}(f)_TH`` with TH = column 0;
    with ``negative_mask`` the second softmax of NA pairs runs over the kept ``N' u {TH}``.

    Returns:
        float32 [N].
    """
    _check_logits_labels(logits, labels)
    f = logits.float()
    positive = _positive(labels)
    negative = _kept_negatives(positive, negative_mask)
    threshold = torch.ones_like(positive[:, :1])
    neg_inf = float("-inf")
    positive_rank = F.log_softmax(f.masked_fill(~torch.cat([threshold, positive], 1), neg_inf), dim=1)
    negative_rank = F.log_softmax(f.masked_fill(~torch.cat([threshold, negative], 1), neg_inf), dim=1)
    pos_term = -torch.where(positive, positive_rank[:, 1:], f.new_zeros(())).sum(dim=1)
    return pos_term - negative_rank[:, 0]


def bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, negative_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Binary cross-entropy over relation columns 1..R (global-threshold baseline); NA column unused.

    With ``negative_mask`` the sum of NA pairs runs over the kept columns only.

    Returns:
        float32 [N].
    """
    _check_logits_labels(logits, labels)
    f = logits.float()[:, 1:]
    positive = _positive(labels)
    per_entry = F.binary_cross_entropy_with_logits(f, positive.float(), reduction="none")
    used = positive | _kept_negatives(positive, negative_mask)
    return torch.where(used, per_entry, f.new_zeros(())).sum(dim=1)


LOSSES.update(atlop=atlop_loss, bce=bce_loss)


# --------------------------------------------------------------------------------------------
# Objective (Eq. 7, 11, 13) and decoding
# --------------------------------------------------------------------------------------------
def pemscl_objective(
    logits: torch.Tensor,
    labels: torch.Tensor,
    embeddings: Optional[PairEmbeddings] = None,
    *,
    loss: str = "pemscl",
    temperature: float = 0.2,
    contrastive_weight: float = 0.1,
    gamma_pos: str = "count",
    gamma_neg: str = "count",
    use_entropy: bool = True,
    use_contrastive: bool = True,
    contrastive_average: str = "inside",
    contrastive_anchors: str = "positive",
    negative_mask: Optional[torch.Tensor] = None,
    contrastive_per_pair: Optional[torch.Tensor] = None,
) -> Dict[str, Optional[torch.Tensor]]:
    """The training objective: Eq. 11 (Eq. 13 when ``negative_mask`` is given), or a baseline.

    For ``loss="pemscl"``: ``mean_pairs(pmt + entropy) + contrastive_weight * mean_pairs(contrastive)``,
    both means over all N pairs of the batch (with ``contrastive_anchors="positive"`` NA pairs
    contribute their 0 to the contrastive mean).
    The paper sums over the batch (Eq. 7, 10); the means only rescale the learning rate.
    For ``"atlop"`` / ``"bce"``: the mean of that loss over pairs (no entropy or contrastive term).

    Args:
        logits: [N, R+1] pair logits.
        labels: [N, R+1] multi-hot, column 0 = NA.
        embeddings: pair embeddings for the contrastive term ([N, D] or GroupedPairEmbeddings).
        loss: ``"pemscl"``, ``"atlop"`` or ``"bce"``.
        temperature: tau of Eq. 8-9, > 0.
        contrastive_weight: lambda of Eq. 11, >= 0.
        gamma_pos, gamma_neg: ``"count"`` or ``"one"`` (Eq. 6).
        use_entropy: add the entropy term (Eq. 6).
        use_contrastive: add the contrastive term (Eq. 10).
        contrastive_average: ``"inside"`` or ``"outside"`` (see :func:`contrastive_loss`).
        contrastive_anchors: ``"positive"`` (Eq. 10) or ``"all"`` (see :func:`contrastive_loss`).
        negative_mask: optional bool [N, R+1] from :func:`sample_negative_mask` (Eq. 12-13).
        contrastive_per_pair: optional precomputed float [M] per-pair contrastive values (e.g. from
            :func:`contrastive_loss` on a batch gathered across processes); its mean over its M
            entries is the contrastive term. Give either this or ``embeddings``, not both.

    Returns:
        dict of scalar tensors with keys ``loss``, ``pmt_loss``, ``entropy_loss``,
        ``contrastive_loss``, ``atlop_loss``, ``bce_loss``; terms not used are None. With N = 0
        pairs every used term is 0.0 and ``loss.backward()`` still works.

    Raises:
        ValueError: for an argument outside its allowed values, or a missing contrastive input.
    """
    _check_objective_settings(loss, gamma_pos, gamma_neg, contrastive_average, contrastive_anchors, temperature,
                              contrastive_weight)
    _check_logits_labels(logits, labels)

    n = logits.shape[0]
    out: Dict[str, Optional[torch.Tensor]] = dict.fromkeys(
        ("loss", "pmt_loss", "entropy_loss", "contrastive_loss", *(f"{name}_loss" for name in LOSSES if name != "pemscl"))
    )
    if loss != "pemscl":  # a per-pair baseline: its mean over pairs, no entropy or contrastive term
        out[f"{loss}_loss"] = out["loss"] = _batch_mean(LOSSES[loss](logits, labels, negative_mask), n)
        return out

    per_pair = pmt_loss(logits, labels, negative_mask)
    out["pmt_loss"] = _batch_mean(per_pair, n)
    if use_entropy:
        entropy = entropy_loss(logits, labels, negative_mask, gamma_pos, gamma_neg)
        out["entropy_loss"] = _batch_mean(entropy, n)
        per_pair = per_pair + entropy
    total = _batch_mean(per_pair, n)
    if use_contrastive:
        contrastive = _contrastive_values(
            embeddings, contrastive_per_pair, labels, temperature, contrastive_average, contrastive_anchors
        )
        out["contrastive_loss"] = _batch_mean(contrastive, contrastive.numel())
        total = total + contrastive_weight * out["contrastive_loss"]
    out["loss"] = total
    return out


def _check_objective_settings(
    loss: str,
    gamma_pos: str,
    gamma_neg: str,
    contrastive_average: str,
    contrastive_anchors: str,
    temperature: float,
    contrastive_weight: float,
) -> None:
    """Raise a `ValueError` naming the first setting of :func:`pemscl_objective` outside its allowed values."""
    for name, value, choices in (("loss", loss, LOSS_KINDS), ("gamma_pos", gamma_pos, GAMMA_KINDS),
                                 ("gamma_neg", gamma_neg, GAMMA_KINDS),
                                 ("contrastive_average", contrastive_average, CONTRASTIVE_AVERAGES),
                                 ("contrastive_anchors", contrastive_anchors, CONTRASTIVE_ANCHORS)):
        check_choice(name, value, choices)
    _check_temperature(temperature)
    if not contrastive_weight >= 0:
        raise ValueError(f"`contrastive_weight` must be >= 0, got {contrastive_weight!r}.")


def _batch_mean(per_pair: torch.Tensor, count: int) -> torch.Tensor:
    """``sum / max(count, 1)``: an empty batch gives 0.0 with a gradient path instead of NaN."""
    return per_pair.sum() / max(count, 1)


def _contrastive_values(
    embeddings: Optional[PairEmbeddings],
    contrastive_per_pair: Optional[torch.Tensor],
    labels: torch.Tensor,
    temperature: float,
    average: str,
    anchors: str,
) -> torch.Tensor:
    """The per-pair contrastive values of Eq. 10 whose mean is the objective's contrastive term: the precomputed
    ``contrastive_per_pair``, or :func:`contrastive_loss` of ``embeddings`` (exactly one of the two is given)."""
    if contrastive_per_pair is not None and embeddings is not None:
        raise ValueError("Pass either `embeddings` or `contrastive_per_pair`, not both.")
    if contrastive_per_pair is not None:
        return contrastive_per_pair.float()
    if embeddings is not None:
        return contrastive_loss(embeddings, labels, temperature, average, anchors)
    raise ValueError(
        "use_contrastive=True needs `embeddings` (or a precomputed `contrastive_per_pair`); "
        "pass use_contrastive=False to train without the contrastive term."
    )


# --------------------------------------------------------------------------------------------
# Evidence: which sentences support a pair's relations (not in the paper; DREEAM, Ma et al., EACL 2023)
# --------------------------------------------------------------------------------------------
def sentence_evidence(pair_attention: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int) -> torch.Tensor:
    """Each pair's evidence distribution over its document's sentences, float32 [N, S].

    The share of sentence s is the pair's context attention (the localized context pooling weights, Eq. 14's c)
    summed over the sentence's subwords, renormalized over the sentences (special tokens and padding, sentence
    -1, drop out).

    Args:
        pair_attention: [N, L] non-negative context attention of each pair over its document's subwords.
        sentence_ids: [N, L] sentence index of each subword of the pair's document, -1 outside sentences.
        num_sentences: S, at least 1 + the largest sentence index.
    """
    pair_attention = pair_attention.float()
    outside = sentence_ids < 0
    index = sentence_ids.masked_fill(outside, num_sentences)
    per_sentence = pair_attention.new_zeros(pair_attention.shape[0], num_sentences + 1)
    per_sentence = per_sentence.scatter_add(1, index, pair_attention)[:, :num_sentences]
    return per_sentence / per_sentence.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def evidence_loss(evidence: torch.Tensor, evidence_labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(g || p) of every pair with gold evidence, float32 [M] (M = pairs with at least one evidence sentence).

    ``g`` is the pair's gold evidence spread evenly over its evidence sentences (the union over its relations),
    ``p`` its predicted distribution (:func:`sentence_evidence`): sum_s g_s (log g_s - log(p_s + eps)). Pairs
    without gold evidence (NA pairs, labels without evidence) are not supervised. The objective adds
    ``evidence_weight * mean`` of these values.

    Args:
        evidence: [N, S] predicted distributions.
        evidence_labels: [N, S] multi-hot gold evidence.
        eps: keeps log finite where p is 0.
    """
    if evidence.shape != evidence_labels.shape:
        raise ValueError(f"evidence {tuple(evidence.shape)} and evidence_labels {tuple(evidence_labels.shape)} must "
                         "have the same shape [N, S].")
    gold = evidence_labels.float()
    supervised = gold.sum(-1) > 0
    gold = gold[supervised] / gold[supervised].sum(-1, keepdim=True)
    predicted = evidence.float()[supervised]
    return torch.xlogy(gold, gold).sum(-1) - (gold * torch.log(predicted + eps)).sum(-1)


def decode_evidence(evidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """Evidence sentences of each pair: bool [N, S], the sentences whose share of the pair's distribution
    (:func:`sentence_evidence`) is at least ``threshold``."""
    return evidence >= threshold


def relation_margins(logits: torch.Tensor, threshold: str = "adaptive") -> torch.Tensor:
    """The logit margin of every relation over the decision threshold, float32 [N, R] (columns 1..R).

    ``f_r - f_eta`` with ``f_eta = logits[:, 0]`` (``threshold="adaptive"``), or ``f_r`` (``"global"``, the bce
    baseline's threshold 0). A relation is predicted when its margin is > 0 (see :func:`decode_relations`).
    The *score* of a relation everywhere in this project (predictions files, the pipeline) is
    ``sigmoid(margin)``: the pairwise probability ``P^r(r)`` of Eq. 3 that r beats the threshold (for bce, the
    relation's probability); predictions files carry the margin as well, under ``"margin"``.
    """
    check_choice("threshold", threshold, THRESHOLD_KINDS)
    logits = logits.float()
    return logits[:, 1:] - logits[:, :1] if threshold == "adaptive" else logits[:, 1:]


def decode_relations(
    logits: torch.Tensor, max_relations: Optional[int] = 4, threshold: str = "adaptive"
) -> torch.Tensor:
    """Predicted relations of each pair: bool [N, R+1] (the decision rule behind Eq. 3-4).

    A relation is predicted when its logit is strictly greater than the threshold: the pair's NA
    logit ``logits[:, 0]`` (``threshold="adaptive"``) or 0 (``threshold="global"``, for the bce
    baseline). At most the ``max_relations`` highest-scoring relations are kept (None or <= 0: no
    cap). Column 0 (NA) is True exactly when no relation is predicted.

    Raises:
        ValueError: for an unknown ``threshold``.
    """
    check_choice("threshold", threshold, THRESHOLD_KINDS)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"`logits` must be [N, R+1] with R >= 1, got {tuple(logits.shape)}.")
    scores = logits[:, 1:]
    bar = logits[:, :1] if threshold == "adaptive" else scores.new_zeros(())
    predicted = scores > bar
    r = scores.shape[1]
    if max_relations is not None and 0 < max_relations < r and logits.shape[0] > 0:
        top = scores.topk(max_relations, dim=1).indices
        in_top = torch.zeros_like(predicted).scatter_(1, top, True)
        predicted = predicted & in_top
    return torch.cat([~predicted.any(dim=1, keepdim=True), predicted], dim=1)
