"""The `document-relation-extraction` task for this project's users: importing this module registers it.

    import docre_training.pipeline  # registers the task
    from transformers import pipeline
    extractor = pipeline("document-relation-extraction", model="path/to/saved/model")
    extractor({"text": "Paris is the capital of France.", "entities": [[(0, 5)], [(24, 30)]]})

The pipeline and its processing are defined in the model package (`modeling_pemscl/pipeline_pemscl.py`, where
inputs, outputs and the score are documented, and `modeling_pemscl/processing_pemscl.py`), which ships them to
the Hub as remote code; a Hub folder written by `--hub_dry_run` / `--push_to_hub` needs `trust_remote_code=True`.
"""

from modeling_pemscl.pipeline_pemscl import (
    TASK,
    DocumentRelationExtractionPipeline,
    check_model_and_tokenizer,
    extract_mentions,
    register_pipeline,
    text_document,
)
from modeling_pemscl.processing_pemscl import (
    checked_docred,
    entity_mentions,
    group_mentions,
    group_mentions_exactly,
    mentions_to_document,
    normalize_surface,
    sentence_character_spans,
    split_words,
    text_to_docred,
    to_docred,
)

register_pipeline()

__all__ = [
    "TASK",
    "DocumentRelationExtractionPipeline",
    "check_model_and_tokenizer",
    "checked_docred",
    "entity_mentions",
    "extract_mentions",
    "group_mentions",
    "group_mentions_exactly",
    "mentions_to_document",
    "normalize_surface",
    "register_pipeline",
    "sentence_character_spans",
    "split_words",
    "text_document",
    "text_to_docred",
    "to_docred",
]
