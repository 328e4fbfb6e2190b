"""The `pemscl_relations` spaCy component: relations between the entities another component found in a `Doc`.

    pip install -e ".[spacy]"   # from the clone (make install includes it)

    import spacy
    nlp = spacy.load("en_core_web_sm")  # any pipeline that sets doc.ents (or a span group)
    nlp.add_pipe("pemscl_relations", config={"model": "org/pemscl-model"})
    doc = nlp("Marie Curie was born in Warsaw. Curie moved to Paris.")
    doc._.relations  # [{"head": [Marie Curie], "tail": [Warsaw], "relation": "P19", "relation_name": ..., "score": ...,
                     #   "evidence": [Marie Curie was born in Warsaw.]}]

The factory is registered when this module is imported and, through the `spacy_factories` entry point of the
installed package, whenever spaCy looks it up. The component reads the mentions (`doc.ents`, or `doc.spans[spans_key]`),
groups them into entities as the pipeline groups an entity extractor's mentions (`group_mentions`: same normalized
text and label, a short name with the one longer name that ends with it; unless `entity_grouping` is set), and runs the `document-relation-extraction` pipeline
(`modeling_pemscl/pipeline_pemscl.py`, which featurizes and decodes; long documents are encoded in windows by the
model) on batches of documents. `doc._.relations` is a list, highest score first, of
`{"head": [Span, ...], "tail": [Span, ...], "relation", "relation_name", "score", "evidence": [Span, ...]}`: the
spans of the head's and the tail's mentions, and the pair's evidence sentences as the model decodes them (the
pipeline's `evidence_spans`: its own sentences, split after `.`, `!`, `?`, not spaCy's `doc.sents`), each widened to
whole tokens (`doc.char_span(..., alignment_mode="expand")`). A mention span is given to the model fitted to the
pipeline's words (`mentions_to_document`); the Span itself is written unchanged. A document with fewer than two
entities gets `[]` without running the model. Mentions sharing one span (a span labelled twice, or put in two
entities by `entity_grouping`) are one mention, and the entities holding it are merged into one, so no entity is
related to itself.

What the component stores is `doc._.relation_offsets`, the same relations in plain data (each mention as
`[start token, end token, label, kb_id]`, each evidence sentence as `[start char, end char]`); `doc._.relations`
builds the Spans from it on access. So relations survive what spaCy does with a Doc's plain data: `doc.to_bytes()` /
`Doc.from_bytes`, `pickle`, `DocBin`, and `nlp.pipe(texts, n_process=...)`, which sends every Doc back from its
worker process as bytes.

In a worker process of `nlp.pipe(..., n_process=...)` the model runs on one thread: the workers themselves are the
parallelism, and in a forked worker (Linux) the parent's OpenMP thread pool, if torch already used it, does not
survive the fork, so the worker's first parallel region would wait for it forever. A worker started with `spawn`
(macOS, Windows) loads the model again from the folder or Hub id the component was built with.

This module imports without spaCy: the factory and the component then raise an ImportError saying to install the
`spacy` extra.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Optional, Union

try:
    import spacy
    from spacy.language import Language
    from spacy.tokens import Doc, Span
    from spacy.util import minibatch
except ImportError:  # the core install has no spaCy; only the component needs it
    spacy = None

from modeling_pemscl.modeling_pemscl import prepare_for_inference
from modeling_pemscl.pipeline_pemscl import decoding_parameters
from modeling_pemscl.processing_pemscl import group_mentions, mentions_to_document

FACTORY = "pemscl_relations"
EXTENSION = "relations"
"""`doc._.relations`: the relations with Spans, built on access from `OFFSETS_EXTENSION`."""
OFFSETS_EXTENSION = "relation_offsets"
"""`doc._.relation_offsets`: the stored relations, each mention as `[start token, end token, label, kb_id]`, each
evidence sentence as `[start char, end char]`."""
MISSING_SPACY = 'The pemscl_relations spaCy component needs spaCy: pip install -e ".[spacy]" in the pemscl clone.'


def _require_spacy() -> None:
    if spacy is None:
        raise ImportError(MISSING_SPACY)


def _span_offsets(span: "Span") -> list:
    return [span.start, span.end, span.label_, span.kb_id_]


def relations_with_spans(doc: "Doc") -> Optional[list[dict[str, Any]]]:
    """`doc._.relations`: `doc._.relation_offsets` with each mention and each evidence sentence as a `Span` of `doc`
    (None before the component ran)."""
    stored = doc._.get(OFFSETS_EXTENSION)
    if stored is None:
        return None
    return [{**relation,
             **{side: [Span(doc, start, end, label=label, kb_id=kb_id) for start, end, label, kb_id in relation[side]]
                for side in ("head", "tail")},
             "evidence": [doc.char_span(start, end, alignment_mode="expand")
                          for start, end in relation.get("evidence", ())]}
            for relation in stored]


def _register_extensions() -> None:
    if not Doc.has_extension(OFFSETS_EXTENSION):
        Doc.set_extension(OFFSETS_EXTENSION, default=None)
    registered = Doc.get_extension(EXTENSION)  # (default, method, getter, setter)
    if registered is None or registered[2] is not relations_with_spans:
        # force: Spans are never stored, so a plain `relations` attribute registered elsewhere gives way to the getter.
        Doc.set_extension(EXTENSION, getter=relations_with_spans, force=True)


class PemsclRelations:
    """A spaCy component writing the relations between a `Doc`'s entities to `doc._.relations`.

    Args:
        nlp: The spaCy pipeline (unused; spaCy passes it to every factory).
        name: The component's name in the pipeline.
        model: A model folder or Hub id, loaded with the `document-relation-extraction` pipeline
            (`transformers.pipeline(..., pipeline_class=DocumentRelationExtractionPipeline)`), or such a pipeline.
        spans_key: The span group holding the mentions (`doc.spans[spans_key]`); `None` reads `doc.ents`.
        threshold: Minimal score of a relation (the pipeline's `threshold`; 0.5 is the model's decision rule).
        top_k: Relations kept per entity pair (the pipeline's `top_k`; `None`: the model's
            `max_relations_per_pair`, 0 = no limit).
        batch_size: Documents per forward pass, in `nlp.pipe` and in the model.
        device: Where the model runs (`-1` / "cpu", a GPU index, "cuda:0", ...); `None` is the pipeline's default.
        entity_grouping: A callable `(mentions) -> list[list[mention]]` replacing the default grouping; each
            mention is a dict with `text`, `start`, `end`, `type` (the span's label) and `span` (the Span).
        precision: The arithmetic of inference, `"fp32"`, `"bf16"`, `"fp16"` (GPU) or `"int8"` (CPU)
            (`modeling_pemscl.optimize_for_inference`); `None` keeps the model as loaded.
        onnx_file: Run the encoder in ONNX Runtime from this file (`python -m modeling_pemscl.export_onnx`), and
            the pair head in `precision` "fp32" or "int8" (`modeling_pemscl.prepare_for_inference`).

    Raises:
        ImportError: If spaCy is not installed.
        ValueError: If a setting is out of range, or the model and its tokenizer do not match.
    """

    def __init__(self, nlp: Any, name: str = FACTORY, *, model: Any, spans_key: Optional[str] = None,
                 threshold: float = 0.5, top_k: Optional[int] = None, batch_size: int = 8,
                 device: Optional[Union[int, str]] = None,
                 entity_grouping: Optional[Callable[[list], list]] = None, precision: Optional[str] = None,
                 onnx_file: Optional[str] = None):
        _require_spacy()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{name}: batch_size={batch_size!r} must be a positive integer.")
        self.name = name
        self.spans_key = spans_key
        self.batch_size = batch_size
        self.entity_grouping = entity_grouping
        self._model_source, self._device, self._precision, self._onnx_file = model, device, precision, onnx_file
        self.extractor = _load_pipeline(model, device, precision, onnx_file)
        decoding_parameters(top_k=top_k, threshold=threshold)  # checked (and named) here, once
        self.threshold, self.top_k = threshold, top_k
        self._process_id = os.getpid()
        _register_extensions()

    def __getstate__(self) -> dict[str, Any]:
        """The component without its model, for a worker process started with `spawn` (macOS', Windows' default for
        `nlp.pipe(n_process=...)`): a loaded transformers model does not pickle, so the worker loads it again from
        the folder or Hub id it was built with.

        Raises:
            TypeError: If the component was built from a pipeline object, which has no folder to load from.
        """
        if not isinstance(self._model_source, str):
            raise TypeError(f"{self.name}: a component built from a pipeline object cannot be sent to a worker process "
                            "started with 'spawn': build it with the model's folder or Hub id (model=\"...\"), or use "
                            "nlp.pipe(..., n_process=1).")
        return {**self.__dict__, "extractor": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.extractor = _load_pipeline(self._model_source, self._device, self._precision, self._onnx_file)
        _register_extensions()

    def _mentions(self, doc: "Doc") -> list:
        if self.spans_key is None:
            return list(doc.ents)
        if self.spans_key not in doc.spans:
            raise ValueError(f"{self.name}: the Doc has no span group {self.spans_key!r} (spans_key); its groups "
                             f"are {sorted(doc.spans)}.")
        return list(doc.spans[self.spans_key])

    def _entities(self, doc: "Doc") -> tuple[dict[str, Any], list[list[Any]]]:
        """The pipeline's input for a Doc and, per entity, its mention Spans."""
        mentions = [{"start": span.start_char, "end": span.end_char, "type": span.label_, "span": span}
                    for span in self._mentions(doc)]
        document, groups = mentions_to_document(doc.text, mentions, self.entity_grouping or group_mentions,
                                                source=f"{self.name} ({'doc.ents' if self.spans_key is None else self.spans_key})")
        return document, [[mention["span"] for mention in group] for group in groups]

    def __call__(self, doc: "Doc") -> "Doc":
        """Write `doc._.relations` for one Doc."""
        (doc,) = self.pipe([doc])
        return doc

    def pipe(self, docs: Iterable["Doc"], batch_size: Optional[int] = None) -> Iterator["Doc"]:
        """Write `doc._.relations` for a stream of Docs, running the model on batches of `batch_size` documents.

        Args:
            docs: The Docs.
            batch_size: Docs read from the stream at a time (`nlp.pipe` passes its own); `None` is the component's
                `batch_size`. The model runs on at most the component's `batch_size` documents at once.

        Raises:
            ValueError: If `batch_size` is not a positive integer, a mention span is malformed or the span group is
                missing (naming the component).
        """
        if batch_size is None:
            batch_size = self.batch_size
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{self.name}: pipe(batch_size={batch_size!r}): batch_size must be a positive integer "
                             f"(or None for the component's batch_size, {self.batch_size}).")
        self._single_thread_if_forked()
        for batch in minibatch(docs, size=batch_size):
            prepared = [self._entities(doc) for doc in batch]
            runnable = [i for i, (_, spans) in enumerate(prepared) if len(spans) >= 2]
            outputs = self.extractor([prepared[i][0] for i in runnable], batch_size=self.batch_size,
                                     threshold=self.threshold, top_k=self.top_k) if runnable else []
            relations_of = dict(zip(runnable, outputs))
            for i, doc in enumerate(batch):
                spans = prepared[i][1]
                doc._.set(OFFSETS_EXTENSION, [
                    {"head": [_span_offsets(s) for s in spans[r["head"]["index"]]],
                     "tail": [_span_offsets(s) for s in spans[r["tail"]["index"]]],
                     "relation": r["relation"], "relation_name": r["relation_name"], "score": r["score"],
                     "evidence": [list(sentence) for sentence in r["evidence_spans"]]}
                    for r in relations_of.get(i, [])
                ])
                yield doc

    def _single_thread_if_forked(self) -> None:
        """In a process forked from the one that built the component (`nlp.pipe(n_process=...)` on Linux), run torch
        on one thread: a forked child has no copy of the parent's OpenMP threads, and its first parallel region
        would wait for them forever."""
        if os.getpid() != self._process_id:
            import torch

            torch.set_num_threads(1)
            self._process_id = os.getpid()


