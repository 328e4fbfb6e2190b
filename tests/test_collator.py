"""Tests of DataCollatorForDocRE against docs/batch_format.md, with a slow element-by-element oracle."""

import json

import numpy as np
import pytest
import torch
from data_helpers import (
    REDOCRED_DEV,
    bay_document,
    docred_rel2id,
    festival_document,
    minilm_tokenizer,
    no_entity_document,
    one_entity_document,
    small_rel2id,
    unlabelled,
)

from data_collators import DataCollatorForDocRE, document_to_row, featurize_dataset, featurize_document

NUM_LABELS = len(small_rel2id())


def featurize(*docs):
    return [featurize_document(doc, minilm_tokenizer(), small_rel2id()) for doc in docs]


def oracle(features, pad_token_id):
    """Build the batch element by element, straight from the table of docs/batch_format.md."""
    B = len(features)
    L = max(len(f["input_ids"]) for f in features)
    E = max([1] + [len(f["mention_positions"]) for f in features])
    M = max([1] + [len(m) for f in features for m in f["mention_positions"]])
    input_ids = [[pad_token_id] * L for _ in range(B)]
    attention_mask = [[0] * L for _ in range(B)]
    mention_positions = [[[-1] * M for _ in range(E)] for _ in range(B)]
    hts, pair_document_index, labels = [], [], []
    for b, f in enumerate(features):
        for i, token in enumerate(f["input_ids"]):
            input_ids[b][i] = token
            attention_mask[b][i] = 1
        for e, entity in enumerate(f["mention_positions"]):
            for m, position in enumerate(entity):
                mention_positions[b][e][m] = position
        for pair, row in zip(f["hts"], f.get("labels", [None] * len(f["hts"]))):
            hts.append(pair)
            pair_document_index.append(b)
            labels.append(row)
    return input_ids, attention_mask, mention_positions, hts, pair_document_index, labels


def test_batch_matches_format_and_oracle():
    features = featurize(festival_document(), one_entity_document(), bay_document())
    tokenizer = minilm_tokenizer()
    batch = DataCollatorForDocRE(tokenizer=tokenizer)(features)
    assert list(batch) == ["input_ids", "attention_mask", "mention_positions", "hts", "pair_document_index",
                           "sentence_ids", "labels", "evidence_labels"]
    # Sentences and evidence, one subword and one label at a time.
    S = max(len(f["sentence_spans"]) for f in features)
    sentence_ids = [[-1] * batch["input_ids"].shape[1] for _ in features]
    evidence = []
    for b, f in enumerate(features):
        for sentence, (start, end) in enumerate(f["sentence_spans"]):
            for position in range(start, end):
                sentence_ids[b][position] = sentence
        rows = [[0.0] * S for _ in f["hts"]]
        for pair_row, _, sentence in f["relation_evidence"]:
            rows[pair_row][sentence] = 1.0
        evidence.extend(rows)
    assert batch["sentence_ids"].dtype == torch.int64 and batch["sentence_ids"].tolist() == sentence_ids
    assert batch["evidence_labels"].tolist() == evidence and batch["evidence_labels"].sum() > 0
    input_ids, attention_mask, mention_positions, hts, pair_document_index, labels = oracle(
        features, tokenizer.pad_token_id
    )
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].tolist() == input_ids
    assert batch["attention_mask"].dtype == torch.int64 and batch["attention_mask"].tolist() == attention_mask
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["mention_positions"].shape == (3, 5, 2) and batch["mention_positions"].dtype == torch.int64
    assert batch["mention_positions"].tolist() == mention_positions
    assert batch["hts"].shape == (20 + 0 + 12, 2) and batch["hts"].dtype == torch.int64
    assert batch["hts"].tolist() == hts
    assert batch["pair_document_index"].dtype == torch.int64
    assert batch["pair_document_index"].tolist() == pair_document_index == [0] * 20 + [2] * 12
    assert batch["labels"].shape == (32, NUM_LABELS) and batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == labels
    assert torch.all(batch["labels"].sum(1) >= 1)


