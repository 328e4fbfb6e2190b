"""Inference-time processing of PEMSCL: one document in, features, a batch, back out.

This file ships to the Hub as remote code with the model (as transformers puts `processing_*.py` next to
`modeling_*.py`). It imports torch, numpy and the standard library only (tokenizers come in as arguments), never the
model classes. The project's `data_collators` builds its dataset-level featurization on it; the pipeline
(`pipeline_pemscl.py`) uses it for raw text and DocRED documents.

- **Validation** (`validate_document`). A document is a dict with `title`, `sents` (list of sentences, each a list
  of words), `vertexSet` (list of entities, each a non-empty list of mentions `{name, sent_id, pos: [start, end),
  type}`) and, when labelled, `labels`, in one of three shapes: raw DocRED JSON (a list of `{h, t, r, evidence}`),
  `DocREDBuilder` rows (a list of `{head, tail, relation_id, relation_text, evidence}`) or the Hub's `docred`
  dataset (a dict of lists `{head: [...], tail: [...], relation_id: [...]}`). A document without `labels` (or with
  `labels=None`) is unlabelled, like DocRED's test set; one with fewer than two entities has no entity pair.
- **Featurization** of one document (`featurize_document`): entity markers, subword positions, entity pairs,
  multi-hot labels (the table above `featurize_document`).
- **Collation** (`DataCollatorForDocRE`): the one batch format of the project.
- **Plain text** with character spans to a DocRED-format document (`text_to_docred`, `to_docred`), and each of
  its sentences' character span (`sentence_character_spans`).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

NA_LABEL = "Na"
"""Name of the no-relation label; always label index 0."""


def check_rel2id(rel2id: Mapping[str, int], source: str = "rel2id") -> None:
    """Check that a relation -> index mapping has `Na` at 0 and indices exactly 0 .. n-1.

    Args:
        rel2id: The mapping to check.
        source: Where the mapping came from, for the error message.

    Raises:
        ValueError: If the mapping is malformed.
    """
    if rel2id.get(NA_LABEL) != 0:
        raise ValueError(f"{source}: the no-relation label `{NA_LABEL}` must have index 0.")
    indices = list(rel2id.values())
    if not all(type(i) is int for i in indices) or sorted(indices) != list(range(len(rel2id))):
        raise ValueError(f"{source}: label indices must be the integers 0 .. {len(rel2id) - 1}, each used once.")



# ------------------------------------------------------------------ validation
REQUIRED_KEYS = ("title", "sents", "vertexSet")
"""Keys every document must have (`labels` is optional: unlabelled documents are valid)."""
REQUIRED_MENTION_KEYS = ("name", "sent_id", "pos", "type")
"""Keys every mention of `vertexSet` must have."""
REQUIRED_LABEL_KEYS = ("h", "t", "r")
"""Keys every raw DocRED label must have (`evidence` is optional)."""
BUILDER_LABEL_KEYS = ("head", "tail", "relation_id")
"""The same three fields as named by `DocREDBuilder` rows and the Hub's `docred` dataset."""


