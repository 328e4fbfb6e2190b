"""Featurization of DocRED-format documents: entity markers, subword positions, entity pairs, multi-hot labels.

Each mention is wrapped in entity markers at the word level: the marker (default `*`) is inserted as a word
of its own before the mention's first word and after its last word. Mentions that start at the same word
share one start marker; mentions that end at the same word share one end marker. The marked word list of a
document is tokenized in one call with `is_split_into_words=True`; `word_ids()` maps words to subwords.
Documents are never truncated here: the model encodes long documents in windows (and cuts them only when its
`max_document_length` says so).

Output of one document (`featurize_document`):

| key | type | meaning |
|---|---|---|
| `input_ids` | list[int] | `[CLS] marked words [SEP]` (`<s> ... </s>` for RoBERTa), exactly one special token at each end |
| `mention_positions` | list[list[int]] | per entity, per mention: subword position of its start marker |
| `mention_spans` | list[list[[int, int]]] | per entity, per mention: `[start, end)` from its start marker to its end marker (inclusive) |
| `hts` | list[[int, int]] | every ordered entity pair `h != t`, head-major (`for h: for t: if h != t`) |
| `sentence_spans` | list[[int, int]] | per sentence of `sents`: its `[start, end)` subwords, markers included |
| `labels` | list[list[int]] | one multi-hot row of `len(rel2id)` per pair, column 0 (`Na`) set iff the pair has no relation; only for labelled documents |
| `relation_evidence` | list[[int, int, int]] | gold evidence, one `(pair row, label column, sentence)` per evidence sentence of a label (none for labels without `evidence`); only for labelled documents |

`featurize_dataset` adds `length` (`len(input_ids)`): the Trainer's `length_column_name`, read by length-grouped
training batches (`train_sampling_strategy="group_by_length"`) and length-sorted evaluation batches.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

from datasets import Dataset, DatasetDict, Features, List, Value

# One document at a time lives in the model package's inference-time processing (shipped to the Hub with the
# model, so the pipeline featurizes exactly as training does); this module adds the dataset level.
from modeling_pemscl.processing_pemscl import _featurize_documents, check_tokenizer, featurize_document  # noqa: F401

FEATURIZED_COLUMNS = ("input_ids", "mention_positions", "mention_spans", "hts", "sentence_spans", "labels",
                      "relation_evidence", "length")
"""Columns `featurize_dataset` adds (`labels` and `relation_evidence` only for labelled splits)."""
DEFAULT_KEEP_COLUMNS = ("title", "vertexSet")
"""Raw columns `featurize_dataset` keeps for evaluation (the raw `labels` become the multi-hot `labels`)."""


def featurize_batch(
    batch: Mapping[str, list], tokenizer, rel2id: Mapping[str, int], entity_marker: str = "*",
    word_prefix_space: bool = True,
) -> dict[str, list]:
    """Featurize a batch of documents in one tokenizer call, for `Dataset.map(batched=True)`.

    Args:
        batch: Columns of documents (`title`, `sents`, `vertexSet`, optionally `labels`), as `Dataset.map`
            passes them.
        tokenizer: See `featurize_document`.
        rel2id: See `featurize_document`.
        entity_marker: See `featurize_document`.
        word_prefix_space: See `featurize_document`.

    Raises:
        ValueError: See `featurize_document`.

    Returns:
        Columns `input_ids`, `mention_positions`, `mention_spans`, `sentence_spans` (lists, as in
        `featurize_document`), `hts` (one int64 NumPy array [P, 2] per document), `labels` (one int8 NumPy array
        [P, len(rel2id)] per document) and `relation_evidence` (int32 [K, 3]), both `None` for unlabelled documents. NumPy arrays keep the many label rows out of Python
        objects; `Dataset.map` stores them as nested lists. Also `length`, each document's `len(input_ids)`.
    """
    docs = [dict(zip(batch.keys(), values)) for values in zip(*batch.values())]
    features = _featurize_documents(docs, tokenizer, rel2id, entity_marker, word_prefix_space)
    for feature in features:
        feature["length"] = len(feature["input_ids"])
    return {column: [feature[column] for feature in features] for column in FEATURIZED_COLUMNS}


def _featurize_split(
    dataset: Dataset, tokenizer, rel2id: Mapping[str, int], entity_marker: str, word_prefix_space: bool, keep_columns,
    batch_size, num_proc,
) -> Dataset:
    kept = [column for column in dataset.column_names if column in keep_columns and column != "labels"]
    features = Features(
        {
            **{column: dataset.features[column] for column in kept},
            "input_ids": List(Value("int32")),
            "mention_positions": List(List(Value("int32"))),
            "mention_spans": List(List(List(Value("int32")))),
            "hts": List(List(Value("int32"))),
            "sentence_spans": List(List(Value("int32"))),
            "labels": List(List(Value("int8"))),
            "relation_evidence": List(List(Value("int32"))),
            "length": Value("int32"),
        }
    )
    featurized = dataset.map(
        featurize_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "rel2id": dict(rel2id), "entity_marker": entity_marker,
                   "word_prefix_space": word_prefix_space},
        remove_columns=[column for column in dataset.column_names if column not in kept],
        features=features,
        desc="Featurizing documents",
    )
    unlabelled = featurized.data.column("labels").null_count
    if unlabelled == featurized.num_rows:
        return featurized.remove_columns(["labels", "relation_evidence"])
    if unlabelled:
        missing = [(index, title) for index, (title, labels) in
                   enumerate(zip(featurized["title"], featurized.data.column("labels").is_null().to_pylist())) if labels]
        named = ", ".join(f"document {index} {title!r}" for index, title in missing[:5])
        raise ValueError(
            f"{unlabelled} of {featurized.num_rows} documents have no labels while the others have ({named}"
            f"{', ...' if len(missing) > 5 else ''}): a split must be all labelled (give those documents `labels`, "
            "[] when they have no relation) or all unlabelled."
        )
    return featurized


def featurize_dataset(
    data: Union[Dataset, DatasetDict],
    tokenizer,
    rel2id: Mapping[str, int],
    entity_marker: str = "*",
    word_prefix_space: bool = True,
    keep_columns: Sequence[str] = DEFAULT_KEEP_COLUMNS,
    batch_size: int = 100,
    num_proc: Optional[int] = None,
) -> Union[Dataset, DatasetDict]:
    """Featurize every document of a dataset (or of every split) with `Dataset.map`.

    Args:
        data: A `Dataset` or `DatasetDict` of DocRED-format documents (e.g. from `load_docred`).
        tokenizer: See `featurize_document`.
        rel2id: See `featurize_document`.
        entity_marker: See `featurize_document`.
        word_prefix_space: See `featurize_document`.
        keep_columns: Raw columns kept beside the features, for evaluation (default `title`, `vertexSet`).
            The raw `labels` column is always replaced by the multi-hot `labels`.
        batch_size: Documents per tokenizer call.
        num_proc: Processes for `Dataset.map`.

    Raises:
        ValueError: If a document is invalid, or a split mixes labelled and unlabelled documents.

    Returns:
        The same container type with the columns of `featurize_document` (`labels` only for labelled splits)
        plus `keep_columns`.
    """
    args = (tokenizer, rel2id, entity_marker, word_prefix_space, tuple(keep_columns), batch_size, num_proc)
    if isinstance(data, DatasetDict):
        return DatasetDict({split: _featurize_split(dataset, *args) for split, dataset in data.items()})
    return _featurize_split(data, *args)
