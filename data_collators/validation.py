"""Validation of DocRED-format documents.

A document is a dict with `title`, `sents` (list of sentences, each a list of words), `vertexSet` (list of
entities, each a non-empty list of mentions `{name, sent_id, pos: [start, end), type}`) and, when labelled,
`labels`. Labels come in three shapes, all accepted:

- raw DocRED JSON: a list of `{h, t, r, evidence}`;
- rows of `DocREDBuilder`: a list of `{head, tail, relation_id, relation_text, evidence}`;
- the Hub's `docred` dataset (a `Sequence` feature): a dict of lists `{head: [...], tail: [...], relation_id: [...]}`.

A document without a `labels` key (or with `labels=None`) is unlabelled, like DocRED's test set. A document
with fewer than two entities is valid: it simply has no entity pair.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Optional

from .relations import NA_LABEL

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
    list of lists of words, every entity has at least one mention, every mention's `sent_id` is a sentence
    index and its `pos` is `[start, end)` with `0 <= start < end <= len(sentence)`, every label's head and
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
            field = f"vertexSet[{e}][{m}]"
            if not isinstance(mention, Mapping):
                raise _fail(title, field, f"must be a dict, got {type(mention).__name__}")
            for key in REQUIRED_MENTION_KEYS:
                if key not in mention:
                    raise _fail(title, f"{field}.{key}", "is a required key but is missing")
            sent_id, pos = mention["sent_id"], mention["pos"]
            if not _is_int(sent_id) or not 0 <= sent_id < len(sents):
                raise _fail(title, f"{field}.sent_id", f"{sent_id!r} is out of range ({len(sents)} sentences)")
            if not isinstance(pos, list) or len(pos) != 2 or not all(_is_int(p) for p in pos):
                raise _fail(title, f"{field}.pos", f"{pos!r} must be [start, end], two integers")
            start, end = pos
            if start >= end:
                raise _fail(title, f"{field}.pos", f"{pos!r} is empty: start must be < end")
            if start < 0 or end > len(sents[sent_id]):
                raise _fail(
                    title, f"{field}.pos", f"{pos!r} is outside sentence {sent_id} ({len(sents[sent_id])} words)"
                )

    records = label_records(doc)
    for index, (head, tail, relation, keys) in enumerate(records or ()):
        for value, key in ((head, keys[0]), (tail, keys[1])):
            if not _is_int(value) or not 0 <= value < len(entities):
                raise _fail(
                    title, f"labels[{index}].{key}", f"{value!r} is out of range ({len(entities)} entities)"
                )
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
            outside = [sentence for sentence in evidence if not 0 <= sentence < len(sents)]
            if outside:
                raise _fail(title, f"labels[{index}].evidence",
                            f"{outside} are not sentence indices ({len(sents)} sentences)")
