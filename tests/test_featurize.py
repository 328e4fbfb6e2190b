"""Tests of data_collators.featurize on hand-written documents, with WordPiece and byte-level BPE tokenizers."""

import copy
import json

import pytest
from data_helpers import (
    REDOCRED_DEV,
    bay_document,
    byte_level_tokenizer,
    docred_rel2id,
    festival_document,
    hand_written_documents,
    minilm_tokenizer,
    no_entity_document,
    one_entity_document,
    small_rel2id,
    unlabelled,
)
from datasets import Dataset, DatasetDict

from data_collators import document_to_row, featurize_batch, featurize_dataset, featurize_document

TOKENIZERS = {"wordpiece": minilm_tokenizer, "byte_level_bpe": byte_level_tokenizer}


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


def word_tokens(tokenizer, word):
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def oracle(doc, tokenizer, marker="*"):
    """Slow, obviously correct featurization: tokenize word by word, inserting markers as words."""
    marker_ids = word_tokens(tokenizer, marker)
    words = [word for sent in doc["sents"] for word in sent]
    offsets = [sum(len(sent) for sent in doc["sents"][:i]) for i in range(len(doc["sents"]))]
    spans = [[(offsets[m["sent_id"]] + m["pos"][0], offsets[m["sent_id"]] + m["pos"][1] - 1) for m in e]
             for e in doc["vertexSet"]]
    starts = {first for e in spans for first, _ in e}
    ends = {last for e in spans for _, last in e}
    ids = [tokenizer.cls_token_id]
    start_at, end_at = {}, {}
    for i, word in enumerate(words):
        if i in starts:
            start_at[i] = len(ids)
            ids += marker_ids
        ids += word_tokens(tokenizer, word)
        if i in ends:
            ids += marker_ids
            end_at[i] = len(ids)
    ids.append(tokenizer.sep_token_id)
    positions = [[start_at[first] for first, _ in e] for e in spans]
    mention_spans = [[[start_at[first], end_at[last]] for first, last in e] for e in spans]
    return ids, positions, mention_spans


@pytest.mark.parametrize("make_doc", [festival_document, bay_document, one_entity_document, no_entity_document])
def test_matches_word_by_word_oracle(tokenizer, make_doc):
    doc = make_doc()
    features = featurize_document(doc, tokenizer, small_rel2id())
    ids, positions, spans = oracle(doc, tokenizer)
    assert features["input_ids"] == ids
    assert features["mention_positions"] == positions
    assert features["mention_spans"] == spans


