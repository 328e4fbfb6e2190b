"""Tests of the DocRED builder (`load_docred`): sources, validation, skip_invalid, label regimes, caching."""

import json
import logging
import os

import pytest
from data_helpers import (
    dataset_folder,
    REDOCRED_DEV,
    REDOCRED_TEST,
    bay_document,
    festival_document,
    no_entity_document,
    one_entity_document,
    small_rel2id,
    unlabelled,
    write_json,
)

from data_collators import DocREDBuilder, document_to_row, load_docred

BUILDER_LOGGER = "data_collators.builder"


@pytest.fixture
def small_dir(tmp_path):
    """A Re-DocRED-style folder: train and test files with the hand-written documents, plus rel2id.json."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_json(folder / "train_revised.json", [festival_document(), bay_document(), one_entity_document()])
    write_json(folder / "test_revised.json", [bay_document(), no_entity_document()])
    write_json(folder / "rel2id.json", small_rel2id())
    return folder


def triples(split):
    return [[(l["head"], l["tail"], l["relation_id"]) for l in labels] for labels in split["labels"]]


def raw_triples(docs):
    return [[(l["h"], l["t"], l["r"]) for l in doc["labels"]] for doc in docs]


def test_data_dir_loads_present_files_as_splits(small_dir, tmp_path):
    data = load_docred("re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "cache"))
    assert sorted(data) == ["test", "train"]  # no dev file: no validation split
    assert data["train"]["title"] == ["Harbor Lights Festival", "Port Alder Bay", "Lonely Lighthouse"]
    assert triples(data["train"]) == raw_triples([festival_document(), bay_document(), one_entity_document()])
    row = data["test"][0]
    assert row["vertexSet"][1] == [
        {"name": "Port Alder Bay", "sent_id": 0, "pos": [0, 3], "type": "LOC"},
        {"name": "bay", "sent_id": 1, "pos": [3, 4], "type": "LOC"},
    ]
    assert row["labels"] == [
        {"head": 1, "tail": 3, "relation_id": "P17", "relation_text": "", "evidence": [0]}
    ]  # rel2id.json has no names
    assert data["test"][1]["vertexSet"] == [] and data["test"][1]["labels"] == []


def test_data_dir_without_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dev_revised.json"):
        load_docred("re-docred", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_unlabelled_documents_get_none_labels(tmp_path):
    write_json(tmp_path / "test.json", [unlabelled(festival_document()), unlabelled(one_entity_document())])
    data = load_docred("docred", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert list(data) == ["test"]
    assert data["test"]["labels"] == [None, None]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["vertexSet"][1][0].update(pos=[7, 12]), "vertexSet[1][0].pos"),
        (lambda d: d["vertexSet"][2][0].update(sent_id=5), "vertexSet[2][0].sent_id"),
        (lambda d: d["vertexSet"].__setitem__(3, []), "vertexSet[3]"),
        (lambda d: d["labels"][0].update(h=11), "labels[0].h"),
        (lambda d: d["labels"][0].update(r="P999"), "labels[0].r"),
        (lambda d: d["vertexSet"][0][0].pop("name"), "vertexSet[0][0].name"),
    ],
)
def test_invalid_document_raises_value_error(small_dir, tmp_path, mutate, field):
    doc = festival_document()
    mutate(doc)
    write_json(small_dir / "test_revised.json", [bay_document(), doc])
    with pytest.raises(ValueError) as error:
        load_docred("re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "cache"))
    assert "Harbor Lights Festival" in str(error.value) and f"`{field}`" in str(error.value)
    assert "test_revised.json" in str(error.value)


def test_skip_invalid_counts_in_one_warning(small_dir, tmp_path, caplog):
    bad_pos, bad_label = festival_document(), bay_document()
    bad_pos["vertexSet"][0][0]["pos"] = [3, 3]
    bad_label["labels"][0]["t"] = 40
    bad_pos["title"], bad_label["title"] = "Broken One", "Broken Two"
    write_json(small_dir / "test_revised.json", [bad_pos, bay_document(), bad_label, no_entity_document()])
    with caplog.at_level(logging.WARNING, logger=BUILDER_LOGGER):
        data = load_docred("re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "cache"), skip_invalid=True)
    assert data["test"]["title"] == ["Port Alder Bay", "Quiet Page"]
    skipped = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    assert len(skipped) == 1
    assert "Skipped 2 invalid document(s) of 4" in skipped[0] and "'test'" in skipped[0]
    assert "Broken One" in skipped[0]


def test_data_files_any_split_names_and_relative_to_data_dir(small_dir, tmp_path):
    data = load_docred(
        "re-docred",
        data_dir=str(small_dir),
        data_files={"train": "test_revised.json", "validation": "train_revised.json"},
        cache_dir=str(tmp_path / "cache"),
    )
    assert data["train"]["title"] == ["Port Alder Bay", "Quiet Page"]
    assert data["validation"].num_rows == 3


def _ten_triple_docs():
    first, second = festival_document(), bay_document()
    second["labels"] += [
        {"h": 0, "t": 3, "r": "P17", "evidence": []},
        {"h": 2, "t": 3, "r": "P17", "evidence": []},
        {"h": 3, "t": 1, "r": "P131", "evidence": []},
    ]
    return [first, second, one_entity_document()]  # 6 + 4 + 0 = 10 triples


@pytest.mark.parametrize("rate, expected_kept", [(0.0, 10), (0.3, 7), (0.25, 8), (1.0, 0)])
def test_label_drop_is_exact_and_train_only(tmp_path, rate, expected_kept):
    train = write_json(tmp_path / "train.json", _ten_triple_docs())
    test = write_json(tmp_path / "test.json", _ten_triple_docs())
    data = load_docred(
        "re-docred",
        data_files={"train": str(train), "test": str(test)},
        cache_dir=str(tmp_path / "cache"),
        label_drop_rate=rate,
        label_drop_seed=3,
    )
    kept = triples(data["train"])
    assert sum(map(len, kept)) == expected_kept  # round(0.25 * 10) = 2 dropped (banker's rounding)
    full = raw_triples(_ten_triple_docs())
    assert all(set(k) <= set(f) for k, f in zip(kept, full))
    assert triples(data["test"]) == full


def test_label_drop_depends_on_seed_only(tmp_path):
    train = write_json(tmp_path / "train.json", _ten_triple_docs())

    def kept(seed, cache):
        data = load_docred(
            "re-docred", data_files={"train": str(train)}, cache_dir=str(tmp_path / cache),
            label_drop_rate=0.5, label_drop_seed=seed,
        )
        return triples(data["train"])

    assert kept(1, "a") == kept(1, "b")
    assert any(kept(seed, "c") != kept(1, "a") for seed in (2, 3, 4))


def test_label_regime_without_train_split_is_refused(tmp_path, small_dir):
    with pytest.raises(ValueError, match="act on the `train` split"):
        load_docred(
            "re-docred", data_files={"test": str(small_dir / "test_revised.json")},
            cache_dir=str(tmp_path / "c"), label_drop_rate=0.5,
        )


def test_label_drop_rate_out_of_range(tmp_path, small_dir):
    with pytest.raises(ValueError, match="label_drop_rate"):
        load_docred("re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "c"), label_drop_rate=1.5)


def test_train_labels_file_matches_titles_and_entities(small_dir, tmp_path, caplog):
    # Noisy labels for the training documents: another order of documents, entities of the festival document
    # listed in another order, one triple naming an entity the training document lacks.
    noisy_festival = festival_document()
    order = [3, 0, 4, 2, 1]  # noisy index -> gold index
    noisy_festival["vertexSet"] = [festival_document()["vertexSet"][g] for g in order]
    noisy_festival["vertexSet"].append([{"name": "Elsewhere", "sent_id": 2, "pos": [2, 3], "type": "LOC"}])
    noisy_festival["labels"] = [
        {"h": 1, "t": 4, "r": "P276", "evidence": []},  # gold (0, 1)
        {"h": 3, "t": 1, "r": "P571", "evidence": []},  # gold (2, 0)
        {"h": 1, "t": 5, "r": "P17", "evidence": []},  # entity 5 matches nothing: left out
    ]
    noisy_bay = bay_document()
    noisy_bay["labels"] = []
    labels_file = write_json(tmp_path / "noisy.json", [noisy_bay, one_entity_document(), noisy_festival])
    with caplog.at_level(logging.WARNING, logger=BUILDER_LOGGER):
        data = load_docred(
            "re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "cache"), train_labels_file=str(labels_file)
        )
    assert triples(data["train"]) == [[(0, 1, "P276"), (2, 0, "P571")], [], []]
    assert data["train"]["vertexSet"][0] == document_to_row(festival_document())["vertexSet"]
    assert triples(data["test"]) == raw_triples([bay_document(), no_entity_document()])
    assert any("1 triple(s)" in r.getMessage() for r in caplog.records)


def test_train_labels_file_missing_title(small_dir, tmp_path, caplog):
    labels_file = write_json(tmp_path / "noisy.json", [bay_document(), one_entity_document()])
    with pytest.raises(ValueError, match="Harbor Lights Festival"):
        load_docred(
            "re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "c1"), train_labels_file=str(labels_file)
        )
    with caplog.at_level(logging.WARNING, logger=BUILDER_LOGGER):
        data = load_docred(
            "re-docred", data_dir=str(small_dir), cache_dir=str(tmp_path / "c2"),
            train_labels_file=str(labels_file), skip_invalid=True,
        )
    assert data["train"]["title"] == ["Port Alder Bay", "Lonely Lighthouse"]
    assert any("Skipped 1 training document" in r.getMessage() for r in caplog.records)


def test_builtin_vocabulary_without_files(tmp_path):
    """No rel2id.json / rel_info.json anywhere: DocRED's built-in vocabulary names and checks relations."""
    train = write_json(tmp_path / "train.json", [festival_document()])
    data = load_docred("re-docred", data_files={"train": str(train)}, cache_dir=str(tmp_path / "cache"))
    label = data["train"][0]["labels"][0]
    assert (label["relation_id"], label["relation_text"]) == ("P276", "location")
    unknown = festival_document()
    unknown["labels"][0]["r"] = "P99999"
    bad = write_json(tmp_path / "bad.json", [unknown])
    with pytest.raises(ValueError, match=r"bad.json.*Festival.*P99999"):
        load_docred("docred", data_files={"train": str(bad)}, cache_dir=str(tmp_path / "cache2"))


