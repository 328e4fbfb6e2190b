"""Validation of DocRED-format documents.

A document is a dict with `title`, `sents` (list of sentences, each a list of words), `vertexSet` (list of
entities, each a non-empty list of mentions `{name, sent_id, pos: [start, end), type}`) and, when labelled,
`labels`. Labels come in three shapes, all accepted:

- raw DocRED JSON: a list of `{h, t, r, evidence}`;
- rows of `DocREDBuilder`: a list of `{head, tail, relation_id, relation_text, evidence}`;
- the Hub's `docred` dataset (a `Sequence` feature): a dict of lists `{head: [...], tail: [...], relation_id: [...]}`.

A document without a `labels` key (or with `labels=None`) is unlabelled, like DocRED's test set. A document
with fewer than two entities is valid: it simply has no entity pair.

The checks live in the model package's inference-time processing (`modeling_pemscl/processing_pemscl.py`), which
ships with the model to the Hub; this module is their place in the data package.
"""

from modeling_pemscl.processing_pemscl import (  # noqa: F401
    BUILDER_LABEL_KEYS,
    REQUIRED_KEYS,
    REQUIRED_LABEL_KEYS,
    REQUIRED_MENTION_KEYS,
    document_triples,
    label_records,
    validate_document,
)

__all__ = ["BUILDER_LABEL_KEYS", "REQUIRED_KEYS", "REQUIRED_LABEL_KEYS", "REQUIRED_MENTION_KEYS", "document_triples",
           "label_records", "validate_document"]
