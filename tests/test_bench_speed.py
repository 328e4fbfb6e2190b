"""bench/speed_epoch.py and bench/harness.py: the epoch section's batch order and padding share, against plain loops; its FLOP counts
against hand-computed ones."""

import random

import torch

from bench.harness import counted_gflop
from bench.speed_epoch import epoch_batches, padding_share
from modeling_pemscl.modeling_pemscl import GroupedBilinear


def test_epoch_batches_cover_every_document_once_and_grouping_cuts_padding():
    lengths = [random.Random(index).randint(60, 900) for index in range(400)]
    grouped = epoch_batches(lengths, batch_size=4, seed=0, grouped=True)
    shuffled = epoch_batches(lengths, batch_size=4, seed=0, grouped=False)
    for batches in (grouped, shuffled):
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        assert all(len(batch) == 4 for batch in batches)
    assert epoch_batches(lengths, 4, seed=0, grouped=True) == grouped  # seeded
    assert padding_share(lengths, grouped) < padding_share(lengths, shuffled) / 4


def test_padding_share_is_the_padded_share_of_the_token_grid():
    lengths = [10, 30, 20, 20]
    # Batches [10, 30] and [20, 20]: grids 2 * 30 + 2 * 20 = 100 tokens, of which 80 are real.
    assert padding_share(lengths, [[0, 1], [2, 3]]) == 1 - 80 / 100
    assert padding_share(lengths, [[2, 3]]) == 0.0


def test_flop_count_of_the_grouped_bilinear_is_its_matrix_product():
    # P pairs x (d1 * k) pair features x (R + 1) outputs, 2 FLOPs per multiply-add, whatever the block size
    # (the layer accumulates block products in place with addmm_).
    pairs, pair_size, block, labels = 37, 128, 16, 5
    expected = 2 * pairs * pair_size * block * labels
    head = torch.randn(pairs, pair_size // block, block)
    tail = torch.randn(pairs, pair_size // block, block)
    for block_elements in (2**10, 2**20):
        layer = GroupedBilinear(pair_size, block, labels, block_elements=block_elements)
        with torch.no_grad():
            assert round(counted_gflop(lambda: layer(head, tail)) * 1e9) == expected
