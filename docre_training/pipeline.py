"""`DocumentRelationExtractionPipeline`: relations out of new documents, registered as the
`document-relation-extraction` task of `transformers.pipeline` when this module is imported.

    import docre_training.pipeline  # registers the task
    from transformers import pipeline
    extractor = pipeline("document-relation-extraction", model="org/pemscl-model")
    extractor({"text": "Paris is the capital of France.", "entities": [[(0, 5)], [(24, 30)]]})

Inputs (one document, or a list / `datasets.Dataset` / generator of documents):

- **DocRED format**: `{"sents": [[word, ...], ...], "vertexSet": [[{"sent_id", "pos": [start, end), "name"?,
  "type"?}, ...], ...], "title"?}`, e.g. a document of `test_unlabeled.json`. A missing `name` is the mention's
  words joined by spaces, a missing `type` is `""`; `labels`, if present, are ignored.
- **Plain text with character spans**: `{"text": str, "entities": [...], "title"?}` where each entity is either a
  list of mention spans `[(start, end), ...]` or a dict `{"mentions": [(start, end), ...], "type"?: str,
  "name"?: str}`. Spans are `[start, end)` character offsets: `text[start:end]` is the mention.
  The text is split into words by `split_words`: a word is a maximal run of letters, digits and underscores
  (`\\w+`) or a single other non-space character (punctuation), so "U.S.-based" is `U . S . - based`. A span must
  start at a word's first character and end after a word's last character, otherwise `ValueError` names the span.
  Sentences end after a `.`, `!` or `?` word, never inside a mention (sentences only fill `sent_id` / `pos`;
  the model reads the document as one sequence).

Output, per document: a list of relations, highest score first,
`{"head": {"index", "name", "type"}, "tail": {...}, "relation": "P17", "relation_name": "country", "score": 0.93}`.
`index` is the entity's position in the input's `vertexSet` / `entities`.

**Score** = sigmoid(f_r - f_NA): the logistic of relation r's logit margin over the pair's threshold (NA) logit,
f_NA = logits[:, 0] (for a model trained with `loss="bce"`, whose threshold is a global 0: sigmoid(f_r)). A relation
is predicted when its score is above `threshold` (default 0.5, i.e. f_r > f_NA: the model's own decision rule,
`PemsclModel.decode`), keeping at most `top_k` relations per entity pair (default `config.max_relations_per_pair`;
0 = no limit).

The pipeline and its processing are defined in the model package (`modeling_pemscl/pipeline_pemscl.py`,
`modeling_pemscl/processing_pemscl.py`), which ships them to the Hub as remote code; importing this module
registers the task with `transformers.pipeline` for this project's users.
"""

from modeling_pemscl.pipeline_pemscl import (
    TASK,
    DocumentRelationExtractionPipeline,
    check_model_and_tokenizer,
    register_pipeline,
)
from modeling_pemscl.processing_pemscl import checked_docred, split_words, text_to_docred, to_docred

register_pipeline()

__all__ = [
    "TASK",
    "DocumentRelationExtractionPipeline",
    "check_model_and_tokenizer",
    "checked_docred",
    "register_pipeline",
    "split_words",
    "text_to_docred",
    "to_docred",
]