def _load_pipeline(model: Any, device: Optional[Union[int, str]], precision: Optional[str] = None,
                   onnx_file: Optional[str] = None):
    from .pipeline import DocumentRelationExtractionPipeline

    if isinstance(model, DocumentRelationExtractionPipeline):
        prepare_for_inference(model.model, precision, onnx_file)
        return model
    if not isinstance(model, str) or not model:
        raise ValueError(f"{FACTORY}: `model` must be a model folder or Hub id (a string), got {model!r}.")
    from transformers import pipeline

    from .pipeline import TASK

    # The project's own pipeline class: a folder pushed with remote code loads without trust_remote_code.
    return pipeline(TASK, model=model, device=device, pipeline_class=DocumentRelationExtractionPipeline,
                    precision=precision, onnx_file=onnx_file)


def make_pemscl_relations(nlp: Any, name: str, model: str, spans_key: Optional[str], threshold: float,
                          top_k: Optional[int], batch_size: int, device: Optional[Union[int, str]],
                          precision: Optional[str] = None, onnx_file: Optional[str] = None) -> PemsclRelations:
    """The `pemscl_relations` factory (`nlp.add_pipe("pemscl_relations", config={"model": ...})`); the config keys
    are `PemsclRelations`'s arguments.

    Raises:
        ImportError: If spaCy is not installed.
    """
    _require_spacy()
    return PemsclRelations(nlp, name, model=model, spans_key=spans_key, threshold=threshold, top_k=top_k,
                           batch_size=batch_size, device=device, precision=precision, onnx_file=onnx_file)


if spacy is not None:
    make_pemscl_relations = Language.factory(
        FACTORY,
        default_config={"spans_key": None, "threshold": 0.5, "top_k": None, "batch_size": 8, "device": None,
                        "precision": None, "onnx_file": None},
        assigns=[f"doc._.{EXTENSION}", f"doc._.{OFFSETS_EXTENSION}"],
    )(make_pemscl_relations)

__all__ = ["EXTENSION", "FACTORY", "OFFSETS_EXTENSION", "PemsclRelations", "make_pemscl_relations",
           "relations_with_spans"]
