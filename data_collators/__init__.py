"""Data half of pemscl: DocRED-format builder, validation, relation vocabulary, featurization, collator.

One document travels: JSON -> `load_docred` (builder, validation, label regimes) -> `featurize_dataset`
(entity markers, subword positions, pairs, multi-hot labels) -> `DataCollatorForDocRE` (the batch format of
docs/batch_format.md) -> the model. This package never imports the model.
"""

from .builder import FEATURES, DocREDBuilder, DocREDConfig, document_to_row, invalid_documents, load_docred
from .collator import DataCollatorForDocRE
from .featurize import check_tokenizer, featurize_batch, featurize_dataset, featurize_document
from .relations import (
    NA_LABEL,
    RelationVocab,
    read_rel2id,
    read_rel_info,
    rel2id_from_rel_info,
)
from .validation import (
    REQUIRED_KEYS,
    REQUIRED_LABEL_KEYS,
    REQUIRED_MENTION_KEYS,
    document_triples,
    validate_document,
)

__all__ = [
    "FEATURES",
    "NA_LABEL",
    "REQUIRED_KEYS",
    "REQUIRED_LABEL_KEYS",
    "REQUIRED_MENTION_KEYS",
    "DataCollatorForDocRE",
    "DocREDBuilder",
    "DocREDConfig",
    "RelationVocab",
    "check_tokenizer",
    "document_to_row",
    "document_triples",
    "featurize_batch",
    "featurize_dataset",
    "featurize_document",
    "invalid_documents",
    "load_docred",
    "read_rel2id",
    "read_rel_info",
    "rel2id_from_rel_info",
    "validate_document",
]
