"""Featurization of DocRED-format documents: entity markers, subword positions, entity pairs, multi-hot labels.

Each mention is wrapped in entity markers at the word level: the marker (default `*`) is inserted as a word
of its own before the mention's first word and after its last word. Mentions that start at the same word
share one start marker; mentions that end at the same word share one end marker. The marked word list of a
document is tokenized in one call with `is_split_into_words=True`; `word_ids()` maps words to subwords.
Documents are never truncated: the model encodes long documents with overlapping windows.

Output of one document (`featurize_document`):

| key | type | meaning |
|---|---|---|
| `input_ids` | list[int] | `[CLS] marked words [SEP]` (`<s> ... </s>` for RoBERTa), exactly one special token at each end |
| `mention_positions` | list[list[int]] | per entity, per mention: subword position of its start marker |
| `mention_spans` | list[list[[int, int]]] | per entity, per mention: `[start, end)` from its start marker to its end marker (inclusive) |
| `hts` | list[[int, int]] | every ordered entity pair `h != t`, head-major (`for h: for t: if h != t`) |
| `labels` | list[list[int]] | one multi-hot row of `len(rel2id)` per pair, column 0 (`Na`) set iff the pair has no relation; only for labelled documents |
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from .relations import check_rel2id
from .validation import document_triples, validate_document

FEATURIZED_COLUMNS = ("input_ids", "mention_positions", "mention_spans", "hts", "labels")
"""Columns `featurize_dataset` adds (`labels` only for labelled splits)."""
DEFAULT_KEEP_COLUMNS = ("title", "vertexSet")
"""Raw columns `featurize_dataset` keeps for evaluation (the raw `labels` become the multi-hot `labels`)."""


def _byte_level_without_prefix_space(pre_tokenizer_state: Any) -> bool:
    if isinstance(pre_tokenizer_state, dict):
        if pre_tokenizer_state.get("type") == "ByteLevel" and not pre_tokenizer_state.get("add_prefix_space"):
            return True
        return any(_byte_level_without_prefix_space(value) for value in pre_tokenizer_state.values())
    if isinstance(pre_tokenizer_state, list):
        return any(_byte_level_without_prefix_space(value) for value in pre_tokenizer_state)
    return False


def check_tokenizer(tokenizer) -> None:
    """Check that a tokenizer can featurize pre-split words.

    Args:
        tokenizer: A Hugging Face tokenizer.

    Raises:
        ValueError: If the tokenizer is not a fast (Rust `tokenizers`) tokenizer, which `word_ids()` needs, or
            it is a byte-level BPE tokenizer (RoBERTa, GPT-2 style) loaded without `add_prefix_space=True`,
            which would glue every word to the previous one.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: featurization maps words to subwords with "
            "`word_ids()`, which only fast tokenizers provide. Load it with `AutoTokenizer.from_pretrained(...)`."
        )
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if pre_tokenizer is not None and _byte_level_without_prefix_space(json.loads(pre_tokenizer.__getstate__())):
        raise ValueError(
            f"{type(tokenizer).__name__} is a byte-level BPE tokenizer without a prefix space, so pre-split words "
            "would be tokenized as if glued together. Load the tokenizer with add_prefix_space=True, e.g. "
            "`AutoTokenizer.from_pretrained(name, add_prefix_space=True)`."
        )


