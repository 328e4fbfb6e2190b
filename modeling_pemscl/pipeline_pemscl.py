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
  words joined by spaces, a missing `type` is `""`; `labels`, if present, are ignored. Entities are taken as
  annotated, also two that share a mention (DocRED and Re-DocRED have a few): their pair is scored like any other.
- **Plain text with character spans**: `{"text": str, "entities": [...], "title"?}` where each entity is either a
  list of mention spans `[(start, end), ...]` or a dict `{"mentions": [(start, end), ...], "type"?: str,
  "name"?: str}`. Spans are `[start, end)` character offsets: `text[start:end]` is the mention.
  The text is split into words by `split_words`: a word is a maximal run of letters, digits and underscores
  (`\\w+`, with their combining marks), a single character of a script written without spaces (Chinese,
  Japanese, Thai, ...: "北京是中国的首都" is eight words, so "北京" is a span of its own), or a single other
  non-space character (punctuation), so "U.S.-based" is `U . S . - based`. A span must start at a word's first
  character and end after a word's last character, otherwise `ValueError` names the span. One span given to two
  entities is refused (`ValueError` naming both): the entities and their indices are the caller's, and merging
  them would renumber the output. Sentences end after a `.`, `!`, `?`, `。`, `！` or `？` word, never inside a
  mention (sentences only fill `sent_id` / `pos`; the model reads the document as one sequence).

- **Raw text** (a plain string) with an `entity_extractor` (argument of the call or of the pipeline): a callable
  `text -> [{"start", "end", "type"?}, ...]` (character offsets) or a transformers token-classification pipeline
  built with `aggregation_strategy="simple"` (or "first" / "average" / "max"; its `entity_group` is the type).
  Each span is fitted to the words above: surrounding whitespace is stripped and a span cutting inside a word is
  widened to the whole word ("Wars" of "Warsaw" is "Warsaw"); a whitespace-only span is dropped. Mentions are then
  grouped into entities: by default two mentions are one entity iff their casefolded, whitespace-collapsed texts
  and their types are equal, and a short name joins the one longer name of its type that ends with it ("Curie"
  joins "Marie Curie"; `processing_pemscl.group_mentions`; entities in the order of their first mention;
  `processing_pemscl.group_mentions_exactly` groups by equal texts only), or by `entity_grouping`, a callable `(mentions) -> list[list[mention]]`. Entities that share a span (a span
  found twice with two types, or put in two entities by the grouping) are then merged into one, the span kept once
  (`processing_pemscl.merge_shared_mentions`): a span is one place in the text, and no entity is related to itself.

    extractor("Marie Curie was born in Warsaw.", entity_extractor=ner)  # ner: e.g. pipeline("ner", aggregation_strategy="simple")

