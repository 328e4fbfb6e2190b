"""`DocumentRelationExtractionPipeline`: relations out of new documents, the `document-relation-extraction` task.

This file ships to the Hub as remote code with the model: a folder written by `--hub_dry_run` / `--push_to_hub`
holds it and names it in `config.json` (`custom_pipelines`), so `pipeline("document-relation-extraction",
model=..., trust_remote_code=True)` works where this project is not installed. With the project installed,
`import docre_training.pipeline` registers the task:

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
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .losses import decode_relations, relation_margins
from .processing_pemscl import NA_LABEL, DataCollatorForDocRE, check_tokenizer, checked_docred, featurize_document

TASK = "document-relation-extraction"


# ------------------------------------------------------------------ model <-> tokenizer checks
def check_model_and_tokenizer(model, tokenizer) -> None:
    """Check that a PEMSCL model and a tokenizer belong together, before any document is featurized.

    Checked: the tokenizer can featurize pre-split words (`data_collators.check_tokenizer`); it has a padding
    token; its vocabulary fits the encoder's embedding matrix; it pads with the encoder's `pad_token_id` (when both
    are set); the model's `entity_marker` is a single known token; the relation vocabulary has `Na` at index 0 and
    names only relations it knows.

    Raises:
        ValueError: Naming what does not match and what to change.
    """
    config = model.config
    if getattr(config, "model_type", None) != "pemscl":
        raise ValueError(f"Expected a PEMSCL model (model_type 'pemscl'), got model_type {config.model_type!r}.")
    check_tokenizer(tokenizer)
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"The tokenizer {name!r} has no padding token; documents of a batch must be padded.")
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(
            f"The tokenizer {name!r} has {len(tokenizer)} tokens but the encoder's embedding matrix has {rows} rows: "
            "ids past the last row cannot be embedded. Use the tokenizer the model was trained with (saved next to it)."
        )
    encoder_pad = getattr(config.encoder, "pad_token_id", None)
    if encoder_pad is not None and tokenizer.pad_token_id != encoder_pad:
        raise ValueError(
            f"The tokenizer {name!r} pads with id {tokenizer.pad_token_id} but the encoder "
            f"({config.encoder.model_type}) uses pad_token_id={encoder_pad}: the tokenizer is probably not the "
            "encoder's. Use the tokenizer the model was trained with."
        )
    marker = config.entity_marker
    ids = tokenizer([marker], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"The entity marker {marker!r} of the model is tokenized by {name!r} as {pieces}, not as one known token: "
            "the tokenizer does not match the model (or choose an `entity_marker` that is a single token)."
        )
    id2label = dict(config.id2label)
    if id2label.get(0) != NA_LABEL:
        raise ValueError(f"The model's relation vocabulary must have {NA_LABEL!r} at index 0, got {id2label.get(0)!r}.")
    unknown = sorted(set(config.relation_names or {}) - set(id2label.values()))
    if unknown:
        raise ValueError(f"config.relation_names names relations that config.id2label lacks: {unknown[:10]}.")


# ------------------------------------------------------------------ the pipeline
class DocumentRelationExtractionPipeline(Pipeline):
    """Document-level relation extraction with a PEMSCL model (see the module docstring for inputs and outputs).

    Args:
        model: A `PemsclModel` (also one loaded with `trust_remote_code=True`).
        tokenizer: Its fast tokenizer.
        top_k (`int`, *optional*): Relations kept per entity pair; defaults to `config.max_relations_per_pair`,
            0 = no limit.
        threshold (`float`, *optional*, defaults to 0.5): Minimal score (sigmoid of the margin over the threshold
            logit); 0.5 is the model's decision rule.
        batch_size (`int`, *optional*, defaults to 1): Documents per forward pass.

    Raises:
        ValueError: At construction, if the model and the tokenizer do not match (`check_model_and_tokenizer`).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("DocumentRelationExtractionPipeline needs the model's tokenizer (`tokenizer=`).")
        check_model_and_tokenizer(self.model, self.tokenizer)
        self._collator = DataCollatorForDocRE(tokenizer=self.tokenizer)

    def __call__(self, inputs, *args, **kwargs):
        """Relations of one document (a list of relations), or of each document of a list (a list of lists).

        A generator, a `datasets.Dataset` or another iterable of documents gives a lazy iterator of lists.
        Keyword arguments: `top_k`, `threshold`, `batch_size` (see the class docstring).
        """
        if isinstance(inputs, list):
            if not inputs:
                return []
            # Every document is checked before any is featurized, and a bad one is named by its position.
            for position, document in enumerate(inputs):
                try:
                    checked_docred(document)
                except ValueError as error:
                    raise ValueError(f"Document {position} of the {len(inputs)} given: {error}") from None
        elif isinstance(inputs, Mapping):
            checked_docred(inputs)
        elif not isinstance(inputs, (str, types.GeneratorType)) and isinstance(inputs, Iterable):
            inputs = (document for document in inputs)  # e.g. a `datasets.Dataset`: streamed, not materialized
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, threshold: float | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"Unknown parameters for {TASK}: {sorted(kwargs)} (known: top_k, threshold, batch_size).")
        postprocess = {}
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 0:
                raise ValueError(f"top_k={top_k!r} must be a non-negative integer (0 = no limit).")
            postprocess["top_k"] = top_k
        if threshold is not None:
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"threshold={threshold!r} must be a probability in (0, 1).")
            postprocess["threshold"] = threshold
        return {}, {}, postprocess

    def preprocess(self, inputs) -> dict[str, Any]:
        document = checked_docred(inputs)
        config = self.model.config
        features = featurize_document(document, self.tokenizer, config.label2id, entity_marker=config.entity_marker)
        return {"features": features, "document": document}

    def _collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"batch": self._collator([item["features"] for item in items]),
                "documents": [item["document"] for item in items]}

    def _forward(self, model_inputs: dict[str, Any]) -> list[dict[str, Any]]:
        batch = model_inputs["batch"]
        logits = self.model(**batch).logits.float()
        per_document = torch.bincount(batch["pair_document_index"], minlength=len(model_inputs["documents"]))
        return [
            {"logits": doc_logits, "hts": doc_hts, "document": document}
            for doc_logits, doc_hts, document in zip(
                logits.split(per_document.tolist()), batch["hts"].split(per_document.tolist()),
                model_inputs["documents"],
            )
        ]

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None, threshold: float = 0.5):
        config = self.model.config
        logits, hts, document = model_outputs["logits"], model_outputs["hts"], model_outputs["document"]
        kind = "global" if config.loss == "bce" else "adaptive"
        scores = torch.sigmoid(relation_margins(logits, kind))
        # score > threshold  <=>  f_r - bar > logit(threshold): shift the relation logits, decode as the model does.
        shifted = logits.clone()
        shifted[:, 1:] -= math.log(threshold / (1.0 - threshold))
        top_k = config.max_relations_per_pair if top_k is None else top_k
        predicted = decode_relations(shifted, max_relations=top_k, threshold=kind)[:, 1:]

        entities = [
            {"index": e, "name": entity[0]["name"], "type": entity[0].get("type", "")}
            for e, entity in enumerate(document["vertexSet"])
        ]
        id2label, names = config.id2label, config.relation_names or {}
        relations = []
        for pair, column in predicted.nonzero().tolist():
            head, tail = hts[pair].tolist()
            label = id2label[column + 1]
            relations.append({"head": entities[head], "tail": entities[tail], "relation": label,
                              "relation_name": names.get(label, label), "score": float(scores[pair, column])})
        relations.sort(key=lambda relation: -relation["score"])
        return relations

    # One batch format for every batch size: our collator instead of the default per-key padding.
    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = 0
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        return self._iterate(loader, forward_params, postprocess_params)

    def _iterate(self, loader: Iterable, forward_params, postprocess_params):
        for batch in loader:
            for document_output in self.forward(batch, **forward_params):
                yield self.postprocess(document_output, **postprocess_params)

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        (output,) = self._iterate([self._collate([self.preprocess(inputs, **preprocess_params)])],
                                  forward_params, postprocess_params)
        return output


def register_pipeline() -> None:
    """Register the `document-relation-extraction` task with `transformers.pipeline` (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=DocumentRelationExtractionPipeline, pt_model=AutoModel, type="text"
        )


__all__ = ["TASK", "DocumentRelationExtractionPipeline", "check_model_and_tokenizer", "register_pipeline"]