def test_known_wordpiece_values():
    tokenizer = minilm_tokenizer()
    doc = {
        "title": "Ada in Paris",
        "sents": [["Ada", "visited", "Paris", "."]],
        "vertexSet": [
            [{"name": "Ada", "sent_id": 0, "pos": [0, 1], "type": "PER"}],
            [{"name": "Paris", "sent_id": 0, "pos": [2, 3], "type": "LOC"}],
        ],
        "labels": [{"h": 0, "t": 1, "r": "P17", "evidence": [0]}],
    }
    features = featurize_document(doc, tokenizer, small_rel2id())
    assert tokenizer.convert_ids_to_tokens(features["input_ids"]) == [
        "[CLS]", "*", "ada", "*", "visited", "*", "paris", "*", ".", "[SEP]"
    ]
    assert features["mention_positions"] == [[1], [5]]
    assert features["mention_spans"] == [[[1, 4]], [[5, 8]]]
    assert features["hts"] == [[0, 1], [1, 0]]
    assert features["labels"] == [[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]


def test_markers_sit_around_each_mention(tokenizer):
    doc = festival_document()
    features = featurize_document(doc, tokenizer, small_rel2id())
    ids = features["input_ids"]
    marker = word_tokens(tokenizer, "*")
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids.count(tokenizer.cls_token_id) == 1 and ids.count(tokenizer.sep_token_id) == 1
    for entity, positions, spans in zip(doc["vertexSet"], features["mention_positions"], features["mention_spans"]):
        for mention, position, (start, end) in zip(entity, positions, spans):
            words = doc["sents"][mention["sent_id"]][mention["pos"][0] : mention["pos"][1]]
            first, last = word_tokens(tokenizer, words[0]), word_tokens(tokenizer, words[-1])
            assert position == start
            assert ids[start : start + len(marker)] == marker
            assert ids[start + len(marker) : start + len(marker) + len(first)] == first  # first subword follows
            assert ids[end - len(marker) : end] == marker
            assert ids[end - len(marker) - len(last) : end - len(marker)] == last  # end marker follows last
            inner = [t for word in words for t in word_tokens(tokenizer, word)]
            assert ids[start + len(marker) : end - len(marker)] == inner


def test_nested_mentions_share_markers():
    tokenizer = minilm_tokenizer()
    features = featurize_document(bay_document(), tokenizer, small_rel2id())
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"])
    # "* Port * Alder * Bay *": one start marker before Port (two mentions), one end marker after Bay (two).
    assert tokens[:9] == ["[CLS]", "*", "port", "*", "al", "##der", "*", "bay", "*"]
    assert features["mention_positions"][0] == features["mention_positions"][1][:1] == [1]
    assert features["mention_spans"][1][0][1] == features["mention_spans"][2][0][1] == 9
    assert tokens.count("*") == 2 * 3 + 2  # three distinct starts and ends in sentence 0, one mention in sentence 1


def test_pairs_are_head_major_and_labels_multi_hot(tokenizer):
    rel2id = small_rel2id()
    features = featurize_document(festival_document(), tokenizer, rel2id)
    assert features["hts"] == [[h, t] for h in range(5) for t in range(5) if h != t]
    assert len(features["labels"]) == 20 and all(len(row) == len(rel2id) for row in features["labels"])
    rows = {tuple(pair): row for pair, row in zip(features["hts"], features["labels"])}
    assert rows[(1, 2)] == [0, 1, 1, 0, 0, 0]  # P17 and P131 on one pair
    assert rows[(0, 1)] == [0, 0, 0, 1, 0, 0]
    assert rows[(0, 2)] == [0, 1, 0, 0, 0, 0]
    assert rows[(0, 3)] == [0, 0, 0, 0, 1, 0]
    assert rows[(0, 4)] == [0, 0, 0, 0, 0, 1]
    positive = {(0, 1), (1, 2), (0, 2), (0, 3), (0, 4)}
    for pair, row in rows.items():
        if pair not in positive:
            assert row == [1, 0, 0, 0, 0, 0], pair
    assert (2, 1) in rows and rows[(2, 1)][0] == 1  # direction matters


def test_rel2id_order_decides_label_columns():
    rel2id = {"Na": 0, "P571": 1, "P112": 2, "P276": 3, "P131": 4, "P17": 5}
    features = featurize_document(festival_document(), minilm_tokenizer(), rel2id)
    rows = {tuple(pair): row for pair, row in zip(features["hts"], features["labels"])}
    assert rows[(1, 2)] == [0, 0, 0, 0, 1, 1]
    assert rows[(0, 4)] == [0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("make_doc", [one_entity_document, no_entity_document])
def test_zero_pair_documents(tokenizer, make_doc):
    doc = make_doc()
    features = featurize_document(doc, tokenizer, small_rel2id())
    assert features["hts"] == []
    assert features["labels"] == []
    assert len(features["mention_positions"]) == len(doc["vertexSet"])


def test_unlabelled_documents_have_no_labels_key():
    features = featurize_document(unlabelled(festival_document()), minilm_tokenizer(), small_rel2id())
    assert "labels" not in features
    assert len(features["hts"]) == 20


def test_builder_rows_and_hub_rows_featurize_like_raw_json():
    tokenizer, rel2id = minilm_tokenizer(), small_rel2id()
    raw = festival_document()
    expected = featurize_document(raw, tokenizer, rel2id)
    row = document_to_row(raw)
    assert featurize_document(row, tokenizer, rel2id) == expected
    hub_row = {**row, "labels": {key: [label[key] for label in row["labels"]] for key in row["labels"][0]}}
    assert featurize_document(hub_row, tokenizer, rel2id) == expected


def test_no_truncation_of_long_documents():
    tokenizer = minilm_tokenizer()
    doc = festival_document()
    doc["sents"].append(["filler"] * 1500 + ["Norvania"])
    doc["vertexSet"][2].append({"name": "Norvania", "sent_id": 3, "pos": [1500, 1501], "type": "LOC"})
    features = featurize_document(doc, tokenizer, small_rel2id())
    assert len(features["input_ids"]) > 1500
    last = features["mention_positions"][2][-1]
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][last : last + 5]) == [
        "*", "nor", "##vani", "##a", "*"
    ]
    assert features["input_ids"][-1] == tokenizer.sep_token_id