def test_padding_values():
    features = featurize(one_entity_document(), festival_document())
    batch = DataCollatorForDocRE(pad_token_id=-7)(features)
    short = len(features[0]["input_ids"])
    assert torch.all(batch["input_ids"][0, short:] == -7)
    assert torch.all(batch["attention_mask"][0, short:] == 0)
    # the one-entity document: entity 0 has one mention, the rest is -1
    assert batch["mention_positions"][0, 0, 0] == features[0]["mention_positions"][0][0]
    assert torch.all(batch["mention_positions"][0, 0, 1:] == -1)
    assert torch.all(batch["mention_positions"][0, 1:] == -1)


def test_pad_to_multiple_of():
    features = featurize(festival_document(), bay_document())
    batch = DataCollatorForDocRE(tokenizer=minilm_tokenizer(), pad_to_multiple_of=8)(features)
    longest = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
    assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in features)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        DataCollatorForDocRE(pad_token_id=0, pad_to_multiple_of=0)


def test_all_zero_pair_batch():
    features = featurize(no_entity_document(), one_entity_document())
    batch = DataCollatorForDocRE(tokenizer=minilm_tokenizer(), num_labels=NUM_LABELS)(features)
    assert batch["hts"].shape == (0, 2) and batch["hts"].dtype == torch.int64
    assert batch["pair_document_index"].shape == (0,) and batch["pair_document_index"].dtype == torch.int64
    assert batch["labels"].shape == (0, NUM_LABELS) and batch["labels"].dtype == torch.float32
    assert batch["mention_positions"].shape == (2, 1, 1)
    assert batch["mention_positions"][0].tolist() == [[-1]]
    assert batch["mention_positions"][1].tolist() == [[features[1]["mention_positions"][0][0]]]
    with pytest.raises(ValueError, match="num_labels"):
        DataCollatorForDocRE(tokenizer=minilm_tokenizer())(features)


def test_single_empty_document_batch_keeps_ranks():
    batch = DataCollatorForDocRE(pad_token_id=0)(featurize(unlabelled(no_entity_document())))
    assert batch["mention_positions"].shape == (1, 1, 1) and batch["mention_positions"].item() == -1
    assert batch["hts"].shape == (0, 2)
    assert "labels" not in batch


def test_unlabelled_batch_has_no_labels_and_mix_is_refused():
    collator = DataCollatorForDocRE(tokenizer=minilm_tokenizer())
    batch = collator(featurize(unlabelled(festival_document()), unlabelled(bay_document())))
    assert "labels" not in batch
    assert batch["hts"].shape == (32, 2)
    with pytest.raises(ValueError, match="1 of 2 documents in the batch have no labels"):
        collator(featurize(festival_document(), unlabelled(bay_document())))


def test_label_width_checks():
    features = featurize(festival_document())
    with pytest.raises(ValueError, match="different widths"):
        DataCollatorForDocRE(pad_token_id=0, num_labels=97)(features)
    broken = dict(features[0], labels=features[0]["labels"][:-1])
    with pytest.raises(ValueError, match="20 entity pairs but 19 label rows"):
        DataCollatorForDocRE(pad_token_id=0)([broken])


def test_extra_keys_ignored_and_array_inputs_accepted():
    features = featurize(festival_document(), bay_document())
    expected = DataCollatorForDocRE(pad_token_id=0)(features)
    as_arrays = [
        {
            "title": "ignored",
            "mention_spans": f["mention_spans"],
            "input_ids": np.array(f["input_ids"]),
            "mention_positions": [np.array(m) for m in f["mention_positions"]],
            "hts": torch.tensor(f["hts"]),
            "labels": np.array(f["labels"], dtype=np.int8),
            "sentence_spans": np.array(f["sentence_spans"]),
            "relation_evidence": np.array(f["relation_evidence"], dtype=np.int32).reshape(-1, 3),
        }
        for f in features
    ]
    batch = DataCollatorForDocRE(pad_token_id=0)(as_arrays)
    assert batch.keys() == expected.keys()
    for key in batch:
        assert batch[key].dtype == expected[key].dtype and torch.equal(batch[key], expected[key]), key


def test_constructor_needs_a_padding_id():
    with pytest.raises(ValueError, match="padding id"):
        DataCollatorForDocRE()
    assert DataCollatorForDocRE(tokenizer=minilm_tokenizer()).pad_token_id == minilm_tokenizer().pad_token_id


def test_empty_feature_list_is_refused():
    with pytest.raises(ValueError, match="empty"):
        DataCollatorForDocRE(pad_token_id=0)([])