def _fail(title: Any, field: str, problem: str) -> ValueError:
    return ValueError(f"Document {title!r}: `{field}` {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def label_records(doc: Mapping[str, Any]) -> Optional[list[tuple[Any, Any, Any, tuple[str, str, str]]]]:
    """Read the labels of a document in any of the accepted shapes.

    Args:
        doc: A DocRED-format document.

    Raises:
        ValueError: If a label lacks one of its required keys (the message names the title and the field).

    Returns:
        `None` for an unlabelled document, else one `(head, tail, relation, field_names)` per label, where
        `field_names` are the three key names this document uses (for error messages). The values are not
        checked; `validate_document` does that.
    """
    labels = doc.get("labels")
    title = doc.get("title", "<untitled>")
    if labels is None:
        return None
    if isinstance(labels, Mapping):  # the Hub's `Sequence` shape: a dict of lists
        for key in BUILDER_LABEL_KEYS:
            if key not in labels:
                raise _fail(title, f"labels.{key}", "is a required key but is missing")
        columns = [labels[key] for key in BUILDER_LABEL_KEYS]
        if len({len(column) for column in columns}) > 1:
            raise _fail(title, "labels", f"columns {BUILDER_LABEL_KEYS} have different lengths")
        return [(h, t, r, BUILDER_LABEL_KEYS) for h, t, r in zip(*columns)]
    if not isinstance(labels, list):
        raise _fail(title, "labels", f"must be a list of labels, got {type(labels).__name__}")
    records = []
    for index, label in enumerate(labels):
        if not isinstance(label, Mapping):
            raise _fail(title, f"labels[{index}]", f"must be a dict, got {type(label).__name__}")
        keys = BUILDER_LABEL_KEYS if "head" in label else REQUIRED_LABEL_KEYS
        for key in keys:
            if key not in label:
                raise _fail(title, f"labels[{index}].{key}", "is a required key but is missing")
        records.append((label[keys[0]], label[keys[1]], label[keys[2]], keys))
    return records


def document_triples(doc: Mapping[str, Any]) -> Optional[list[tuple[int, int, str]]]:
    """The `(head, tail, relation_id)` triples of a document, or `None` when it is unlabelled.

    Args:
        doc: A DocRED-format document in any accepted label shape.

    Raises:
        ValueError: If a label lacks a required key.

    Returns:
        The triples in label order, or `None`.
    """
    records = label_records(doc)
    return None if records is None else [(h, t, r) for h, t, r, _ in records]


def validate_document(doc: Mapping[str, Any], relation_ids: Optional[Collection[str]] = None) -> None:
    """Check one document; raise on the first problem found.

    Checked: required keys (`REQUIRED_KEYS`, `REQUIRED_MENTION_KEYS`, `REQUIRED_LABEL_KEYS`), `sents` is a
    list of lists of words, every entity has at least one mention, every mention's `sent_id` is an integer
    sentence index, its `pos` is `[start, end)` with `0 <= start < end <= len(sentence)` and its `name` and `type`
    are strings (a mention's place is checked before its other keys), every label's head and
    tail are distinct entity indices, its optional `evidence` lists sentence indices of the document, and (when
    `relation_ids` is given) every relation id is known.

    Args:
        doc: A DocRED-format document (raw JSON or a `DocREDBuilder` row).
        relation_ids: The known relation ids (e.g. a `rel2id` mapping); `Na` is never a valid label.
            `None` skips the relation check.

    Raises:
        ValueError: Naming the document's title and the offending field, e.g.
            ``Document 'Loud Tour': `vertexSet[3][0].pos` [4, 9] is outside sentence 2 (7 words)``.
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"A document must be a dict, got {type(doc).__name__}")
    title = doc.get("title", "<untitled>")
    for key in REQUIRED_KEYS:
        if key not in doc:
            raise _fail(title, key, "is a required key but is missing")
    if not isinstance(title, str):
        raise _fail(title, "title", f"must be a string, got {type(title).__name__}")

    sents = doc["sents"]
    if not isinstance(sents, list) or not all(
        isinstance(sent, list) and all(isinstance(word, str) for word in sent) for sent in sents
    ):
        raise _fail(title, "sents", "must be a list of sentences, each a list of words (strings)")

    entities = doc["vertexSet"]
    if not isinstance(entities, list):
        raise _fail(title, "vertexSet", "must be a list of entities")
    for e, entity in enumerate(entities):
        if not isinstance(entity, list) or not entity:
            raise _fail(title, f"vertexSet[{e}]", "is an empty entity: every entity needs at least one mention")
        for m, mention in enumerate(entity):
            _validate_mention(title, f"vertexSet[{e}][{m}]", mention, sents)
    _validate_labels(doc, title, len(entities), len(sents), relation_ids)


def _validate_mention(title: str, field: str, mention: Any, sents: list[list[str]]) -> None:
    """Check one mention of `vertexSet` (named `field` in messages): its place in `sents` first, then its name
    and type."""
    if not isinstance(mention, Mapping):
        raise _fail(title, field, f"must be a dict, got {type(mention).__name__}")
    # Where the mention is comes first: a name is missing because it could not be read from a bad place.
    for key in ("sent_id", "pos"):
        if key not in mention:
            raise _fail(title, f"{field}.{key}", "is a required key but is missing")
    sent_id, pos = mention["sent_id"], mention["pos"]
    if not _is_int(sent_id):
        raise _fail(title, f"{field}.sent_id", f"{sent_id!r} must be an integer sentence index (0 .. "
                                               f"{len(sents) - 1}), got {type(sent_id).__name__}")
    if not 0 <= sent_id < len(sents):
        raise _fail(title, f"{field}.sent_id", f"{sent_id!r} is out of range ({len(sents)} sentences)")
    if not isinstance(pos, list) or len(pos) != 2 or not all(_is_int(p) for p in pos):
        raise _fail(title, f"{field}.pos", f"{pos!r} must be [start, end], two integers")
    start, end = pos
    if start >= end:
        raise _fail(title, f"{field}.pos", f"{pos!r} is empty: start must be < end")
    if start < 0 or end > len(sents[sent_id]):
        raise _fail(title, f"{field}.pos", f"{pos!r} is outside sentence {sent_id} ({len(sents[sent_id])} words)")
    for key in ("name", "type"):
        if key not in mention:
            raise _fail(title, f"{field}.{key}", "is a required key but is missing")
        if not isinstance(mention[key], str):
            raise _fail(title, f"{field}.{key}", f"{mention[key]!r} must be a string, "
                                                 f"got {type(mention[key]).__name__}")


def _validate_labels(
    doc: Mapping[str, Any],
    title: str,
    num_entities: int,
    num_sentences: int,
    relation_ids: Optional[Collection[str]],
) -> None:
    """Check the labels of a document whose entities are valid: head and tail are two distinct entity indices, the
    relation is known (when `relation_ids` is given) and the optional `evidence` lists sentence indices."""
    records = label_records(doc)
    for index, (head, tail, relation, keys) in enumerate(records or ()):
        for value, key in ((head, keys[0]), (tail, keys[1])):
            if not _is_int(value) or not 0 <= value < num_entities:
                raise _fail(title, f"labels[{index}].{key}", f"{value!r} is out of range ({num_entities} entities)")
        if head == tail:
            raise _fail(title, f"labels[{index}].{keys[1]}", f"{tail!r} equals the head: no self-relation")
        if relation_ids is not None and (relation == NA_LABEL or relation not in relation_ids):
            raise _fail(title, f"labels[{index}].{keys[2]}", f"{relation!r} is not a known relation id (rel2id)")
    labels = doc.get("labels")
    if isinstance(labels, list):
        for index, label in enumerate(labels):
            evidence = label.get("evidence")
            if evidence is None:
                continue
            if not isinstance(evidence, list) or not all(_is_int(sentence) for sentence in evidence):
                raise _fail(title, f"labels[{index}].evidence", f"{evidence!r} must be a list of sentence indices")
            outside = [sentence for sentence in evidence if not 0 <= sentence < num_sentences]
            if outside:
                raise _fail(title, f"labels[{index}].evidence",
                            f"{outside} are not sentence indices ({num_sentences} sentences)")


# ------------------------------------------------------------------ featurization
# Featurization of DocRED-format documents: entity markers, subword positions, entity pairs, multi-hot labels.
#
# Each mention is wrapped in entity markers at the word level: the marker (default `*`) is inserted as a word
# of its own before the mention's first word and after its last word. Mentions that start at the same word
# share one start marker; mentions that end at the same word share one end marker. The marked word list of a
# document is tokenized in one call with `is_split_into_words=True`; `word_ids()` maps words to subwords.
# Documents are never truncated: the model encodes long documents with overlapping windows.
#
# Output of one document (`featurize_document`):
#
# | key | type | meaning |
# |---|---|---|
# | `input_ids` | list[int] | `[CLS] marked words [SEP]` (`<s> ... </s>` for RoBERTa), exactly one special token at each end |
# | `mention_positions` | list[list[int]] | per entity, per mention: subword position of its start marker |
# | `mention_spans` | list[list[[int, int]]] | per entity, per mention: `[start, end)` from its start marker to its end marker (inclusive) |
# | `hts` | list[[int, int]] | every ordered entity pair `h != t`, head-major (`for h: for t: if h != t`) |
# | `labels` | list[list[int]] | one multi-hot row of `len(rel2id)` per pair, column 0 (`Na`) set iff the pair has no relation; only for labelled documents |


def byte_level_prefix_space(tokenizer) -> Optional[bool]:
    """For a byte-level BPE tokenizer (RoBERTa, GPT-2 style), whether it puts a space before each pre-split word
    (`add_prefix_space`); None for other tokenizers (WordPiece, SentencePiece), which split words alike either way."""
    def find(state: Any) -> Optional[bool]:
        if isinstance(state, dict):
            if state.get("type") == "ByteLevel":
                return bool(state.get("add_prefix_space"))
            state = list(state.values())
        if isinstance(state, list):
            found = [flag for flag in map(find, state) if flag is not None]
            return found[0] if found else None
        return None

    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    return None if pre_tokenizer is None else find(json.loads(pre_tokenizer.__getstate__()))


def check_tokenizer(tokenizer, word_prefix_space: bool = True) -> None:
    """Check that a tokenizer can featurize pre-split words.

    Args:
        tokenizer: A Hugging Face tokenizer.
        word_prefix_space: The model's `word_prefix_space`: whether a byte-level BPE tokenizer must put a space
            before each word (`add_prefix_space=True`, as in running text; new models) or must not (the research
            code's featurization, which converted checkpoints keep).

    Raises:
        ValueError: If the tokenizer is not a fast (Rust `tokenizers`) tokenizer, which `word_ids()` needs, or
            it is a byte-level BPE tokenizer whose `add_prefix_space` is not `word_prefix_space`: the words would
            be split into other subwords than the model was trained on.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: featurization maps words to subwords with "
            "`word_ids()`, which only fast tokenizers provide. Load it with `AutoTokenizer.from_pretrained(...)`."
        )
    prefix_space = byte_level_prefix_space(tokenizer)
    if prefix_space is not None and prefix_space != word_prefix_space:
        if word_prefix_space:
            problem = ("without a prefix space, so pre-split words would be tokenized as if glued together. Load "
                       "the tokenizer with add_prefix_space=True")
        else:
            problem = ("with a prefix space, but the model (word_prefix_space=False, as the research code's "
                       "checkpoints) was trained on words tokenized without one. Load the tokenizer with "
                       "add_prefix_space=False")
        raise ValueError(
            f"{type(tokenizer).__name__} is a byte-level BPE tokenizer {problem}, e.g. "
            f"`AutoTokenizer.from_pretrained(name, add_prefix_space={word_prefix_space})`."
        )


def _mark_words(doc: Mapping[str, Any], marker: str) -> tuple[list[str], list[list[tuple[int, int]]], list[int]]:
    """Insert markers; return the marked words, per entity and mention its (start, end) marker word index, and the
    sentence of every marked word (a marker belongs to the sentence of the word it marks)."""
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
    sentence_of: list[int] = []
    start_slot: dict[int, int] = {}
    end_slot: dict[int, int] = {}
    index = 0
    for sentence, sent in enumerate(doc["sents"]):
        for word in sent:
            if index in starts:
                start_slot[index] = len(marked)
                marked.append(marker)
            marked.append(word)
            if index in ends:
                end_slot[index] = len(marked)
                marked.append(marker)
            sentence_of.extend([sentence] * (len(marked) - len(sentence_of)))
            index += 1
    slots = [[(start_slot[first], end_slot[last]) for first, last in entity] for entity in word_spans]
    return marked, slots, sentence_of


def _sentence_spans(word_ids: Sequence[Optional[int]], sentence_of: Sequence[int], num_sentences: int) -> list[list[int]]:
    """`[start, end)` subword span of every sentence (`[p, p]` for a sentence without subwords, at the position
    where it would start)."""
    spans = []
    position = 1  # after the leading special token
    boundaries = [None] * num_sentences
    for p, word in enumerate(word_ids):
        if word is None:
            continue
        sentence = sentence_of[word]
        if boundaries[sentence] is None:
            boundaries[sentence] = [p, p + 1]
        else:
            boundaries[sentence][1] = p + 1
    for bounds in boundaries:
        if bounds is None:
            bounds = [position, position]
        spans.append(bounds)
        position = bounds[1]
    return spans


def _relation_evidence(doc: Mapping[str, Any], num_entities: int, rel2id: Mapping[str, int]) -> Optional[np.ndarray]:
    """Gold evidence as int32 rows `(pair row, label column, sentence)` (pairs in the order of `_pairs`), or None
    for an unlabelled document. A label without `evidence` contributes no row."""
    records = label_records(doc)
    if records is None:
        return None
    rows = set()
    for (head, tail, relation, _), sentences in zip(records, _label_evidence(doc)):
        pair_row = _pair_row(head, tail, num_entities)
        rows.update((pair_row, rel2id[relation], int(sentence)) for sentence in sentences)
    return np.array(sorted(rows), dtype=np.int32).reshape(-1, 3)


def _label_evidence(doc: Mapping[str, Any]) -> list[list[int]]:
    """The evidence sentences of every label of a labelled document, in label order (`[]` where absent)."""
    labels = doc["labels"]
    if isinstance(labels, Mapping):  # the Hub's dict of lists
        evidence = labels.get("evidence")
        return [list(e or []) for e in evidence] if evidence is not None else [[] for _ in labels["head"]]
    return [list(label.get("evidence") or []) for label in labels]


def _pairs(num_entities: int) -> np.ndarray:
    """Every ordered pair h != t, head-major: (0, 1), (0, 2), ..., (1, 0), (1, 2), ... as an int64 [P, 2] array."""
    if num_entities < 2:
        return np.zeros((0, 2), dtype=np.int64)
    heads = np.repeat(np.arange(num_entities), num_entities - 1)
    tails = np.tile(np.arange(num_entities - 1), num_entities)
    return np.stack([heads, tails + (tails >= heads)], axis=1).astype(np.int64)


def _pair_row(head, tail, num_entities: int):
    """Row of (head, tail) in the pair order of `_pairs` (head-major, no diagonal); ints or NumPy arrays."""
    return head * (num_entities - 1) + tail - (tail > head)


def _pair_labels(doc: Mapping[str, Any], num_entities: int, rel2id: Mapping[str, int]) -> Optional[np.ndarray]:
    """Multi-hot int8 [P, len(rel2id)] rows in the order of `_pairs`, or None for an unlabelled document."""
    triples = document_triples(doc)
    if triples is None:
        return None
    labels = np.zeros((num_entities * (num_entities - 1), len(rel2id)), dtype=np.int8)
    if triples:
        heads, tails, relations = (np.asarray(column) for column in zip(*triples))
        rows = _pair_row(heads, tails, num_entities)
        labels[rows, [rel2id[relation] for relation in relations]] = 1
    labels[:, 0] = ~labels[:, 1:].any(axis=1)  # Na (column 0) iff no relation
    return labels


def _featurize_documents(
    docs: Sequence[Mapping[str, Any]], tokenizer, rel2id: Mapping[str, int], entity_marker: str,
    word_prefix_space: bool = True,
) -> list[dict[str, Any]]:
    """Featurize documents with a single tokenizer call; labels are `None` for unlabelled documents."""
    if not entity_marker or entity_marker.isspace():
        raise ValueError("entity_marker must be a non-blank string such as '*'.")
    check_tokenizer(tokenizer, word_prefix_space)
    check_rel2id(rel2id)
    for doc in docs:
        validate_document(doc, relation_ids=rel2id)
    marked = [_mark_words(doc, entity_marker) for doc in docs]
    encoding = tokenizer(
        [words for words, _, _ in marked],
        is_split_into_words=True,
        add_special_tokens=True,
        truncation=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "sequence longer than the maximum" warning: documents are never truncated
    )
    features = []
    for i, (doc, (words, slots, sentence_of)) in enumerate(zip(docs, marked)):
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
                "sentence_spans": _sentence_spans(word_ids, sentence_of, len(doc["sents"])),
                "labels": _pair_labels(doc, num_entities, rel2id),
                "relation_evidence": _relation_evidence(doc, num_entities, rel2id),
            }
        )
    return features


