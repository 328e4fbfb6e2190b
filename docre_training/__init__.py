"""Training, inference and publishing for PEMSCL: the Trainer subclass and DocRED metrics (`trainer`, `metrics`),
the `document-relation-extraction` pipeline (`pipeline`) and the Hub upload with a generated model card (`hub`).

Importing this package registers the `document-relation-extraction` task with `transformers.pipeline`.
"""

from .hub import prepare_hub_folder, publish_to_hub, upload_to_hub
from .pipeline import (
    TASK,
    DocumentRelationExtractionPipeline,
    check_model_and_tokenizer,
    register_pipeline,
    split_words,
    text_to_docred,
    to_docred,
)

register_pipeline()

__all__ = [
    "TASK",
    "DocumentRelationExtractionPipeline",
    "check_model_and_tokenizer",
    "prepare_hub_folder",
    "publish_to_hub",
    "register_pipeline",
    "split_words",
    "text_to_docred",
    "to_docred",
    "upload_to_hub",
]
