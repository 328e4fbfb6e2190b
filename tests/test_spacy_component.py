"""The `pemscl_relations` spaCy component: entities from an entity_ruler (a blank English pipeline, no download) or
a span group, grouped by the documented rule, relations and scores against the model's own logits, evidence Spans
against the pair's context attention summed per sentence, `nlp.pipe` batches, relations and their evidence kept
through bytes, pickle and worker processes (forked and spawned), the entry point and the errors."""

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

spacy = pytest.importorskip("spacy", reason='the spaCy tests need the `spacy` extra: pip install -e ".[spacy]"')

from importlib.metadata import entry_points  # noqa: E402

from docre_training import spacy_component  # noqa: E402
from docre_training.pipeline import DocumentRelationExtractionPipeline, split_words, text_to_docred  # noqa: E402
from test_pipeline import (  # noqa: E402
    direct_logits,
    expected_evidence,
    expected_relations,
    sharp_docre_model,
    span,
)
from data_helpers import minilm_tokenizer  # noqa: E402

SENTENCES = ["Marie Curie was born in Warsaw.", "She moved to Paris in 1891.", "marie curie won the Nobel Prize in Paris."]
TEXT = " ".join(SENTENCES)
PATTERNS = [
    {"label": "PER", "pattern": [{"LOWER": "marie"}, {"LOWER": "curie"}]},
    {"label": "LOC", "pattern": "Warsaw"},
    {"label": "LOC", "pattern": "Paris"},
    {"label": "MISC", "pattern": "Nobel Prize"},
]
# TEXT's entities by hand: the ruler's spans, the same casefolded text and label grouped, in text order.
ENTITIES = [
    ("PER", [span(TEXT, "Marie Curie"), span(TEXT, "marie curie")]),
    ("LOC", [span(TEXT, "Warsaw")]),
    ("LOC", [span(TEXT, "Paris"), span(TEXT, "Paris", 1)]),
    ("MISC", [span(TEXT, "Nobel Prize")]),
]


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return sharp_docre_model(tokenizer)  # evidence_threshold 0.05: a few sentences of evidence per pair


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, model, tokenizer):
    folder = tmp_path_factory.mktemp("pemscl") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def ruler_nlp(model_folder, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    nlp.add_pipe("pemscl_relations", config={"model": model_folder, **config})
    return nlp


def span_group_doc(model_folder, labelled, **config):
    """A blank pipeline whose component reads the span group "mentions", and TEXT with `labelled` (surface, label)
    spans (each surface's first occurrence) in that group: `(nlp, component, doc)`."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe("pemscl_relations", config={"model": model_folder, "spans_key": "mentions", **config})
    doc = nlp.make_doc(TEXT)
    doc.spans["mentions"] = [doc.char_span(*span(TEXT, surface), label=label) for surface, label in labelled]
    return nlp, component, doc


def expected_for(model, tokenizer, text, entities, **settings):
    """(head spans, tail spans, relation) -> score, from the model's logits on the hand-built document."""
    docred = text_to_docred({"text": text, "entities": [{"mentions": spans, "type": kind} for kind, spans in entities]})
    logits, hts = direct_logits(model, tokenizer, docred)
    return {(tuple(entities[h][1]), tuple(entities[t][1]), relation): score
            for (h, t, relation), score in expected_relations(model, logits, hts, **settings).items()}


def summary(doc):
    assert [r["score"] for r in doc._.relations] == sorted((r["score"] for r in doc._.relations), reverse=True)
    got = {}
    for relation in doc._.relations:
        assert set(relation) == {"head", "tail", "relation", "relation_name", "score", "evidence"}
        for side in ("head", "tail", "evidence"):
            assert all(isinstance(s, spacy.tokens.Span) and s.doc is doc for s in relation[side])
            assert len({s.label_ for s in relation[side]}) == 1
        key = tuple(tuple((s.start_char, s.end_char) for s in relation[side]) for side in ("head", "tail"))
        got[(*key, relation["relation"])] = relation["score"]
    return got


def check(doc, expected):
    got = summary(doc)
    assert set(got) == set(expected) and expected
    for key, score in got.items():
        assert score == pytest.approx(expected[key], abs=1e-5)


def check_evidence(doc, model, tokenizer, entities, sentences=None):
    """Each relation's evidence Spans are the sentences of its pair's evidence (`expected_evidence` on the
    hand-built document): their words are the sentence's words and, when `sentences` (the text's sentences by hand)
    is given, their text is the sentence."""
    docred = text_to_docred({"text": doc.text, "entities": [{"mentions": spans, "type": kind}
                                                            for kind, spans in entities]})
    evidence = expected_evidence(model, tokenizer, docred)
    entity_of = {tuple(spans): e for e, (_, spans) in enumerate(entities)}
    assert doc._.relations
    for relation in doc._.relations:
        head, tail = (entity_of[tuple((s.start_char, s.end_char) for s in relation[side])] for side in ("head", "tail"))
        assert len(relation["evidence"]) == len(evidence[head, tail])
        for got, sentence in zip(relation["evidence"], evidence[head, tail]):
            assert [word for word, _, _ in split_words(got.text)] == docred["sents"][sentence]
            if sentences is not None:
                assert got.text == sentences[sentence]
    assert any(0 < len(relation["evidence"]) < len(docred["sents"]) for relation in doc._.relations)


def test_entity_ruler_entities_give_the_model_relations(model_folder, model, tokenizer):
    nlp = ruler_nlp(model_folder)
    doc = nlp(TEXT)
    assert [(e.text, e.label_) for e in doc.ents] == [("Marie Curie", "PER"), ("Warsaw", "LOC"), ("Paris", "LOC"),
                                                      ("marie curie", "PER"), ("Nobel Prize", "MISC"), ("Paris", "LOC")]
    check(doc, expected_for(model, tokenizer, TEXT, ENTITIES))
    check_evidence(doc, model, tokenizer, ENTITIES, SENTENCES)
    names = model.config.relation_names
    assert all(r["relation_name"] == names[r["relation"]] for r in doc._.relations)
    # threshold and top_k from the config.
    strict = ruler_nlp(model_folder, threshold=0.6, top_k=1)(TEXT)
    check(strict, expected_for(model, tokenizer, TEXT, ENTITIES, threshold=0.6, top_k=1))
    assert len(strict._.relations) < len(doc._.relations)


def test_a_span_group_with_overlapping_mentions(model_folder, model, tokenizer):
    # "University"-style overlap: "Nobel Prize" and "Prize" (doc.ents could not hold both).
    nlp, component, doc = span_group_doc(model_folder, [("Marie Curie", "PER"), ("Nobel Prize", "MISC"),
                                                        ("Prize", "MISC"), ("Warsaw", "LOC")])
    doc = component(doc)
    entities = [("PER", [span(TEXT, "Marie Curie")]), ("LOC", [span(TEXT, "Warsaw")]),
                ("MISC", [span(TEXT, "Nobel Prize")]), ("MISC", [span(TEXT, "Prize")])]
    check(doc, expected_for(model, tokenizer, TEXT, entities))
    with pytest.raises(ValueError, match=r"no span group 'mentions' \(spans_key\)"):
        component(nlp.make_doc(TEXT))


def test_nlp_pipe_runs_the_model_on_batches(model_folder, model, tokenizer, monkeypatch):
    texts = [TEXT, "Nothing happens in Warsaw.", "Paris is not Warsaw.", TEXT, "Marie Curie saw Paris."]
    nlp = ruler_nlp(model_folder, batch_size=2)
    one_by_one = [summary(nlp(text)) for text in texts]
    sizes = []
    forward = DocumentRelationExtractionPipeline.forward
    monkeypatch.setattr(DocumentRelationExtractionPipeline, "forward",
                        lambda self, inputs, **kwargs: sizes.append(len(inputs["documents"])) or forward(self, inputs, **kwargs))
    docs = list(nlp.pipe(texts, batch_size=2))
    for doc, alone in zip(docs, one_by_one):  # the same relations; scores up to padding's rounding
        together = summary(doc)
        assert together.keys() == alone.keys()
        assert all(together[key] == pytest.approx(alone[key], abs=1e-5) for key in alone)
    assert one_by_one[1] == {} and docs[1]._.relations == []  # one entity: no pair, no model call
    # Batches of 2 Docs: [TEXT, one entity] -> 1 document, [Paris/Warsaw, TEXT] -> 2, [Marie Curie/Paris] -> 1.
    assert sizes == [1, 2, 1]
    check(docs[2], expected_for(model, tokenizer, texts[2], [("LOC", [span(texts[2], "Paris")]),
                                                             ("LOC", [span(texts[2], "Warsaw")])]))


def test_the_factory_is_registered_and_checks_its_settings(model_folder):
    (point,) = [p for p in entry_points(group="spacy_factories") if p.name == "pemscl_relations"]
    assert point.load() is spacy_component.make_pemscl_relations
    assert spacy.blank("en").has_factory("pemscl_relations")
    with pytest.raises(ValueError, match=r"threshold=1.5 must be a probability"):
        spacy.blank("en").add_pipe("pemscl_relations", config={"model": model_folder, "threshold": 1.5})
    with pytest.raises(ValueError, match=r"batch_size=0 must be a positive integer"):
        spacy.blank("en").add_pipe("pemscl_relations", config={"model": model_folder, "batch_size": 0})
    # Built in Python, without spaCy's config check in front.
    with pytest.raises(ValueError, match=r"batch_size=True must be a positive integer"):
        spacy_component.PemsclRelations(None, model=model_folder, batch_size=True)
    with pytest.raises(ValueError, match=r"threshold='0.5' must be a number"):
        spacy_component.PemsclRelations(None, model=model_folder, threshold="0.5")


def keyed(doc):
    """The relations of a Doc by their mentions' character offsets and labels and their evidence sentences' character
    offsets and texts (comparable across Docs)."""
    return {(tuple((s.start_char, s.end_char, s.label_) for s in r["head"]),
             tuple((s.start_char, s.end_char, s.label_) for s in r["tail"]), r["relation"],
             tuple((s.start_char, s.end_char, s.text) for s in r["evidence"])): r["score"]
            for r in doc._.relations}


def assert_same_relations(docs, reference):
    for doc, alone in zip(docs, reference, strict=True):
        got, want = keyed(doc), keyed(alone)
        assert got.keys() == want.keys()
        assert all(got[key] == pytest.approx(want[key], abs=1e-5) for key in want)  # thread count changes rounding


def test_relations_survive_bytes_and_pickle(model_folder, model, tokenizer):
    nlp = ruler_nlp(model_folder)
    doc = nlp(TEXT)
    stored = doc._.get(spacy_component.OFFSETS_EXTENSION)
    assert stored and all(isinstance(value, (int, str)) for r in stored for side in ("head", "tail", "evidence")
                          for mention in r[side] for value in mention)
    assert any(r["evidence"] for r in stored)
    expected = expected_for(model, tokenizer, TEXT, ENTITIES)
    for copy in (spacy.tokens.Doc(nlp.vocab).from_bytes(doc.to_bytes()), pickle.loads(pickle.dumps(doc)),
                 next(spacy.tokens.DocBin(store_user_data=True, docs=[doc]).get_docs(nlp.vocab))):
        check(copy, expected)
        check_evidence(copy, model, tokenizer, ENTITIES, SENTENCES)
        assert keyed(copy) == keyed(doc)
    assert spacy.blank("en")("No component ran.")._.relations is None


TEXTS = [TEXT, "Nothing happens in Warsaw.", "Paris is not Warsaw.", "Marie Curie saw Paris.", TEXT]


# Run in a Python of its own, in a session of its own: a hung worker also hangs spaCy's parent, which joins its
# workers, so only killing the whole process group ends a hang.
FORKED_PIPE = textwrap.dedent("""
    import json, sys
    import spacy
    import docre_training.spacy_component  # noqa: F401  (registers the factory)

    model_folder, patterns, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns(patterns)
    nlp.add_pipe("pemscl_relations", config={"model": model_folder, "batch_size": 2})
    nlp(texts[0])  # the parent's torch threads are in use before the fork
    docs = list(nlp.pipe(texts, n_process=2, batch_size=2))
    print(json.dumps([[[[[s.start_char, s.end_char, s.label_] for s in r[side]] for side in ("head", "tail")]
                       + [r["relation"], [[s.start_char, s.end_char, s.text] for s in r["evidence"]], r["score"]]
                       for r in doc._.relations] for doc in docs]))
""")


def test_nlp_pipe_with_two_forked_processes_after_the_parent_ran_the_model(model_folder, model, tokenizer):
    process = subprocess.Popen(
        [sys.executable, "-c", FORKED_PIPE, model_folder, json.dumps(PATTERNS), json.dumps(TEXTS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("nlp.pipe(n_process=2) hung after the parent process ran the model")
    assert process.returncode == 0, stderr[-3000:]
    from_workers = [{(tuple(map(tuple, head)), tuple(map(tuple, tail)), relation, tuple(map(tuple, evidence))): score
                     for head, tail, relation, evidence, score in relations}
                    for relations in json.loads(stdout.splitlines()[-1])]
    nlp = ruler_nlp(model_folder)
    alone = [keyed(nlp(text)) for text in TEXTS]
    for got, want in zip(from_workers, alone, strict=True):
        assert got.keys() == want.keys()
        assert all(got[key] == pytest.approx(want[key], abs=1e-5) for key in want)  # thread count changes rounding
    assert from_workers[1] == {} and len(from_workers[0]) > 0
    # The workers' evidence of TEXT is the sentences of the pairs' evidence.
    evidence = expected_evidence(model, tokenizer, text_to_docred(
        {"text": TEXT, "entities": [{"mentions": spans, "type": kind} for kind, spans in ENTITIES]}))
    entity_of = {tuple((*s, kind) for s in spans): e for e, (kind, spans) in enumerate(ENTITIES)}
    for head, tail, _, sentences in from_workers[0]:
        assert [text for _, _, text in sentences] == [SENTENCES[s] for s in evidence[entity_of[head], entity_of[tail]]]
    assert any(0 < len(sentences) < len(SENTENCES) for *_, sentences in from_workers[0])


@pytest.mark.timeout(120)
def test_nlp_pipe_with_spawned_processes_loads_the_model_again(model_folder, monkeypatch):
    """macOS' and Windows' start method: the component is pickled without its model, which the worker loads."""
    nlp = ruler_nlp(model_folder)
    alone = [nlp(text) for text in TEXTS[:3]]
    monkeypatch.setattr(spacy.language, "mp", multiprocessing.get_context("spawn"))
    assert_same_relations(list(nlp.pipe(TEXTS[:3], n_process=2, batch_size=2)), alone)

    component = spacy_component.PemsclRelations(nlp, model=nlp.get_pipe("pemscl_relations").extractor)
    with pytest.raises(TypeError, match=r"built from a pipeline object cannot be sent to a worker process started "
                                        r"with 'spawn'"):
        pickle.dumps(component)


def test_a_batch_size_that_is_not_positive_is_refused(model_folder):
    nlp = ruler_nlp(model_folder)
    component = nlp.get_pipe("pemscl_relations")
    for bad in (-1, 0, "2", 1.5):
        with pytest.raises(ValueError, match=rf"pemscl_relations: pipe\(batch_size={bad!r}\): batch_size must be a "
                                             r"positive integer"):
            list(component.pipe([nlp.make_doc(TEXT)], batch_size=bad))
    with pytest.raises(ValueError, match=r"pipe\(batch_size=-1\)"):
        list(nlp.pipe([TEXT], batch_size=-1))
    assert [len(doc._.relations) > 0 for doc in component.pipe([nlp(TEXT)], batch_size=None)] == [True]


def test_a_span_labelled_twice_is_one_mention_of_one_entity(model_folder, model, tokenizer):
    nlp, component, doc = span_group_doc(model_folder, [("Marie Curie", "PER"), ("Warsaw", "LOC"), ("Warsaw", "GPE"),
                                                        ("Paris", "LOC")], top_k=0)
    doc = component(doc)
    # By hand: the LOC and GPE "Warsaw" are one entity, which keeps the first label.
    entities = [("PER", [span(TEXT, "Marie Curie")]), ("LOC", [span(TEXT, "Warsaw")]), ("LOC", [span(TEXT, "Paris")])]
    check(doc, expected_for(model, tokenizer, TEXT, entities, top_k=0))
    assert all(r["head"] != r["tail"] for r in doc._.relations)
    assert {s.label_ for r in doc._.relations for s in r["head"] if s.text == "Warsaw"} == {"LOC"}


def test_the_component_runs_the_model_in_the_precision_of_its_config(model_folder, tokenizer):
    nlp = ruler_nlp(model_folder, precision="int8")
    component = nlp.get_pipe("pemscl_relations")
    assert component.extractor.model.inference_precision == "int8"
    int8 = component.extractor.model
    check(nlp(TEXT), expected_for(int8, tokenizer, TEXT, ENTITIES))
    with pytest.raises(ValueError, match=r"precision='fp64': choose one of"):
        spacy.blank("en").add_pipe("pemscl_relations", config={"model": model_folder, "precision": "fp64"})