def featurize_document(
    doc: Mapping[str, Any], tokenizer, rel2id: Mapping[str, int], entity_marker: str = "*",
    word_prefix_space: bool = True,
) -> dict[str, Any]:
    """Featurize one DocRED-format document (see the module docstring for the output).

    Args:
        doc: A raw DocRED JSON document (labels `{h, t, r, evidence}`), a `DocREDBuilder` row (labels
            `{head, tail, relation_id, ...}`) or a row of the Hub's `docred` dataset.
        tokenizer: A fast tokenizer; byte-level BPE tokenizers (RoBERTa) must be loaded with
            `add_prefix_space=word_prefix_space`.
        rel2id: Relation id -> label index with `Na` at 0 (e.g. `RelationVocab.rel2id`).
        entity_marker: The word inserted before and after every mention.
        word_prefix_space: The model's `config.word_prefix_space` (see `check_tokenizer`).

    Raises:
        ValueError: If the document is invalid (see `validate_document`; unknown relation ids included), or
            the tokenizer cannot featurize pre-split words (see `check_tokenizer`).

    Returns:
        A dict of Python lists: `input_ids`, `mention_positions`, `mention_spans`, `hts`, `sentence_spans` and,
        only when the document carries labels, `labels` and `relation_evidence`.
    """
    features = _featurize_documents([doc], tokenizer, rel2id, entity_marker, word_prefix_space)[0]
    features["hts"] = features["hts"].tolist()
    for key in ("labels", "relation_evidence"):
        if features[key] is None:
            del features[key]
        else:
            features[key] = features[key].tolist()
    return features