def test_custom_vocabulary_files_replace_the_builtin_one(tmp_path):
    """Another DocRED-format dataset with its own relations: ids are checked against the files given."""
    document = festival_document()
    document["labels"] = [{**document["labels"][0], "r": "R_custom"}]
    train = write_json(tmp_path / "train.json", [document])
    rel_info = write_json(tmp_path / "my_relations.json", {"R_custom": "custom relation"})
    data = load_docred("re-docred", data_files={"train": str(train)}, cache_dir=str(tmp_path / "cache"),
                       rel_info_file=str(rel_info))
    assert data["train"][0]["labels"][0]["relation_text"] == "custom relation"
    with pytest.raises(ValueError, match="R_custom"):  # unknown to the built-in DocRED vocabulary
        load_docred("re-docred", data_files={"train": str(train)}, cache_dir=str(tmp_path / "cache2"))


def test_edited_source_file_rebuilds_the_cache(small_dir, tmp_path):
    cache = str(tmp_path / "cache")
    first = load_docred("re-docred", data_dir=str(small_dir), cache_dir=cache)
    assert first["test"].num_rows == 2
    path = small_dir / "test_revised.json"
    write_json(path, [bay_document()])
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_docred("re-docred", data_dir=str(small_dir), cache_dir=cache)
    assert second["test"].num_rows == 1


