"""Tests of data_collators.relations on the built-in DocRED rel_info.json / rel2id.json and small files."""

import json

import pytest
from data_helpers import BUILTIN_VOCABULARY_DIR

from data_collators import RelationVocab, read_rel2id, read_rel_info, rel2id_from_rel_info


@pytest.mark.parametrize("dataset", ["docred", "re-docred"])
def test_builtin_vocabulary_has_the_97_labels(dataset):
    vocab = RelationVocab.builtin(dataset)
    assert vocab.num_labels == 97 and len(vocab.relation_ids) == 96
    assert vocab.id2label[0] == "Na"
    assert vocab.id2label[1] == "P17" and vocab.label2id["P17"] == 1  # the ATLOP order of rel2id.json
    assert vocab.id2label[2] == "P131"
    assert vocab.relation_names["P17"] == "country"
    assert vocab.relation_names["P131"] == "located in the administrative territorial entity"
    assert sorted(vocab.id2label) == list(range(97))
    assert {label: index for index, label in vocab.id2label.items()} == vocab.label2id
    assert vocab.relation_ids[0] == "P17" and "Na" not in vocab.relation_ids


def test_read_helpers():
    rel_info = read_rel_info(BUILTIN_VOCABULARY_DIR / "rel_info.json")
    assert len(rel_info) == 96 and rel_info["P6"] == "head of government"
    rel2id = read_rel2id(BUILTIN_VOCABULARY_DIR / "rel2id.json")
    assert list(rel2id.values()) == list(range(97)) and list(rel2id)[:3] == ["Na", "P17", "P131"]


def test_rel2id_from_rel_info_alone_is_deterministic():
    vocab = RelationVocab.from_files(rel_info_file=BUILTIN_VOCABULARY_DIR / "rel_info.json")
    assert vocab.num_labels == 97
    assert list(vocab.rel2id)[:5] == ["Na", "P6", "P17", "P19", "P20"]  # numeric Wikidata order
    shuffled = dict(reversed(list(read_rel_info(BUILTIN_VOCABULARY_DIR / "rel_info.json").items())))
    assert rel2id_from_rel_info(shuffled) == vocab.rel2id  # independent of the file's order


def test_rel2id_from_rel_info_orders_numerically():
    assert rel2id_from_rel_info({"P1001": "a", "P17": "b", "P6": "c", "P131": "d"}) == {
        "Na": 0, "P6": 1, "P17": 2, "P131": 3, "P1001": 4
    }


def test_malformed_files_are_refused(tmp_path):
    bad_na = tmp_path / "rel2id.json"
    bad_na.write_text(json.dumps({"Na": 1, "P17": 0}))
    with pytest.raises(ValueError, match="`Na` must have index 0"):
        read_rel2id(bad_na)
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps({"Na": 0, "P17": 2}))
    with pytest.raises(ValueError, match="0 .. 1"):
        read_rel2id(gap)
    rel_info = tmp_path / "rel_info.json"
    rel_info.write_text(json.dumps({"P17": "country", "P131": "located in"}))
    rel2id = tmp_path / "small_rel2id.json"
    rel2id.write_text(json.dumps({"Na": 0, "P17": 1}))
    with pytest.raises(ValueError, match="list different relations"):
        RelationVocab.from_files(rel2id, rel_info)
    with pytest.raises(ValueError, match="rel2id_file and/or rel_info_file"):
        RelationVocab.from_files()
    with pytest.raises(FileNotFoundError):
        RelationVocab.from_dir(tmp_path / "nowhere")


def test_vocab_with_rel2id_only_has_no_names(tmp_path):
    path = tmp_path / "rel2id.json"
    path.write_text(json.dumps({"P17": 1, "Na": 0, "P131": 2}))
    vocab = RelationVocab.from_dir(tmp_path)
    assert vocab.id2label == {0: "Na", 1: "P17", 2: "P131"}
    assert vocab.relation_names == {}


def test_builtin_vocabulary_of_an_unknown_dataset_names_the_known_ones():
    with pytest.raises(ValueError, match=r"'docred', 're-docred'.*rel2id.json"):
        RelationVocab.builtin("tacred")