# ------------------------------------------------------------------ collation
@dataclass
class DataCollatorForDocRE:
    """Collate featurized documents (`featurize_document` / `featurize_dataset`) into a batch of tensors.

    The batch format (this is the only place that builds it; `modeling_pemscl.PemsclModel.forward` reads it).
    B documents, L = longest tokenized document in the batch (NOT truncated: the model encodes documents
    longer than the encoder's window with overlapping windows), E = most entities of a document in the batch,
    M = most mentions of an entity in the batch, P = total number of entity pairs in the batch, R = number of
    relations (96 for DocRED), R+1 label columns with NA at 0.

    | field | shape | dtype | padding | meaning |
    |---|---|---|---|---|
    | `input_ids` | [B, L] | int64 | tokenizer.pad_token_id | `[CLS] doc-with-markers [SEP]` (exactly one special token at each end) |
    | `attention_mask` | [B, L] | int64 | 0 | 1 on real tokens |
    | `mention_positions` | [B, E, M] | int64 | -1 | subword position (in `input_ids`) of each mention's start entity marker |
    | `hts` | [P, 2] | int64 | - | (head, tail) entity indices within their document; every ordered pair h != t |
    | `pair_document_index` | [P] | int64 | - | batch row of each pair; non-decreasing (document 0's pairs first, each in featurized order) |
    | `sentence_ids` | [B, L] | int64 | -1 | sentence index of each subword (-1 on special tokens and padding); only when the features carry `sentence_spans` |
    | `labels` | [P, R+1] | float32 | - | multi-hot; column 0 = NA (1 iff the pair has no relation); only when the features carry labels |
    | `evidence_labels` | [P, S] | float32 | 0 | 1 where sentence s is gold evidence of some relation of the pair (S = most sentences of a document in the batch); with `labels`, when the features carry `relation_evidence` |
    | `document_index` | [B] | int64 | - | the row of each document in its dataset; only when the features carry `document_index` (evaluation) |

    A batch where no document has 2 entities has P = 0 (`hts` of shape [0, 2], `labels` [0, R+1]);
    E and M are at least 1 so that index tensors keep their rank (an all -1 slot is "absent").

    Args:
        tokenizer: Gives the padding id (`tokenizer.pad_token_id`) when `pad_token_id` is not given.
        pad_token_id: The id `input_ids` are padded with; overrides the tokenizer's.
        num_labels: Number of label columns R+1 (`Na` included, i.e. `len(rel2id)`). Taken from the examples'
            label rows when there are any; needed when a labelled batch has no pair at all.
        pad_to_multiple_of: Round L up to a multiple of this (e.g. 8 for tensor cores).

    Raises:
        ValueError: At construction, if no padding id can be found or `pad_to_multiple_of` is not positive.
    """

    tokenizer: Any = None
    pad_token_id: Optional[int] = None
    num_labels: Optional[int] = None
    pad_to_multiple_of: Optional[int] = None

    def __post_init__(self):
        if self.pad_token_id is None and self.tokenizer is not None:
            self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("DataCollatorForDocRE needs a padding id: pass pad_token_id or a tokenizer with one.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}.")

    def _label_tensor(self, features: Sequence[Mapping[str, Any]], pair_counts: list[int]) -> Optional[torch.Tensor]:
        has_labels = [feature.get("labels") is not None for feature in features]
        if not any(has_labels):
            return None
        if not all(has_labels):
            raise ValueError(
                f"{has_labels.count(False)} of {len(features)} documents in the batch have no labels: a batch "
                "must be all labelled or all unlabelled."
            )
        blocks = [torch.as_tensor(feature["labels"], dtype=torch.float32) for feature in features]
        widths = {block.shape[1] for block in blocks if block.numel()}
        if self.num_labels is not None:
            widths.add(self.num_labels)
        if len(widths) > 1:
            raise ValueError(f"Label rows have different widths {sorted(widths)} (num_labels={self.num_labels}).")
        if not widths:
            raise ValueError(
                "No document of this labelled batch has an entity pair, so the number of label columns is "
                "unknown: pass num_labels=len(rel2id) to DataCollatorForDocRE."
            )
        width = widths.pop()
        for block, count in zip(blocks, pair_counts):
            if block.shape[0] != count:
                raise ValueError(f"A document has {count} entity pairs but {block.shape[0]} label rows.")
        return torch.cat([block.reshape(-1, width) for block in blocks])

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate a list of featurized documents.

        Args:
            features: Dicts with `input_ids`, `mention_positions`, `hts` and optionally `labels` (lists,
                NumPy arrays or tensors); other keys are ignored.

        Raises:
            ValueError: If the list is empty, labelled and unlabelled documents are mixed, label rows disagree
                with the pairs or with each other, or the label width cannot be known (see `num_labels`).

        Returns:
            The tensors of the table above.
        """
        if not features:
            raise ValueError("DataCollatorForDocRE got an empty list of features.")
        batch_size = len(features)
        lengths = [len(feature["input_ids"]) for feature in features]
        max_length = max(lengths)
        if self.pad_to_multiple_of:
            max_length = -(-max_length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((batch_size, max_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, max_length), dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths)):
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1

        mentions = [feature["mention_positions"] for feature in features]
        max_entities = max([1] + [len(entities) for entities in mentions])
        max_mentions = max([1] + [len(entity) for entities in mentions for entity in entities])
        mention_positions = torch.full((batch_size, max_entities, max_mentions), -1, dtype=torch.long)
        for row, entities in enumerate(mentions):
            for e, entity in enumerate(entities):
                mention_positions[row, e, : len(entity)] = torch.as_tensor(entity, dtype=torch.long)

        hts_blocks = [torch.as_tensor(feature["hts"], dtype=torch.long).reshape(-1, 2) for feature in features]
        pair_counts = [block.shape[0] for block in hts_blocks]
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mention_positions": mention_positions,
            "hts": torch.cat(hts_blocks),
            "pair_document_index": torch.repeat_interleave(
                torch.arange(batch_size), torch.tensor(pair_counts, dtype=torch.long)
            ),
        }
        if all(feature.get("sentence_spans") is not None for feature in features):
            num_sentences = max(len(feature["sentence_spans"]) for feature in features)
            sentence_ids = torch.full((batch_size, max_length), -1, dtype=torch.long)
            for row, feature in enumerate(features):
                for sentence, (start, end) in enumerate(feature["sentence_spans"]):
                    sentence_ids[row, start:end] = sentence
            batch["sentence_ids"] = sentence_ids
        labels = self._label_tensor(features, pair_counts)
        if labels is not None:
            batch["labels"] = labels
            if "sentence_ids" in batch and all(feature.get("relation_evidence") is not None for feature in features):
                batch["evidence_labels"] = _evidence_tensor(features, pair_counts, num_sentences)
        if all("document_index" in feature for feature in features):
            batch["document_index"] = torch.tensor([int(f["document_index"]) for f in features], dtype=torch.long)
        return batch


def _evidence_tensor(features: Sequence[Mapping[str, Any]], pair_counts: list[int], num_sentences: int) -> torch.Tensor:
    """`evidence_labels` [P, S] of a labelled batch: the union of the gold evidence of each pair's relations."""
    evidence = torch.zeros(sum(pair_counts), num_sentences)
    offset = 0
    for feature, count in zip(features, pair_counts):
        rows = torch.as_tensor(feature["relation_evidence"], dtype=torch.long).reshape(-1, 3)
        if rows.numel():
            evidence[offset + rows[:, 0], rows[:, 2]] = 1.0
        offset += count
    return evidence