# ------------------------------------------------------------------ sentences and evidence of real documents
def real_documents_in_every_label_shape():
    """Four Re-DocRED fixture documents: raw DocRED labels, builder rows, the Hub's dict of lists, and raw labels
    stripped of their evidence."""
    documents = json.loads(REDOCRED_DEV.read_text())[:4]
    raw, builder, hub, stripped = documents
    builder = document_to_row(builder)
    hub = document_to_row(hub)
    hub["labels"] = {key: [label[key] for label in hub["labels"]] for key in hub["labels"][0]}
    stripped = {**stripped, "labels": [{k: v for k, v in label.items() if k != "evidence"}
                                       for label in stripped["labels"]]}
    return documents, [raw, builder, hub, stripped]


def test_sentence_ids_and_evidence_labels_of_real_documents_against_the_raw_labels():
    documents, shaped = real_documents_in_every_label_shape()
    tokenizer = minilm_tokenizer()
    features = [featurize_document(doc, tokenizer, docred_rel2id()) for doc in shaped]
    batch = DataCollatorForDocRE(tokenizer=tokenizer)(features)
    # Reference from the raw JSON: sentence s of document b on the subwords of its words and markers, tokenized
    # one by one; evidence_labels[pair, s] = 1 iff s is evidence of a label of the pair.
    S = max(len(doc["sents"]) for doc in documents)
    sentence_ids = [[-1] * batch["input_ids"].shape[1] for _ in documents]
    evidence = []
    for b, doc in enumerate(documents):
        starts = {(m["sent_id"], m["pos"][0]) for entity in doc["vertexSet"] for m in entity}
        ends = {(m["sent_id"], m["pos"][1] - 1) for entity in doc["vertexSet"] for m in entity}
        position = 1
        for s, sent in enumerate(doc["sents"]):
            for i, word in enumerate(sent):
                count = len(tokenizer(word, add_special_tokens=False)["input_ids"]) + ((s, i) in starts) + ((s, i) in ends)
                for _ in range(count):  # "*" is one subword
                    sentence_ids[b][position] = s
                    position += 1
        assert position == len(features[b]["input_ids"]) - 1
        n = len(doc["vertexSet"])
        rows = {(h, t): [0.0] * S for h in range(n) for t in range(n) if h != t}
        if b != 3:  # the stripped document has no evidence
            for label in doc["labels"]:
                for sentence in label["evidence"]:
                    rows[label["h"], label["t"]][sentence] = 1.0
        evidence.extend(rows.values())  # insertion order: for h: for t: if h != t
    assert batch["sentence_ids"].tolist() == sentence_ids
    assert batch["evidence_labels"].shape == (len(batch["hts"]), S) and batch["evidence_labels"].dtype == torch.float32
    assert batch["evidence_labels"].tolist() == evidence
    stripped_rows = batch["pair_document_index"] == 3
    assert batch["evidence_labels"][stripped_rows].sum() == 0 and batch["evidence_labels"][~stripped_rows].sum() > 0


def test_featurized_dataset_rows_collate_like_the_features():
    from datasets import Dataset

    documents, _ = real_documents_in_every_label_shape()
    tokenizer = minilm_tokenizer()
    dataset = featurize_dataset(Dataset.from_list([document_to_row(doc) for doc in documents]), tokenizer,
                                docred_rel2id())
    collator = DataCollatorForDocRE(tokenizer=tokenizer)
    expected = collator([featurize_document(doc, tokenizer, docred_rel2id()) for doc in documents])
    batch = collator(list(dataset))
    assert batch.keys() == expected.keys()
    for key in batch:
        assert torch.equal(batch[key], expected[key]), key


def test_evidence_labels_need_labels_and_relation_evidence():
    collator = DataCollatorForDocRE(tokenizer=minilm_tokenizer())
    unlabelled_batch = collator(featurize(unlabelled(festival_document()), unlabelled(bay_document())))
    assert "sentence_ids" in unlabelled_batch and "evidence_labels" not in unlabelled_batch
    features = featurize(festival_document(), bay_document())
    older = [dict(features[0]), {k: v for k, v in features[1].items() if k != "relation_evidence"}]
    assert "evidence_labels" not in collator(older) and "labels" in collator(older)
    no_sentences = [{k: v for k, v in f.items() if k != "sentence_spans"} for f in features]
    assert not {"sentence_ids", "evidence_labels"} & set(collator(no_sentences))
