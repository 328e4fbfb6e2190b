"""Tests of data_collators.validation: every bad input raises a ValueError naming the title and the field."""

import pytest
from data_helpers import (
    bay_document,
    festival_document,
    no_entity_document,
    one_entity_document,
    small_rel2id,
    unlabelled,
)

from data_collators import DocREDBuilder, document_to_row, document_triples, validate_document
from data_collators.validation import REQUIRED_KEYS, REQUIRED_LABEL_KEYS, REQUIRED_MENTION_KEYS

TITLE = "Harbor Lights Festival"


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


BAD_INPUTS = {
    # name: (mutation, field named in the message)
    "pos end past sentence": (_set(("vertexSet", 1, 0, "pos"), [7, 11]), "vertexSet[1][0].pos"),
    "pos start negative": (_set(("vertexSet", 2, 0, "pos"), [-1, 5]), "vertexSet[2][0].pos"),
    "pos start == end": (_set(("vertexSet", 3, 1, "pos"), [0, 0]), "vertexSet[3][1].pos"),
    "pos start > end": (_set(("vertexSet", 3, 1, "pos"), [2, 1]), "vertexSet[3][1].pos"),
    "pos not a pair": (_set(("vertexSet", 0, 0, "pos"), [1]), "vertexSet[0][0].pos"),
    "pos in the wrong sentence": (_set(("vertexSet", 3, 0, "sent_id"), 2), "vertexSet[3][0].pos"),
    "sent_id too large": (_set(("vertexSet", 2, 0, "sent_id"), 3), "vertexSet[2][0].sent_id"),
    "sent_id negative": (_set(("vertexSet", 2, 0, "sent_id"), -1), "vertexSet[2][0].sent_id"),
    "sent_id a string": (_set(("vertexSet", 2, 0, "sent_id"), "0"), "vertexSet[2][0].sent_id"),
    "mention name not a string": (_set(("vertexSet", 1, 0, "name"), None), "vertexSet[1][0].name"),
    "mention type not a string": (_set(("vertexSet", 0, 1, "type"), 7), "vertexSet[0][1].type"),
    "empty entity": (_set(("vertexSet", 3), []), "vertexSet[3]"),
    "head out of range": (_set(("labels", 0, "h"), 5), "labels[0].h"),
    "head negative": (_set(("labels", 0, "h"), -1), "labels[0].h"),
    "tail out of range": (_set(("labels", 1, "t"), 9), "labels[1].t"),
    "head equals tail": (_set(("labels", 4, "t"), 0), "labels[4].t"),
    "unknown relation": (_set(("labels", 2, "r"), "P999"), "labels[2].r"),
    "Na as a relation": (_set(("labels", 2, "r"), "Na"), "labels[2].r"),
    "missing sents": (_delete(("sents",)), "sents"),
    "missing vertexSet": (_delete(("vertexSet",)), "vertexSet"),
    "missing mention pos": (_delete(("vertexSet", 1, 1, "pos")), "vertexSet[1][1].pos"),
    "missing mention sent_id": (_delete(("vertexSet", 1, 1, "sent_id")), "vertexSet[1][1].sent_id"),
    "missing mention type": (_delete(("vertexSet", 0, 0, "type")), "vertexSet[0][0].type"),
    "missing label relation": (_delete(("labels", 3, "r")), "labels[3].r"),
    "missing label head": (_delete(("labels", 0, "h")), "labels[0].h"),
    "sentence not a word list": (_set(("sents", 1), "Port Alder lies"), "sents"),
    "evidence not a list": (_set(("labels", 0, "evidence"), "x"), "labels[0].evidence"),
    "evidence not integers": (_set(("labels", 1, "evidence"), [0, "1"]), "labels[1].evidence"),
    "evidence past the last sentence": (_set(("labels", 2, "evidence"), [1, 3]), "labels[2].evidence"),
    "evidence negative": (_set(("labels", 2, "evidence"), [-1]), "labels[2].evidence"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_title_and_field(case):
    mutate, field = BAD_INPUTS[case]
    doc = festival_document()
    mutate(doc)
    with pytest.raises(ValueError) as error:
        validate_document(doc, relation_ids=small_rel2id())
    assert TITLE in str(error.value)
    assert f"`{field}`" in str(error.value)


def test_a_sent_id_that_is_not_an_integer_says_so():
    doc = festival_document()
    doc["vertexSet"][2][0]["sent_id"] = "0"
    with pytest.raises(ValueError, match=r"`vertexSet\[2\]\[0\]\.sent_id` '0' must be an integer sentence index "
                                         r"\(0 \.\. 2\), got str"):
        validate_document(doc)


def test_a_bad_place_is_named_before_a_missing_name():
    doc = festival_document()
    del doc["vertexSet"][1][0]["name"]
    doc["vertexSet"][1][0]["pos"] = [7, 99]
    with pytest.raises(ValueError, match=r"`vertexSet\[1\]\[0\]\.pos` \[7, 99\] is outside sentence"):
        validate_document(doc)


def test_missing_title_is_named():
    doc = festival_document()
    del doc["title"]
    with pytest.raises(ValueError, match="`title` is a required key"):
        validate_document(doc)


def test_unknown_relation_is_only_checked_with_a_vocabulary():
    doc = festival_document()
    doc["labels"][0]["r"] = "P999"
    validate_document(doc)  # no vocabulary: nothing to check against
    with pytest.raises(ValueError, match=r"labels\[0\]\.r"):
        validate_document(doc, relation_ids={"Na", "P17"})


@pytest.mark.parametrize(
    "doc",
    [festival_document(), bay_document(), one_entity_document(), no_entity_document(), unlabelled(bay_document())],
)
def test_valid_documents_pass(doc):
    assert validate_document(doc, relation_ids=small_rel2id()) is None


def test_builder_row_labels_are_validated_with_their_own_field_names():
    row = document_to_row(festival_document())
    validate_document(row, relation_ids=small_rel2id())
    row["labels"][1]["tail"] = 7
    with pytest.raises(ValueError, match=r"Harbor Lights Festival.*`labels\[1\]\.tail`"):
        validate_document(row)


def test_hub_dict_of_lists_labels():
    row = document_to_row(festival_document())
    columns = {key: [label[key] for label in row["labels"]] for key in row["labels"][0]}
    assert document_triples({**row, "labels": columns}) == [
        (0, 1, "P276"), (1, 2, "P17"), (1, 2, "P131"), (0, 2, "P17"), (0, 3, "P112"), (0, 4, "P571")
    ]
    del columns["relation_id"]
    with pytest.raises(ValueError, match="`labels.relation_id`"):
        validate_document({**row, "labels": columns})


def test_document_triples_none_when_unlabelled():
    assert document_triples(unlabelled(festival_document())) is None
    assert document_triples({**festival_document(), "labels": None}) is None
    assert document_triples(one_entity_document()) == []


def test_required_keys_constants():
    assert REQUIRED_KEYS == ("title", "sents", "vertexSet") == DocREDBuilder.REQUIRED_KEYS
    assert REQUIRED_MENTION_KEYS == ("name", "sent_id", "pos", "type")
    assert REQUIRED_LABEL_KEYS == ("h", "t", "r")