def test_custom_entity_marker():
    tokenizer = minilm_tokenizer()
    features = featurize_document(festival_document(), tokenizer, small_rel2id(), entity_marker="#")
    marker = tokenizer.convert_tokens_to_ids("#")
    positions = [p for entity in features["mention_positions"] for p in entity]
    assert all(features["input_ids"][p] == marker for p in positions)
    with pytest.raises(ValueError, match="entity_marker"):
        featurize_document(festival_document(), tokenizer, small_rel2id(), entity_marker=" ")


def test_byte_level_tokenizer_without_prefix_space_is_refused():
    with pytest.raises(ValueError, match="add_prefix_space=True"):
        featurize_document(festival_document(), byte_level_tokenizer(add_prefix_space=False), small_rel2id())


def test_words_alone_without_prefix_space_as_the_research_code_tokenizes_them():
    """`word_prefix_space=False` (converted research checkpoints): every word and marker is split as
    `tokenizer.tokenize(word)` splits it alone, with no leading space, which is what the research code feeds RoBERTa;
    a tokenizer that adds the space is refused for such a model."""
    tokenizer = byte_level_tokenizer(add_prefix_space=False)
    doc = festival_document()
    features = featurize_document(doc, tokenizer, small_rel2id(), word_prefix_space=False)
    words = [word for sent in doc["sents"] for word in sent]
    starts = {(m["sent_id"], m["pos"][0]) for entity in doc["vertexSet"] for m in entity}
    ends = {(m["sent_id"], m["pos"][1] - 1) for entity in doc["vertexSet"] for m in entity}
    expected = [tokenizer.cls_token]
    for sent_id, sent in enumerate(doc["sents"]):
        for index, word in enumerate(sent):
            expected += (["*"] if (sent_id, index) in starts else []) + tokenizer.tokenize(word)
            expected += ["*"] if (sent_id, index) in ends else []
    expected.append(tokenizer.sep_token)
    assert tokenizer.convert_ids_to_tokens(features["input_ids"]) == expected
    assert not any(token.startswith("Ġ") for token in tokenizer.tokenize(words[0]))  # no space: no 'Ġ'
    with pytest.raises(ValueError, match="add_prefix_space=False"):
        featurize_document(doc, byte_level_tokenizer(add_prefix_space=True), small_rel2id(), word_prefix_space=False)


def test_rel2id_without_na_at_zero_is_refused():
    with pytest.raises(ValueError, match="`Na` must have index 0"):
        featurize_document(festival_document(), minilm_tokenizer(), {"P17": 0, "Na": 1})


def test_slow_tokenizer_is_refused():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        featurize_document(festival_document(), SlowTokenizer(), small_rel2id())


def test_invalid_document_and_unknown_relation_are_refused():
    doc = festival_document()
    doc["labels"][2]["r"] = "P999"
    with pytest.raises(ValueError, match=r"Harbor Lights Festival.*labels\[2\]\.r"):
        featurize_document(doc, minilm_tokenizer(), small_rel2id())
    doc = festival_document()
    doc["vertexSet"][1][0]["pos"] = [7, 11]
    with pytest.raises(ValueError, match=r"Harbor Lights Festival.*vertexSet\[1\]\[0\]\.pos"):
        featurize_document(doc, minilm_tokenizer(), small_rel2id())


def test_batch_equals_one_by_one(tokenizer):
    docs = hand_written_documents()
    batch = {key: [doc[key] for doc in docs] for key in docs[0]}
    out = featurize_batch(batch, tokenizer, small_rel2id())
    assert set(out) == {"input_ids", "mention_positions", "mention_spans", "hts", "sentence_spans", "labels",
                        "relation_evidence", "length"}
    assert out["length"] == [len(ids) for ids in out["input_ids"]]
    assert [hts.dtype for hts in out["hts"]] == ["int64"] * 4
    assert [labels.dtype for labels in out["labels"]] == ["int8"] * 4
    for i, doc in enumerate(docs):
        single = featurize_document(doc, tokenizer, small_rel2id())
        batched = {key: out[key][i] for key in single}
        for key in ("hts", "labels", "relation_evidence"):
            batched[key] = batched[key].tolist()
        assert batched == single
    assert out["hts"][3].shape == (0, 2) and out["labels"][3].shape == (0, len(small_rel2id()))