# ------------------------------------------------------------------ plain text -> DocRED format
_SENTENCE_END = frozenset(".!?\u3002\uff01\uff1f")  # and the ideographic / full-width 。！？

# Scripts written without spaces between words: each of their characters is a word of its own, so a span keeps
# its exact characters ("北京" of "北京是中国的首都") instead of growing to the whole run. Han (with CJK
# symbols, Bopomofo, compatibility and extension blocks), Hiragana, Katakana (half-width too), Thai, Lao,
# Myanmar, Khmer. Korean is written with spaces and keeps whole words.
_WITHOUT_SPACES = (
    (0x0E00, 0x0EFF),    # Thai, Lao
    (0x1000, 0x109F),    # Myanmar
    (0x1780, 0x17FF),    # Khmer
    (0x2E80, 0x2FDF),    # CJK radicals, Kangxi radicals
    (0x3000, 0x9FFF),    # CJK symbols, Hiragana, Katakana, Bopomofo, Han (extension A and unified)
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF66, 0xFF9F),    # half-width Katakana
    (0x20000, 0x3FFFF),  # Han extensions B and later
)


def _written_without_spaces(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _WITHOUT_SPACES)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Split text into words.

    A word is a maximal run of word characters (letters, digits, underscore: `\\w`), or a single character of a
    script written without spaces (`_WITHOUT_SPACES`: Chinese, Japanese, Thai, ...), or a single other non-space
    character (punctuation, symbols). Combining marks (Unicode category M: accents, vowel signs) belong to the
    character before them, so "Café" written with a combining accent and Hindi words stay whole.

    Returns:
        `(word, start, end)` per word, `text[start:end] == word`.
    """
    spans: list[list[int]] = []
    in_run = False  # whether the last word is a run of word characters that the next one continues
    for i, char in enumerate(text):
        if char.isspace():
            in_run = False
        elif spans and spans[-1][1] == i and unicodedata.category(char).startswith("M"):
            spans[-1][1] = i + 1
        elif (char.isalnum() or char == "_") and not _written_without_spaces(char):
            if in_run:
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
                in_run = True
        else:
            spans.append([i, i + 1])
            in_run = False
    return [(text[start:end], start, end) for start, end in spans]


def _entity_spans(entity: Any, index: int) -> tuple[list, str | None, str]:
    if isinstance(entity, Mapping):
        if "mentions" not in entity:
            raise ValueError(f"Entity {index} is a dict without `mentions` (a list of (start, end) character spans).")
        spans, name, entity_type = entity["mentions"], entity.get("name"), entity.get("type", "")
        for key, value in (("name", name), ("type", entity_type)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"Entity {index}: `{key}` must be a string, got {type(value).__name__} {value!r}.")
        where = f"Entity {index}: `mentions`"
    elif isinstance(entity, (list, tuple)):
        spans, name, entity_type, where = entity, None, "", f"Entity {index}"
    else:
        raise ValueError(
            f"Entity {index} must be a list of (start, end) character spans or a dict with `mentions`, "
            f"got {type(entity).__name__}."
        )
    if not isinstance(spans, (list, tuple)):
        raise ValueError(f"{where} must be a list of (start, end) character spans, got {type(spans).__name__}.")
    if len(spans) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in spans):
        raise ValueError(f"{where} is the single span {tuple(spans)}, not a list of spans: write [{tuple(spans)}] "
                         f"(an entity is a list of its mentions' (start, end) spans).")
    return list(spans), name, "" if entity_type is None else entity_type


def text_to_docred(document: Mapping[str, Any]) -> dict[str, Any]:
    """Turn `{"text", "entities", "title"?}` (see the module docstring) into a DocRED-format document.

    A span given to two entities is refused rather than merged: the entities are the caller's, and their indices are
    the output's `index`, so merging them would silently renumber the rest. (A span repeated within one entity is
    kept.) Mentions of an entity extractor are merged instead (`mentions_to_document`).

    Raises:
        ValueError: If an entity has no mention, a span is not two integers `0 <= start < end <= len(text)`
            aligned with word boundaries, or a span belongs to two entities (the message names the entity, the
            mention and the span).

    Returns:
        `{"title", "sents", "vertexSet"}`; each mention's `name` is its text.
    """
    text = document["text"]
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string, got {type(text).__name__}.")
    if not isinstance(document["entities"], (list, tuple)):
        raise ValueError(f"`entities` must be a list of entities (each a list of (start, end) character spans), "
                         f"got {type(document['entities']).__name__}.")
    words = split_words(text)
    entities = _entities_as_words(text, words, document["entities"])
    sentence_of, sents = _split_sentences(words, entities)
    vertex_set = _vertex_set(text, words, entities, sentence_of)
    return {"title": document.get("title", ""), "sents": sents, "vertexSet": vertex_set}


_WordEntities = list[tuple[Optional[str], str, list[tuple[int, int]]]]
"""Entities with their mentions as word indices: per entity `(name or None, type, [(first word, last word), ...])`."""


def _entities_as_words(text: str, words: list[tuple[str, int, int]], entities: Sequence[Any]) -> _WordEntities:
    """The entities of `text_to_docred`'s input with their mentions as word indices.

    Raises:
        ValueError: As `text_to_docred` does, naming the entity, the mention and the span.
    """
    starts = {start: i for i, (_, start, _) in enumerate(words)}
    ends = {end: i for i, (_, _, end) in enumerate(words)}
    converted = []
    owner_of_span = {}  # (start, end) -> (entity, mention) that gave it first
    for e, entity in enumerate(entities):
        spans, name, entity_type = _entity_spans(entity, e)
        if not spans:
            raise ValueError(f"Entity {e} has no mention.")
        mentions = []
        for m, span in enumerate(spans):
            where = f"Entity {e}, mention {m}: character span {tuple(span) if isinstance(span, (list, tuple)) else span!r}"
            start, end = _checked_span(text, words, starts, ends, span, where)
            owner = owner_of_span.setdefault((start, end), (e, m))
            if owner[0] != e:
                raise ValueError(
                    f"{where} = {text[start:end]!r} is also entity {owner[0]}'s mention {owner[1]}: one span is one "
                    f"mention of one entity, and two entities sharing it would be related to themselves. Put the span "
                    f"in one entity (merge the two entities if they are the same)."
                )
            mentions.append((starts[start], ends[end]))
        converted.append((name, entity_type, mentions))
    return converted


def _checked_span(
    text: str,
    words: list[tuple[str, int, int]],
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    span: Any,
    where: str,
) -> tuple[int, int]:
    """`span` as `(start, end)` once it is two integers inside `text` that start and end on word boundaries
    (`starts` / `ends`: the character offsets where the `words` start / end); else a ValueError beginning `where`."""
    if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_int(x) for x in span):
        raise ValueError(f"{where} must be two integers (start, end).")
    start, end = span
    if not 0 <= start < end <= len(text):
        raise ValueError(f"{where} is outside the text (0 <= start < end <= {len(text)}).")
    if start not in starts or end not in ends:
        raise ValueError(
            f"{where} = {text[start:end]!r} does not align with word boundaries: it must start at a word's "
            f"first character and end after a word's last character. Words are runs of letters / digits, "
            f"single characters of scripts without spaces (Chinese, Japanese, Thai) or single punctuation "
            f"marks; the words here are "
            f"{[w for w, s, t in words if s < end + 1 and t > start - 1]}."
        )
    return start, end


def _split_sentences(words: list[tuple[str, int, int]], entities: _WordEntities) -> tuple[list[int], list[list[str]]]:
    """Sentences of the words: one ends after `.`, `!`, `?` or their full-width forms (`_SENTENCE_END`) unless a
    mention spans the boundary.

    Returns:
        `(sentence_of, sents)`: the sentence of each word, and each sentence's words.
    """
    inside_mention = {w for _, _, mentions in entities for first, last in mentions for w in range(first, last)}
    sentence_of, sents, current = [], [], []
    for i, (word, _, _) in enumerate(words):
        sentence_of.append(len(sents))
        current.append(word)
        if word in _SENTENCE_END and i not in inside_mention:
            sents.append(current)
            current = []
    if current:
        sents.append(current)
    return sentence_of, sents


def _vertex_set(
    text: str, words: list[tuple[str, int, int]], entities: _WordEntities, sentence_of: list[int]
) -> list[list[dict[str, Any]]]:
    """DocRED's `vertexSet` of the entities: each mention's sentence, word span within it, text and type (an
    entity's given name replaces its first mention's text)."""
    sentence_start = {}
    for i, s in enumerate(sentence_of):
        sentence_start.setdefault(s, i)
    vertex_set = []
    for name, entity_type, mentions in entities:
        vertex = []
        for first, last in mentions:
            sent_id = sentence_of[first]
            offset = sentence_start[sent_id]
            surface = text[words[first][1] : words[last][2]]
            vertex.append({"name": surface, "sent_id": sent_id, "pos": [first - offset, last + 1 - offset],
                           "type": entity_type})
        if name is not None:
            vertex[0]["name"] = name
        vertex_set.append(vertex)
    return vertex_set


def sentence_character_spans(text: str, sents: Sequence[Sequence[str]]) -> list[list[int]]:
    """The `[start, end)` character span of each sentence of a text document, so `text[start:end]` is the sentence.

    `text_to_docred` builds its `sents` from the words of `split_words(text)`, in order, none left out, none empty;
    a sentence therefore runs from its first word's first character to its last word's last character (the
    whitespace between sentences belongs to none).

    Args:
        text: The document's `text`.
        sents: `text_to_docred(document)["sents"]` of that document.

    Raises:
        ValueError: If `sents` are not the words of `split_words(text)` in order, in non-empty sentences.

    Returns:
        One `[start, end]` per sentence.
    """
    words = split_words(text)
    spans, first = [], 0
    for s, sentence in enumerate(sents):
        last = first + len(sentence)
        if not sentence or [word for word, _, _ in words[first:last]] != list(sentence):
            raise ValueError(f"Sentence {s} {list(sentence)[:10]!r} is not the next words of the text "
                             f"({[word for word, _, _ in words[first:first + 10]]!r}): the sentences must be "
                             "text_to_docred's of this text.")
        spans.append([words[first][1], words[last - 1][2]])
        first = last
    if first != len(words):
        raise ValueError(f"The sentences hold {first} of the text's {len(words)} words: they must be text_to_docred's "
                         "of this text.")
    return spans


def is_text_document(document: Mapping[str, Any]) -> bool:
    """Whether a document is plain text with character spans (`text` and `entities`), not DocRED format."""
    return "text" in document and "entities" in document


def to_docred(document: Mapping[str, Any]) -> dict[str, Any]:
    """Either input format (module docstring) as a DocRED-format document without labels.

    Raises:
        ValueError: If the input is neither format, or a span does not align (see `text_to_docred`).
    """
    if not isinstance(document, Mapping):
        decode = " (decode bytes first, e.g. data.decode(\"utf-8\"))" if isinstance(document, (bytes, bytearray)) else ""
        raise ValueError(
            f"A document must be a dict (DocRED format with `sents` and `vertexSet`, or `text` and `entities`), "
            f"got {type(document).__name__}{decode}."
        )
    if is_text_document(document):
        return text_to_docred(document)
    if "sents" in document and "vertexSet" in document:
        sents, vertex_set = document["sents"], document["vertexSet"]
        if not isinstance(vertex_set, list) or not all(isinstance(entity, list) for entity in vertex_set):
            return {**document, "title": document.get("title", "")}  # malformed: validate_document names the field
        filled = []
        for entity in vertex_set:
            vertex = []
            for mention in entity:
                mention = dict(mention) if isinstance(mention, Mapping) else mention
                if isinstance(mention, dict):
                    if isinstance(mention.get("pos"), tuple):  # JSON has lists; Python callers write tuples too
                        mention["pos"] = list(mention["pos"])
                    if "name" not in mention and _points_into(sents, mention.get("sent_id"), mention.get("pos")):
                        start, end = mention["pos"]
                        mention["name"] = " ".join(sents[mention["sent_id"]][start:end])
                    mention.setdefault("type", "")
                vertex.append(mention)
            filled.append(vertex)
        return {"title": document.get("title", ""), "sents": sents, "vertexSet": filled}
    raise ValueError(
        f"Unknown document format with keys {sorted(document)}: pass `text` and `entities` (character spans) or "
        "DocRED's `sents` and `vertexSet`. Relation extraction needs the entities: this pipeline does not find them."
    )


def _points_into(sents, sent_id, pos) -> bool:
    """Whether `sents[sent_id][pos[0]:pos[1]]` is a real span (a name can be read from it)."""
    return (isinstance(sents, list) and isinstance(sent_id, int) and 0 <= sent_id < len(sents)
            and isinstance(sents[sent_id], list) and isinstance(pos, list) and len(pos) == 2
            and all(isinstance(p, int) for p in pos) and 0 <= pos[0] < pos[1] <= len(sents[sent_id]))


def checked_docred(document: Any) -> dict[str, Any]:
    """`to_docred`, then `validate_document`: a document the model can read, or a ValueError naming the field."""
    converted = to_docred(document)
    validate_document(converted)
    return converted


def entity_mentions(document: Mapping[str, Any], converted: Optional[Mapping[str, Any]] = None) -> list[list[dict]]:
    """The mentions of each entity of a valid document, as the pipeline's output shows them.

    Args:
        document: A document in either input format (module docstring), already checked (`checked_docred`).
        converted: Its DocRED form (`to_docred(document)`), if already computed.

    Returns:
        Per entity, per mention: `{"text", "start", "end"}` (character offsets, `text == document["text"][start:end]`)
        for plain text, `{"text", "sent_id", "pos"}` for a DocRED-format document (`text` is the mention's `name`,
        or its words joined by spaces; DocRED carries no character offsets).
    """
    if is_text_document(document):
        text = document["text"]
        return [
            [{"text": text[start:end], "start": start, "end": end} for start, end in _entity_spans(entity, e)[0]]
            for e, entity in enumerate(document["entities"])
        ]
    converted = to_docred(document) if converted is None else converted
    return [[{"text": m["name"], "sent_id": m["sent_id"], "pos": list(m["pos"])} for m in entity]
            for entity in converted["vertexSet"]]


# ------------------------------------------------------------------ mentions of an entity extractor -> entities
def normalize_surface(text: str) -> str:
    """The key of a mention's surface for grouping: casefolded, whitespace runs collapsed to one space, stripped.

    So "Marie  Curie", "marie curie" and "MARIE CURIE" share one key; "Curie" does not.
    """
    return " ".join(text.casefold().split())


def group_mentions_exactly(mentions: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Group mentions into entities by surface: one entity per (normalized surface, type).

    Two mentions are the same entity iff `normalize_surface(text)` and `type` are equal. Entities come in the order
    of their first mention in the text, mentions in text order (by `start`, then `end`); a mention repeating the
    `(start, end, type)` of an earlier one is kept once (an extractor may report a span twice).

    Args:
        mentions: Dicts with `text`, `start`, `end` and `type`.

    Returns:
        The entities, each a non-empty list of the given mention dicts.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    seen = set()
    for mention in sorted(mentions, key=lambda m: (m["start"], m["end"])):
        span = (mention["start"], mention["end"], mention["type"])
        if span not in seen:
            seen.add(span)
            groups.setdefault((normalize_surface(mention["text"]), mention["type"]), []).append(mention)
    return list(groups.values())


def group_mentions(mentions: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The default grouping of mentions into entities: `group_mentions_exactly`, then a short name joins the one
    longer name of its type that ends with it ("Curie" joins "Marie Curie", "Obama" joins "Barack Obama"), as
    people and places are named in full first and shortly after. A short name that ends two different longer names
    ("Smith" after "John Smith" and "Mary Smith"), or lies inside it ("Prize" in "Nobel Prize"), stays an entity of
    its own. Pass
    `entity_grouping=group_mentions_exactly` to the pipeline to group by exact surface only.

    Args:
        mentions: Dicts with `text`, `start`, `end` and `type`.

    Returns:
        The entities in the order of their first mention, each a non-empty list of mention dicts in text order.
    """
    entities = group_mentions_exactly(mentions)
    surfaces = [(normalize_surface(entity[0]["text"]), entity[0]["type"]) for entity in entities]
    target = list(range(len(entities)))
    def overlap(first, second) -> bool:
        return any(a["start"] < b["end"] and b["start"] < a["end"] for a in first for b in second)

    for index, (surface, kind) in enumerate(surfaces):
        # A span nested in the longer name ("Prize" inside "Nobel Prize") is another annotation, not a short name.
        longer = {other for other, (name, other_kind) in enumerate(surfaces)
                  if other_kind == kind and name.endswith(" " + surface)
                  and not overlap(entities[index], entities[other])}
        if len(longer) == 1:
            target[index] = longer.pop()
    merged: dict[int, list[Mapping[str, Any]]] = {}
    for index, entity in enumerate(entities):
        root = index
        while target[root] != root:  # "Curie" -> "Marie Curie" -> "Pierre Marie Curie": names only grow
            root = target[root]
        merged.setdefault(root, []).extend(entity)
    return sorted((sorted(entity, key=lambda m: (m["start"], m["end"])) for entity in merged.values()),
                  key=lambda entity: (entity[0]["start"], entity[0]["end"]))