def _mark_words(doc: Mapping[str, Any], marker: str) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Insert markers; return the marked words and, per entity and mention, its (start, end) marker word index."""
    offsets = [0]
    for sent in doc["sents"]:
        offsets.append(offsets[-1] + len(sent))
    word_spans = [
        [(offsets[m["sent_id"]] + m["pos"][0], offsets[m["sent_id"]] + m["pos"][1] - 1) for m in entity]
        for entity in doc["vertexSet"]
    ]
    starts = {first for entity in word_spans for first, _ in entity}
    ends = {last for entity in word_spans for _, last in entity}
    marked: list[str] = []
    start_slot: dict[int, int] = {}
    end_slot: dict[int, int] = {}
    index = 0
    for sent in doc["sents"]:
        for word in sent:
            if index in starts:
                start_slot[index] = len(marked)
                marked.append(marker)
            marked.append(word)
            if index in ends:
                end_slot[index] = len(marked)
                marked.append(marker)
            index += 1
    slots = [[(start_slot[first], end_slot[last]) for first, last in entity] for entity in word_spans]
    return marked, slots


def _pairs(num_entities: int) -> np.ndarray:
    """Every ordered pair h != t, head-major: (0, 1), (0, 2), ..., (1, 0), (1, 2), ... as an int64 [P, 2] array."""
    if num_entities < 2:
        return np.zeros((0, 2), dtype=np.int64)
    heads = np.repeat(np.arange(num_entities), num_entities - 1)
    tails = np.tile(np.arange(num_entities - 1), num_entities)
    return np.stack([heads, tails + (tails >= heads)], axis=1).astype(np.int64)


def _pair_labels(doc: Mapping[str, Any], num_entities: int, rel2id: Mapping[str, int]) -> Optional[np.ndarray]:
    """Multi-hot int8 [P, len(rel2id)] rows in the order of `_pairs`, or None for an unlabelled document."""
    triples = document_triples(doc)
    if triples is None:
        return None
    labels = np.zeros((num_entities * (num_entities - 1), len(rel2id)), dtype=np.int8)
    if triples:
        heads, tails, relations = (np.asarray(column) for column in zip(*triples))
        # Row of (head, tail) in head-major order without the diagonal.
        rows = heads * (num_entities - 1) + tails - (tails > heads)
        labels[rows, [rel2id[relation] for relation in relations]] = 1
    labels[:, 0] = ~labels[:, 1:].any(axis=1)  # Na (column 0) iff no relation
    return labels


def _featurize_documents(
    docs: Sequence[Mapping[str, Any]], tokenizer, rel2id: Mapping[str, int], entity_marker: str
) -> list[dict[str, Any]]:
    """Featurize documents with a single tokenizer call; labels are `None` for unlabelled documents."""
    if not entity_marker or entity_marker.isspace():
        raise ValueError("entity_marker must be a non-blank string such as '*'.")
    check_tokenizer(tokenizer)
    check_rel2id(rel2id)
    for doc in docs:
        validate_document(doc, relation_ids=rel2id)
    marked = [_mark_words(doc, entity_marker) for doc in docs]
    encoding = tokenizer(
        [words for words, _ in marked],
        is_split_into_words=True,
        add_special_tokens=True,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "sequence longer than the maximum" warning: documents are never truncated
    )
    features = []
    for i, (doc, (words, slots)) in enumerate(zip(docs, marked)):
        word_ids = encoding.word_ids(i)
        if len(word_ids) < 2 or word_ids[0] is not None or word_ids[-1] is not None or word_ids.count(None) != 2:
            raise ValueError(
                f"{type(tokenizer).__name__} must add exactly one special token at each end of a document "
                "(like [CLS] ... [SEP] or <s> ... </s>)."
            )
        first = [-1] * len(words)
        last = [-1] * len(words)
        for position, word in enumerate(word_ids):
            if word is not None:
                if first[word] < 0:
                    first[word] = position
                last[word] = position
        if slots and first[slots[0][0][0]] < 0:
            raise ValueError(f"The entity marker {entity_marker!r} is tokenized to no subword; choose another.")
        num_entities = len(slots)
        features.append(
            {
                "input_ids": list(encoding["input_ids"][i]),
                "mention_positions": [[first[start] for start, _ in entity] for entity in slots],
                "mention_spans": [[[first[start], last[end] + 1] for start, end in entity] for entity in slots],
                "hts": _pairs(num_entities),
                "labels": _pair_labels(doc, num_entities, rel2id),
            }
        )
    return features


def featurize_document(
    doc: Mapping[str, Any], tokenizer, rel2id: Mapping[str, int], entity_marker: str = "*"
) -> dict[str, Any]:
    """Featurize one DocRED-format document (see the module docstring for the output).

    Args:
        doc: A raw DocRED JSON document (labels `{h, t, r, evidence}`), a `DocREDBuilder` row (labels
            `{head, tail, relation_id, ...}`) or a row of the Hub's `docred` dataset.
        tokenizer: A fast tokenizer; byte-level BPE tokenizers (RoBERTa) must be loaded with
            `add_prefix_space=True`.
        rel2id: Relation id -> label index with `Na` at 0 (e.g. `RelationVocab.rel2id`).
        entity_marker: The word inserted before and after every mention.

    Raises:
        ValueError: If the document is invalid (see `validate_document`; unknown relation ids included), or
            the tokenizer cannot featurize pre-split words (see `check_tokenizer`).

    Returns:
        A dict of Python lists: `input_ids`, `mention_positions`, `mention_spans`, `hts` and, only when the
        document carries labels, `labels`.
    """
    features = _featurize_documents([doc], tokenizer, rel2id, entity_marker)[0]
    features["hts"] = features["hts"].tolist()
    if features["labels"] is None:
        del features["labels"]
    else:
        features["labels"] = features["labels"].tolist()
    return features


def featurize_batch(
    batch: Mapping[str, list], tokenizer, rel2id: Mapping[str, int], entity_marker: str = "*"
) -> dict[str, list]:
    """Featurize a batch of documents in one tokenizer call, for `Dataset.map(batched=True)`.

    Args:
        batch: Columns of documents (`title`, `sents`, `vertexSet`, optionally `labels`), as `Dataset.map`
            passes them.
        tokenizer: See `featurize_document`.
        rel2id: See `featurize_document`.
        entity_marker: See `featurize_document`.

    Raises:
        ValueError: See `featurize_document`.

    Returns:
        Columns `input_ids`, `mention_positions`, `mention_spans` (lists, as in `featurize_document`), `hts`
        (one int64 NumPy array [P, 2] per document) and `labels` (one int8 NumPy array [P, len(rel2id)] per
        document, `None` for unlabelled documents). NumPy arrays keep the many label rows out of Python
        objects; `Dataset.map` stores them as nested lists.
    """
    docs = [dict(zip(batch.keys(), values)) for values in zip(*batch.values())]
    features = _featurize_documents(docs, tokenizer, rel2id, entity_marker)
    return {column: [feature[column] for feature in features] for column in FEATURIZED_COLUMNS}


def _featurize_split(
    dataset: Dataset, tokenizer, rel2id: Mapping[str, int], entity_marker: str, keep_columns, batch_size, num_proc
) -> Dataset:
    kept = [column for column in dataset.column_names if column in keep_columns and column != "labels"]
    features = Features(
        {
            **{column: dataset.features[column] for column in kept},
            "input_ids": List(Value("int32")),
            "mention_positions": List(List(Value("int32"))),
            "mention_spans": List(List(List(Value("int32")))),
            "hts": List(List(Value("int32"))),
            "labels": List(List(Value("int8"))),
        }
    )
    featurized = dataset.map(
        featurize_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"tokenizer": tokenizer, "rel2id": dict(rel2id), "entity_marker": entity_marker},
        remove_columns=[column for column in dataset.column_names if column not in kept],
        features=features,
        desc="Featurizing documents",
    )
    unlabelled = featurized.data.column("labels").null_count
    if unlabelled == featurized.num_rows:
        return featurized.remove_columns("labels")
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
    args = (tokenizer, rel2id, entity_marker, tuple(keep_columns), batch_size, num_proc)
    if isinstance(data, DatasetDict):
        return DatasetDict({split: _featurize_split(dataset, *args) for split, dataset in data.items()})
    return _featurize_split(data, *args)
