"""End-to-end data tests on real Re-DocRED test documents (the fixture): builder -> featurize_dataset -> collator."""

import json

import pytest
import torch
from data_helpers import REDOCRED_TEST, dataset_folder, minilm_tokenizer

from data_collators import DataCollatorForDocRE, RelationVocab, featurize_dataset, load_docred



@pytest.fixture(scope="module")
def raw_test():
    with open(REDOCRED_TEST) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def vocab():
    return RelationVocab.builtin("re-docred")


@pytest.fixture(scope="module")
def featurized(tmp_path_factory, vocab):
    folder = dataset_folder(tmp_path_factory.mktemp("data") / "re-docred")
    data = load_docred("re-docred", data_dir=str(folder), cache_dir=str(tmp_path_factory.mktemp("cache")))
    return featurize_dataset(data["test"], minilm_tokenizer(), vocab.rel2id)


def pair_index(h, t, n):
    return h * (n - 1) + (t if t < h else t - 1)


def test_pair_count_and_order(featurized, raw_test):
    test = featurized
    hts = test["hts"]
    assert sum(map(len, hts)) == sum(len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in raw_test)
    for doc, pairs in zip(raw_test, hts):
        n = len(doc["vertexSet"])
        assert pairs == [[h, t] for h in range(n) for t in range(n) if h != t]


def test_every_positive_triple_is_in_the_labels(featurized, raw_test, vocab):
    test = featurized
    labels = test["labels"]
    positives = 0
    for doc, rows in zip(raw_test, labels):
        n = len(doc["vertexSet"])
        assert len(rows) == n * (n - 1) and all(len(row) == 97 for row in rows)
        for label in doc["labels"]:
            assert rows[pair_index(label["h"], label["t"], n)][vocab.rel2id[label["r"]]] == 1, (doc["title"], label)
        for row in rows:
            assert row[0] == (1 if sum(row[1:]) == 0 else 0)
        positives += sum(sum(row[1:]) for row in rows)
    assert positives == sum(len(d["labels"]) for d in raw_test)  # no triple invented either


def test_no_mention_lost_in_long_documents(featurized, raw_test):
    test = featurized
    marker = minilm_tokenizer().convert_tokens_to_ids("*")
    long_documents = 0
    for doc, row in zip(raw_test, test):
        ids = row["input_ids"]
        long_documents += len(ids) > 512
        assert ids[0] == minilm_tokenizer().cls_token_id and ids[-1] == minilm_tokenizer().sep_token_id
        assert [len(m) for m in row["mention_positions"]] == [len(entity) for entity in doc["vertexSet"]]
        for positions, spans in zip(row["mention_positions"], row["mention_spans"]):
            for position, (start, end) in zip(positions, spans):
                assert position == start and 0 < position < end < len(ids)
                assert ids[start] == marker and ids[end - 1] == marker
    assert long_documents >= 1  # the check above covered documents past the encoder's 512-token window


def test_keeps_title_and_vertex_set(featurized, raw_test):
    test = featurized
    assert test.column_names == [
        "title", "vertexSet", "input_ids", "mention_positions", "mention_spans", "hts", "sentence_spans", "labels",
        "relation_evidence", "length"
    ]
    assert test["title"] == [doc["title"] for doc in raw_test]


def test_collates_real_documents(featurized, raw_test):
    test = featurized
    rows = [test[i] for i in range(4)]
    batch = DataCollatorForDocRE(tokenizer=minilm_tokenizer())(rows)
    counts = [len(d["vertexSet"]) * (len(d["vertexSet"]) - 1) for d in raw_test[:4]]
    assert batch["hts"].shape == (sum(counts), 2)
    assert batch["labels"].shape == (sum(counts), 97) and batch["labels"].dtype == torch.float32
    assert batch["labels"][:, 1:].sum().item() == sum(len(d["labels"]) for d in raw_test[:4])
    assert batch["pair_document_index"].tolist() == [b for b, c in enumerate(counts) for _ in range(c)]
    assert batch["mention_positions"].shape == (
        4,
        max(len(d["vertexSet"]) for d in raw_test[:4]),
        max(len(e) for d in raw_test[:4] for e in d["vertexSet"]),
    )
