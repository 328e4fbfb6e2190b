"""Training, inference and publishing for PEMSCL: the Trainer subclass and DocRED metrics (`trainer`, `metrics`),
the `document-relation-extraction` pipeline (`pipeline`) and what a Hub push uploads (`hub`; the pushes are `DocRETrainer.push_to_hub`).

Importing this package imports none of its modules: the scorer `docre_training.metrics` needs only the standard
library (no torch). The names below load their module on first use; `import docre_training.pipeline` (or using
any of its names from here) registers the `document-relation-extraction` task with `transformers.pipeline`;
`spacy_component` holds the `pemscl_relations` spaCy component (the `spacy` extra).
"""

import importlib

_MODULE_OF = {
    "HUB_IGNORE_PATTERNS": "hub",
    "check_hub_folder": "hub",
    "copy_hub_folder": "hub",
    "hub_files": "hub",
    "TASK": "pipeline",
    "DocumentRelationExtractionPipeline": "pipeline",
    "check_model_and_tokenizer": "pipeline",
    "register_pipeline": "pipeline",
    "split_words": "pipeline",
    "entity_mentions": "pipeline",
    "extract_mentions": "pipeline",
    "group_mentions": "pipeline",
    "group_mentions_exactly": "pipeline",
    "mentions_to_document": "pipeline",
    "normalize_surface": "pipeline",
    "text_document": "pipeline",
    "PemsclRelations": "spacy_component",
    "text_to_docred": "pipeline",
    "to_docred": "pipeline",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