def test_featurize_dataset_keeps_title_and_vertex_set():
    docs = [document_to_row(doc) for doc in hand_written_documents()]
    data = DatasetDict(
        {
            "train": Dataset.from_list(docs),
            "test": Dataset.from_list([{**doc, "labels": None} for doc in docs]),
        }
    )
    out = featurize_dataset(data, minilm_tokenizer(), small_rel2id())
    assert out["train"].column_names == [
        "title", "vertexSet", "input_ids", "mention_positions", "mention_spans", "hts", "sentence_spans", "labels",
        "relation_evidence", "length"
    ]
    assert "labels" not in out["test"].column_names  # an unlabelled split loses the column
    assert out["train"]["title"] == [doc["title"] for doc in docs]
    expected = featurize_document(docs[0], minilm_tokenizer(), small_rel2id())
    row = out["train"][0]
    assert {key: row[key] for key in expected} == expected
    assert out["train"][3]["hts"] == [] and out["train"][3]["labels"] == []
    assert out["train"]["length"] == [len(ids) for ids in out["train"]["input_ids"]]


def test_featurize_dataset_refuses_mixed_labelling():
    docs = [document_to_row(doc) for doc in hand_written_documents()]
    docs[1] = {**docs[1], "labels": None}
    with pytest.raises(ValueError, match=rf"1 of 4 documents have no labels while the others have \(document 1 {docs[1]['title']!r}\)"):
        featurize_dataset(Dataset.from_list(docs), minilm_tokenizer(), small_rel2id())


def test_input_document_is_not_modified():
    doc = festival_document()
    before = copy.deepcopy(doc)
    featurize_document(doc, minilm_tokenizer(), small_rel2id())
    assert doc == before


# ------------------------------------------------------------------ sentences and evidence
def fixture_documents():
    return json.loads(REDOCRED_DEV.read_text())


def oracle_sentence_spans(doc, tokenizer, marker="*"):
    """Each sentence's `[start, end)` and its subwords, tokenizing its words and markers one by one (a start marker
    before the first word of a mention, an end marker after its last; one marker per word however many mentions
    share it)."""
    marker_ids = word_tokens(tokenizer, marker)
    starts = {(m["sent_id"], m["pos"][0]) for entity in doc["vertexSet"] for m in entity}
    ends = {(m["sent_id"], m["pos"][1] - 1) for entity in doc["vertexSet"] for m in entity}
    position, spans, subwords = 1, [], []
    for sent_id, sent in enumerate(doc["sents"]):
        ids = []
        for index, word in enumerate(sent):
            ids += (marker_ids if (sent_id, index) in starts else []) + word_tokens(tokenizer, word)
            ids += marker_ids if (sent_id, index) in ends else []
        spans.append([position, position + len(ids)])
        subwords.append(ids)
        position += len(ids)
    return spans, subwords


@pytest.mark.parametrize("make_doc", [festival_document, bay_document, one_entity_document, no_entity_document])
def test_sentence_spans_cover_each_sentences_words_and_markers(tokenizer, make_doc):
    doc = make_doc()
    features = featurize_document(doc, tokenizer, small_rel2id())
    spans, subwords = oracle_sentence_spans(doc, tokenizer)
    assert features["sentence_spans"] == spans
    for (start, end), ids in zip(features["sentence_spans"], subwords):
        assert features["input_ids"][start:end] == ids
    assert spans[-1][1] == len(features["input_ids"]) - 1  # the sentences tile everything but the special tokens


def test_sentence_spans_of_real_documents():
    tokenizer = minilm_tokenizer()
    for doc in fixture_documents():
        features = featurize_document(doc, tokenizer, docred_rel2id())
        spans, subwords = oracle_sentence_spans(doc, tokenizer)
        assert features["sentence_spans"] == spans, doc["title"]
        assert [features["input_ids"][start:end] for start, end in spans] == subwords
        # Every mention's markers lie inside the span of its sentence.
        for entity, mention_spans in zip(doc["vertexSet"], features["mention_spans"]):
            for mention, (start, end) in zip(entity, mention_spans):
                sentence_start, sentence_end = spans[mention["sent_id"]]
                assert sentence_start <= start < end <= sentence_end