Output, per document: a list of relations, highest score first,
`{"head": {"index", "name", "type", "mentions"}, "tail": {...}, "relation": "P17", "relation_name": "country",
"score": 0.93, "evidence": [0, 2]}`. `index` is the entity's position in the input's `vertexSet` / `entities` (for
raw text, in the grouping's order); `mentions` lists the entity's mentions, `{"text", "start", "end"}` with character
offsets for text (`text[start:end]`), `{"text", "sent_id", "pos"}` for DocRED-format documents (which have no
characters). `evidence` lists the pair's evidence sentences (ascending) as the model decodes them
(`PemsclModel.decode_evidence`); text input adds `evidence_spans`, their `[start, end)` character spans in the text.

**Score** = sigmoid(f_r - f_NA): the logistic of relation r's logit margin over the pair's threshold (NA) logit,
f_NA = logits[:, 0] (for a model trained with `loss="bce"`, whose threshold is a global 0: sigmoid(f_r)). A relation
is predicted when its score is above `threshold` (default 0.5, i.e. f_r > f_NA: the model's own decision rule,
`PemsclModel.decode`), keeping at most `top_k` relations per entity pair (default `config.max_relations_per_pair`;
0 = no limit).
"""

from __future__ import annotations

import math
import numbers
import types
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline, TokenClassificationPipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.pipelines.token_classification import AggregationStrategy

from .losses import decision_threshold, decode_relations, relation_margins
from .modeling_pemscl import prepare_for_inference
from .processing_pemscl import (
    NA_LABEL,
    DataCollatorForDocRE,
    check_tokenizer,
    checked_docred,
    entity_mentions,
    featurize_document,
    is_text_document,
    mentions_to_document,
    sentence_character_spans,
)

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
    check_tokenizer(tokenizer, config.word_prefix_space)
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


# ------------------------------------------------------------------ entity extractors
def _check_aggregated(extractor: TokenClassificationPipeline, aggregation: Any = None) -> None:
    strategy = aggregation or extractor._postprocess_params.get("aggregation_strategy", AggregationStrategy.NONE)
    if AggregationStrategy(strategy) == AggregationStrategy.NONE:
        raise ValueError(
            "The token-classification pipeline given as entity_extractor does not aggregate its tokens into entities "
            "(aggregation_strategy='none'): it tags subwords, not mentions. Build it with "
            "`pipeline(\"token-classification\", model=..., aggregation_strategy=\"simple\")` (or \"first\", "
            "\"average\", \"max\")."
        )


def extract_mentions(entity_extractor: Any, text: str) -> list[dict[str, Any]]:
    """Run an entity extractor on raw text and read its mentions.

    Args:
        entity_extractor: A callable `text -> [{"start", "end", "type"?, ...}, ...]` (character offsets), or a
            transformers token-classification pipeline built with an `aggregation_strategy` other than "none" (its
            `entity_group` is the type). A mention's type is its `type`, else its `entity_group`, else its `label`,
            else `""`.
        text: The raw text.

    Raises:
        ValueError: If a token-classification pipeline does not aggregate, or a callable returns unaggregated
            token tags (`entity` without `entity_group`) or something other than a list of dicts.

    Returns:
        The mentions as dicts with `start`, `end`, `type` and the extractor's other keys (e.g. `word`, `score`).
    """
    if isinstance(entity_extractor, TokenClassificationPipeline):
        _check_aggregated(entity_extractor)
    found = entity_extractor(text)
    if isinstance(found, (str, Mapping)) or not isinstance(found, Sequence):
        raise ValueError(f"The entity_extractor must return a list of mentions (dicts with `start`, `end`, `type`), "
                         f"got {type(found).__name__}.")
    mentions = []
    for m, mention in enumerate(found):
        if not isinstance(mention, Mapping):
            raise ValueError(f"entity_extractor: mention {m} must be a dict with `start` and `end`, "
                             f"got {type(mention).__name__}.")
        if "entity" in mention and "entity_group" not in mention and "type" not in mention:
            raise ValueError(
                f"entity_extractor: mention {m} {dict(mention)!r} is a token tag (`entity`), not an aggregated "
                "mention (`entity_group`): build the token-classification pipeline with aggregation_strategy=\"simple\"."
            )
        entity_type = next((mention[key] for key in ("type", "entity_group", "label") if mention.get(key) is not None), "")
        mentions.append({**mention, "type": entity_type})
    return mentions


def text_document(text: str, entity_extractor: Any, entity_grouping: Any = None) -> dict[str, Any]:
    """Raw text as a `{"text", "entities"}` document: the extractor's mentions (`extract_mentions`), fitted to words
    and grouped into entities by `processing_pemscl.mentions_to_document`.

    Raises:
        ValueError: If there is no entity extractor, or its mentions or the grouping are malformed.
    """
    if entity_extractor is None:
        raise ValueError(
            "A plain string has no entities: pass `entity_extractor=` (a callable text -> [{\"start\", \"end\", "
            "\"type\"}, ...], or a token-classification pipeline with aggregation_strategy=\"simple\"), or give "
            "the document as {\"text\", \"entities\"} with character spans."
        )
    if not callable(entity_extractor):
        raise ValueError(f"entity_extractor must be callable (text -> mentions), got {type(entity_extractor).__name__}.")
    document, _ = mentions_to_document(text, extract_mentions(entity_extractor, text), entity_grouping)
    return document


# ------------------------------------------------------------------ the pipeline
def decoding_parameters(top_k: Any = None, threshold: Any = None) -> dict[str, Any]:
    """The pipeline's decoding options (`top_k`, `threshold`), checked: those given, as `postprocess` takes them.

    Raises:
        ValueError: If `top_k` is not a non-negative integer or `threshold` not a probability in (0, 1).
    """
    parameters = {}
    if top_k is not None:
        if not _is_integer(top_k):
            raise ValueError(f"top_k={top_k!r} must be a non-negative integer (0 = no limit), "
                             f"got {type(top_k).__name__}.")
        if top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be a non-negative integer (0 = no limit).")
        parameters["top_k"] = int(top_k)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ValueError(f"threshold={threshold!r} must be a number, a probability in (0, 1) such as 0.5, "
                             f"got {type(threshold).__name__}.")
        if not 0.0 < threshold < 1.0:  # also refuses NaN
            raise ValueError(f"threshold={threshold!r} must be a probability in (0, 1) (0.5 is the model's own "
                             "decision rule).")
        parameters["threshold"] = float(threshold)
    return parameters


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_batch_size(batch_size: Any) -> None:
    if batch_size is not None and (not _is_integer(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer (documents per forward pass), "
                         f"got {type(batch_size).__name__}.")


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
        entity_extractor (*optional*): Finds the mentions of plain-string inputs (`extract_mentions`): a callable
            `text -> [{"start", "end", "type"?}, ...]` or a token-classification pipeline with an aggregation
            strategy. Spans are fitted to words and grouped into entities as `mentions_to_document` documents.
        entity_grouping (*optional*): A callable `(mentions) -> list[list[mention]]` grouping the extractor's
            mentions into entities; default `group_mentions` (same normalized surface and type; a short name
            joins the one longer name of its type that ends with it), or `group_mentions_exactly`.
        precision (`str`, *optional*): The arithmetic of inference, `"fp32"`, `"bf16"`, `"fp16"` (GPU) or `"int8"`
            (CPU): see `optimize_for_inference`, which prepares the model in place. Default: the model as given.
        onnx_file (`str`, *optional*): Run the encoder in ONNX Runtime from this file, written from this model by
            `python -m modeling_pemscl.export_onnx` (fp32, or int8 with `--quantize int8`); the rest stays in
            PyTorch, in fp32 or, with `precision="int8"`, int8 (`prepare_for_inference`). Needs this project
            installed with its `onnx` extra.

    Raises:
        ValueError: At construction, if the model and the tokenizer do not match (`check_model_and_tokenizer`),
            or the precision cannot run on the model's device.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, precision: str | None = None, onnx_file: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        _check_batch_size(self._batch_size)
        if self.tokenizer is None:
            raise ValueError("DocumentRelationExtractionPipeline needs the model's tokenizer (`tokenizer=`).")
        check_model_and_tokenizer(self.model, self.tokenizer)
        prepare_for_inference(self.model, precision, onnx_file)
        self._collator = DataCollatorForDocRE(tokenizer=self.tokenizer)

    def __call__(self, inputs, *args, **kwargs):
        """Relations of one document (a list of relations), or of each document of a list (a list of lists).

        A document is a dict in either format of the module docstring, or a plain string when an
        `entity_extractor` is given (here or at construction). A generator, a `datasets.Dataset` or another iterable
        of documents gives a lazy iterator of lists.
        Keyword arguments: `top_k`, `threshold`, `batch_size`, `entity_extractor`, `entity_grouping` (see the class
        docstring).
        """
        extractor = kwargs.get("entity_extractor", self._preprocess_params.get("entity_extractor"))
        grouping = kwargs.get("entity_grouping", self._preprocess_params.get("entity_grouping"))
        _check_batch_size(kwargs.get("batch_size"))
        if isinstance(inputs, (bytes, bytearray)):  # iterable, but of ints, not documents
            raise ValueError(f"The pipeline got {type(inputs).__name__}: give a document (a dict, or a string with an "
                             "entity_extractor) or a list of documents; decode bytes first, e.g. data.decode(\"utf-8\") "
                             "(json.loads it when it holds JSON documents).")
        if isinstance(inputs, list):
            if not inputs:
                return []
            # Every document is checked before any is featurized, and a bad one is named by its position; strings
            # go through the entity extractor here, once.
            inputs = list(inputs)
            for position, document in enumerate(inputs):
                try:
                    if isinstance(document, str):
                        inputs[position] = document = text_document(document, extractor, grouping)
                    checked_docred(document)
                except ValueError as error:
                    raise ValueError(f"Document {position} of the {len(inputs)} given: {error}") from None
        elif isinstance(inputs, str):
            inputs = text_document(inputs, extractor, grouping)
            checked_docred(inputs)
        elif isinstance(inputs, Mapping):
            checked_docred(inputs)
        elif not isinstance(inputs, (str, types.GeneratorType)) and isinstance(inputs, Iterable):
            inputs = (document for document in inputs)  # e.g. a `datasets.Dataset`: streamed, not materialized
        return super().__call__(inputs, *args, **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, threshold: float | None = None,
                             entity_extractor: Any = None, entity_grouping: Any = None, **kwargs):
        if kwargs:
            raise TypeError(f"Unknown parameters for {TASK}: {sorted(kwargs)} (known: top_k, threshold, batch_size, "
                            "entity_extractor, entity_grouping).")
        preprocess = {}
        if entity_extractor is not None:
            if not callable(entity_extractor):
                raise ValueError(f"entity_extractor must be callable (text -> mentions), got {type(entity_extractor).__name__}.")
            if isinstance(entity_extractor, TokenClassificationPipeline):
                _check_aggregated(entity_extractor)  # at once, not at the first string
            preprocess["entity_extractor"] = entity_extractor
        if entity_grouping is not None:
            if not callable(entity_grouping):
                raise ValueError(f"entity_grouping must be callable (mentions -> list of entities), "
                                 f"got {type(entity_grouping).__name__}.")
            preprocess["entity_grouping"] = entity_grouping
        return preprocess, {}, decoding_parameters(top_k=top_k, threshold=threshold)

    def preprocess(self, inputs, entity_extractor: Any = None, entity_grouping: Any = None) -> dict[str, Any]:
        if isinstance(inputs, str):  # a string of a generator; those of a list were converted in __call__
            inputs = text_document(inputs, entity_extractor, entity_grouping)
        document = checked_docred(inputs)
        config = self.model.config
        features = featurize_document(document, self.tokenizer, config.label2id, entity_marker=config.entity_marker,
                                      word_prefix_space=config.word_prefix_space)
        character_spans = (sentence_character_spans(inputs["text"], document["sents"]) if is_text_document(inputs)
                           else None)
        return {"features": features, "document": document, "mentions": entity_mentions(inputs, document),
                "character_spans": character_spans}

    def _collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"batch": self._collator([item["features"] for item in items]),
                "documents": [(item["document"], item["mentions"], item["character_spans"]) for item in items]}

    def _forward(self, model_inputs: dict[str, Any]) -> list[dict[str, Any]]:
        batch, documents = model_inputs["batch"], model_inputs["documents"]
        # Relations are decoded in `postprocess` (its threshold and top_k); only the evidence is decoded here.
        output = self.model(**batch)
        counts = torch.bincount(batch["pair_document_index"], minlength=len(documents)).tolist()
        # The batch's sentence columns are those of its longest document: each document keeps its own.
        evidence = [rows[:, :len(document[0]["sents"])]
                    for rows, document in zip(self.model.decode_evidence(output.evidence).split(counts), documents)]
        return [
            {"logits": doc_logits, "hts": doc_hts, "evidence": doc_evidence, "document": document}
            for doc_logits, doc_hts, doc_evidence, document in zip(
                output.logits.float().split(counts), batch["hts"].split(counts), evidence, documents,
            )
        ]

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None, threshold: float = 0.5):
        config = self.model.config
        logits, hts, evidence = model_outputs["logits"], model_outputs["hts"], model_outputs["evidence"]
        document, mentions, character_spans = model_outputs["document"]
        kind = decision_threshold(config.loss)
        scores = torch.sigmoid(relation_margins(logits, kind))
        # score > threshold  <=>  f_r - bar > logit(threshold): shift the relation logits, decode as the model does.
        shifted = logits.clone()
        shifted[:, 1:] -= math.log(threshold / (1.0 - threshold))
        top_k = config.max_relations_per_pair if top_k is None else top_k
        predicted = decode_relations(shifted, max_relations=top_k, threshold=kind)[:, 1:]

        entities = [
            {"index": e, "name": entity[0]["name"], "type": entity[0].get("type", ""), "mentions": mentions[e]}
            for e, entity in enumerate(document["vertexSet"])
        ]
        id2label, names = config.id2label, config.relation_names or {}
        relations = []
        for pair, column in predicted.nonzero().tolist():
            head, tail = hts[pair].tolist()
            label = id2label[column + 1]
            sentences = evidence[pair].nonzero().flatten().tolist()  # ascending
            relation = {"head": entities[head], "tail": entities[tail], "relation": label,
                        "relation_name": names.get(label, label), "score": float(scores[pair, column]),
                        "evidence": sentences}
            if character_spans is not None:
                relation["evidence_spans"] = [list(character_spans[s]) for s in sentences]
            relations.append(relation)
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


__all__ = ["TASK", "DocumentRelationExtractionPipeline", "check_model_and_tokenizer", "decoding_parameters",
           "extract_mentions",
           "register_pipeline", "text_document"]