def _snap(text: str, words: list[tuple[str, int, int]], start: int, end: int) -> Optional[tuple[int, int]]:
    """`[start, end)` without surrounding whitespace, widened to the words it touches; None if it holds no word."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    touched = [(s, t) for _, s, t in words if s < end and t > start]
    if not touched:
        return None
    return touched[0][0], touched[-1][1]


def mentions_to_document(
    text: str,
    mentions: Sequence[Mapping[str, Any]],
    entity_grouping: Optional[Any] = None,
    title: str = "",
    source: str = "entity_extractor",
) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Mentions found in raw text (by an entity extractor) as a `{"text", "entities", "title"}` document.

    Each mention is a dict with `start` and `end` (character offsets, `[start, end)`) and optionally `type` (a missing
    or `None` type is `""`); other keys are kept. Spans are made to fit `split_words`'s words, because extractors
    (subword token classifiers especially) return spans with surrounding spaces or cut inside a word: surrounding
    whitespace is stripped, then the span is widened to the first and last word it overlaps ("Wars" in "Warsaw"
    becomes "Warsaw", " Paris" becomes "Paris"). A span holding only whitespace is dropped. Then the mentions are
    grouped into entities by `entity_grouping` (default `group_mentions`: same normalized surface and type, and a
    short name with the one longer name of its type that ends with it), and
    entities sharing a fitted span are merged into one (`merge_shared_mentions`), so a span labelled twice is one
    mention and no entity is related to itself.

    Args:
        text: The raw text.
        mentions: The extractor's mentions.
        entity_grouping: A callable `(mentions) -> list[list[mention]]` receiving the fitted mentions (dicts with
            `text`, `start`, `end`, `type` and the extractor's other keys) and returning the entities in the order
            wanted; an entity's type is its first mention's.
        title: The document's title.
        source: What produced the mentions, for error messages.

    Raises:
        ValueError: If `text` is not a string, `mentions` is not a list of dicts, a mention's `start` / `end` are not
            integers with `0 <= start <= end <= len(text)` (the message names the mention and the span), or
            `entity_grouping` returns something other than a list of non-empty lists of mentions.

    Returns:
        The document (entities `{"mentions": [(start, end), ...], "type"}`), and the entities as lists of the fitted
        mention dicts (`text == text[start:end]`).
    """
    if not isinstance(text, str):
        raise ValueError(f"The text must be a string, got {type(text).__name__}.")
    if isinstance(mentions, (str, Mapping)) or not isinstance(mentions, Sequence):
        raise ValueError(f"{source} must return a list of mentions (dicts with `start`, `end`, `type`), "
                         f"got {type(mentions).__name__}.")
    words = split_words(text)
    fitted = []
    for m, mention in enumerate(mentions):
        if not isinstance(mention, Mapping):
            raise ValueError(f"{source}: mention {m} must be a dict with `start` and `end`, got {type(mention).__name__}.")
        start, end = mention.get("start"), mention.get("end")
        valid = all(_is_integral(x) for x in (start, end))
        if not valid or not 0 <= int(start) <= int(end) <= len(text):
            raise ValueError(f"{source}: mention {m} {dict(mention)!r} needs integer character offsets `start` and "
                             f"`end` with 0 <= start <= end <= {len(text)} (the text's length).")
        snapped = _snap(text, words, int(start), int(end))
        if snapped is None:
            continue
        entity_type = mention.get("type")
        fitted.append({**mention, "start": snapped[0], "end": snapped[1], "text": text[snapped[0]:snapped[1]],
                       "type": "" if entity_type is None else str(entity_type)})

    groups = (entity_grouping or group_mentions)(fitted)
    if isinstance(groups, (str, Mapping)) or not isinstance(groups, Sequence) or not all(
        isinstance(group, Sequence) and not isinstance(group, (str, Mapping)) and len(group) > 0
        and all(isinstance(m, Mapping) and "start" in m and "end" in m for m in group) for group in groups
    ):
        raise ValueError(f"entity_grouping must return a list of entities, each a non-empty list of the mentions it "
                         f"was given, got {groups!r:.200}.")
    groups = merge_shared_mentions(groups)
    entities = [{"mentions": [(int(m["start"]), int(m["end"])) for m in group], "type": group[0].get("type", "")}
                for group in groups]
    return {"text": text, "entities": entities, "title": title}, groups