def test_a_sentence_without_subwords_gets_an_empty_span_where_it_would_start():
    tokenizer = minilm_tokenizer()
    doc = festival_document()
    doc["sents"].insert(1, ["\u200b"])  # a zero-width space: no subword
    for entity in doc["vertexSet"]:
        for mention in entity:
            mention["sent_id"] += mention["sent_id"] >= 1
    for label in doc["labels"]:
        label["evidence"] = [s + (s >= 1) for s in label["evidence"]]
    assert word_tokens(tokenizer, "\u200b") == []
    features = featurize_document(doc, tokenizer, small_rel2id())
    spans, _ = oracle_sentence_spans(doc, tokenizer)
    assert features["sentence_spans"] == spans and spans[1][0] == spans[1][1] == spans[0][1]


def oracle_relation_evidence(doc, rel2id):
    """Gold evidence rows `(pair row, label column, sentence)` read from the raw DocRED labels: the pair row is the
    index of `(h, t)` among the pairs `for h: for t: if h != t`."""
    num_entities = len(doc["vertexSet"])
    pairs = [(h, t) for h in range(num_entities) for t in range(num_entities) if h != t]
    rows = set()
    for label in doc["labels"]:
        for sentence in label.get("evidence", []):
            rows.add((pairs.index((label["h"], label["t"])), rel2id[label["r"]], sentence))
    return [list(row) for row in sorted(rows)]


def hub_shape(row):
    """A builder row with its labels as the Hub's dict of lists."""
    keys = ("head", "tail", "relation_id", "relation_text", "evidence")
    return {**row, "labels": {key: [label[key] for label in row["labels"]] for key in keys}}


def test_relation_evidence_from_each_label_shape():
    tokenizer, rel2id = minilm_tokenizer(), docred_rel2id()
    documents = fixture_documents()
    assert any(label["evidence"] == [] for doc in documents for label in doc["labels"])  # labels without sentences
    assert any(len(label["evidence"]) > 1 for doc in documents for label in doc["labels"])
    for doc in documents:
        expected = oracle_relation_evidence(doc, rel2id)
        row = document_to_row(doc)
        for shape, source in (("raw", doc), ("builder", row), ("hub", hub_shape(row))):
            assert featurize_document(source, tokenizer, rel2id)["relation_evidence"] == expected, (doc["title"], shape)
    # Two relations of one pair keep their own evidence (one row per label column).
    features = featurize_document(festival_document(), tokenizer, small_rel2id())
    assert [row for row in features["relation_evidence"] if row[0] == 5] == [[5, 1, 1], [5, 2, 1]]  # pair (1, 2)
    assert features["relation_evidence"] == oracle_relation_evidence(festival_document(), small_rel2id())


def test_labels_without_evidence_give_no_evidence_rows():
    tokenizer, rel2id = minilm_tokenizer(), small_rel2id()
    doc = festival_document()
    del doc["labels"][0]["evidence"]  # raw label without the key
    doc["labels"][1]["evidence"] = []
    features = featurize_document(doc, tokenizer, rel2id)
    assert features["relation_evidence"] == oracle_relation_evidence(doc, rel2id)
    assert not any(row[0] == 0 for row in features["relation_evidence"])  # pair (0, 1) lost its only evidence
    assert features["labels"] == featurize_document(festival_document(), tokenizer, rel2id)["labels"]
    row = document_to_row(doc)
    assert row["labels"][0]["evidence"] == []
    assert featurize_document(row, tokenizer, rel2id)["relation_evidence"] == features["relation_evidence"]
    hub = hub_shape(row)
    del hub["labels"]["evidence"]  # the Hub's shape without an evidence column
    no_evidence = featurize_document(hub, tokenizer, rel2id)
    assert no_evidence["relation_evidence"] == [] and no_evidence["labels"] == features["labels"]
    builder_none = {**row, "labels": [{**label, "evidence": None} for label in row["labels"]]}
    assert featurize_document(builder_none, tokenizer, rel2id)["relation_evidence"] == []
    assert "relation_evidence" not in featurize_document(unlabelled(doc), tokenizer, rel2id)