# ----- the shared Re-DocRED / DocRED files -----


def test_redocred_folder_loads_as_shipped_and_is_cached(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    folder = dataset_folder(tmp_path / "re-docred")
    data = load_docred("re-docred", data_dir=str(folder), cache_dir=cache)
    assert sorted(data) == ["test", "validation"]  # no train_revised.json in the fixture folder
    with open(REDOCRED_TEST) as f:
        raw = json.load(f)
    with open(REDOCRED_DEV) as f:
        raw_dev = json.load(f)
    assert data["validation"].num_rows == len(raw_dev) == 12 and data["test"].num_rows == len(raw) == 12
    assert sum(map(len, data["validation"]["labels"])) == sum(len(d["labels"]) for d in raw_dev)
    assert sum(map(len, data["test"]["labels"])) == sum(len(d["labels"]) for d in raw)
    assert [] in data["test"]["labels"]  # the document without relations keeps an empty list
    assert data["test"]["title"] == [doc["title"] for doc in raw]
    assert triples(data["test"]) == raw_triples(raw)
    first_label = data["test"][0]["labels"][0]
    assert first_label == {
        "head": raw[0]["labels"][0]["h"],
        "tail": raw[0]["labels"][0]["t"],
        "relation_id": raw[0]["labels"][0]["r"],
        "relation_text": "publication date",
        "evidence": raw[0]["labels"][0]["evidence"],
    }

    def must_not_run(self, **kwargs):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(DocREDBuilder, "_generate_examples", must_not_run)
    again = load_docred("re-docred", data_dir=str(folder), cache_dir=cache)
    assert again["test"].cache_files == data["test"].cache_files
    assert again["test"]["title"] == data["test"]["title"]


def test_demo_regime_drops_half_of_training_triples(tmp_path):
    data = load_docred(
        "re-docred",
        data_files={"train": str(REDOCRED_DEV), "test": str(REDOCRED_TEST)},
        cache_dir=str(tmp_path / "cache"),
        label_drop_rate=0.5,
        label_drop_seed=13,
    )
    assert sorted(data) == ["test", "train"]
    with open(REDOCRED_DEV) as f:
        total = sum(len(d["labels"]) for d in json.load(f))
    train_triples = sum(map(len, data["train"]["labels"]))
    assert train_triples == total - round(0.5 * total)
    with open(REDOCRED_TEST) as f:
        assert triples(data["test"]) == raw_triples(json.load(f))  # test labels untouched
    with open(REDOCRED_DEV) as f:
        full = raw_triples(json.load(f))
    kept = triples(data["train"])
    assert all(set(k) <= set(f) for k, f in zip(kept, full))
    # pairs whose every triple was dropped become false NA: count documents that lost some but not all
    assert sum(0 < len(k) < len(f) for k, f in zip(kept, full)) >= 9  # of the 11 documents with relations


def test_docred_folder_with_unlabelled_test(tmp_path):
    data = load_docred("docred", data_dir=str(dataset_folder(tmp_path / "docred", "docred")), cache_dir=str(tmp_path / "cache"))
    assert list(data) == ["test"] and data["test"].num_rows == 6
    assert data["test"]["labels"][:3] == [None, None, None]


# ----- files and splits that cannot be read as they are -----
def load_one(tmp_path, path, **options):
    return load_docred("re-docred", data_files={"test": str(path)}, cache_dir=str(tmp_path / "cache"), **options)


def test_unreadable_files_are_named(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"title": "a", "sents": }]')
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON \(Expecting value at line 1, column 26\)"):
        load_one(tmp_path, broken)
    latin = tmp_path / "latin.json"
    latin.write_bytes(json.dumps([festival_document()]).replace("Harbor", "H\u00e4rbor").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.json: not UTF-8 text"):
        load_one(tmp_path, latin)
    empty = write_json(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match=r"empty.json: holds no documents"):
        load_one(tmp_path, empty)


def test_duplicate_titles_are_rejected_naming_both_positions(tmp_path):
    twice = write_json(tmp_path / "twice.json", [festival_document(), bay_document(), festival_document()])
    with pytest.raises(ValueError, match=r"twice.json: documents 0 and 2 have the same title 'Harbor Lights Festival'"):
        load_one(tmp_path, twice)


def test_errors_name_the_document_position(tmp_path):
    bad = bay_document()
    bad["labels"][0]["evidence"] = [99]
    path = write_json(tmp_path / "data.json", [festival_document(), bad])
    with pytest.raises(ValueError, match=r"data.json, document 1: Document 'Port Alder Bay': `labels\[0\].evidence` \[99\]"):
        load_one(tmp_path, path)


def test_skip_invalid_names_every_skipped_document_and_a_split_left_empty_fails(tmp_path, caplog):
    first, second = festival_document(), bay_document()
    first["vertexSet"][0][0]["sent_id"] = 9
    second["labels"][0]["evidence"] = "x"
    path = write_json(tmp_path / "data.json", [first, second, one_entity_document()])
    with caplog.at_level(logging.WARNING, logger=BUILDER_LOGGER):
        data = load_one(tmp_path, path, skip_invalid=True)
    assert data["test"]["title"] == [one_entity_document()["title"]]
    message = next(r.getMessage() for r in caplog.records if "Skipped" in r.getMessage())
    assert "Skipped 2 invalid document(s) of 3" in message
    assert "document 0: Document 'Harbor Lights Festival'" in message and "document 1: Document 'Port Alder Bay'" in message
    all_bad = write_json(tmp_path / "all_bad.json", [first, second])
    with pytest.raises(ValueError, match=r"all_bad.json: every one of its 2 document\(s\) is invalid"):
        load_one(tmp_path, all_bad, skip_invalid=True)


def test_a_file_mixing_labelled_and_unlabelled_documents_is_named(tmp_path):
    path = write_json(tmp_path / "mixed.json", [festival_document(), unlabelled(bay_document())])
    with pytest.raises(ValueError, match=r"mixed.json: 1 of 2 documents have no `labels`.*document 1 'Port Alder Bay'"):
        load_one(tmp_path, path)