def merge_shared_mentions(groups: Sequence[Sequence[Mapping[str, Any]]]) -> list[list[Mapping[str, Any]]]:
    """Entities that share a mention span (`start`, `end`) merged into one, each span kept once.

    A span is one place in the text, so it names one entity: an extractor labelling it twice (two types, two
    spaCy components) or a grouping that puts it in two entities would otherwise relate an entity to itself
    ("Warsaw, P190, Warsaw"). Merging is transitive; a merged entity takes the place of the first of its entities
    and lists the mentions in their given order, the first mention of a span kept (so its type decides the
    entity's type when it comes first).

    Args:
        groups: Entities, each a list of mention dicts with `start` and `end`.

    Returns:
        The entities, none sharing a span with another, none repeating a span.
    """
    parent = list(range(len(groups)))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_owner: dict[tuple[int, int], int] = {}
    for g, group in enumerate(groups):
        for mention in group:
            owner = first_owner.setdefault((int(mention["start"]), int(mention["end"])), g)
            low, high = sorted((root(owner), root(g)))
            parent[high] = low  # the earlier entity absorbs the later
    merged: dict[int, tuple[list, set]] = {}
    for g, group in enumerate(groups):
        mentions, spans = merged.setdefault(root(g), ([], set()))
        for mention in group:
            key = (int(mention["start"]), int(mention["end"]))
            if key not in spans:
                spans.add(key)
                mentions.append(mention)
    return [mentions for mentions, _ in merged.values()]


def _is_integral(value: Any) -> bool:
    # NumPy integers too (token-classification pipelines give offsets as NumPy values); not bools.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
