"""DocumentRelationExtractionPipeline: plain text with character spans and DocRED documents, scores against the
model's own logits (featurize + collate + model written out here), batching, top-k / threshold, span errors,
model <-> tokenizer checks and safetensors-only loading by task name."""

import json
import math

import datasets
import pytest
import torch
from transformers import BertConfig, pipeline

import docre_training.pipeline  # noqa: F401  (registers the task)
from data_collators import DataCollatorForDocRE, RelationVocab, featurize_document
from data_helpers import DOCRED_TEST, minilm_tokenizer
from docre_training.pipeline import TASK, DocumentRelationExtractionPipeline, check_model_and_tokenizer, text_to_docred
from modeling_pemscl import PemsclConfig, PemsclModel


TEXT = ("Marie Curie was born in Warsaw. She moved to Paris in 1891 and studied at the University of Paris. "
        "Curie won the Nobel Prize.")


def span(text, phrase, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(phrase, start + 1)
    return (start, start + len(phrase))


TEXT_INPUT = {
    "text": TEXT,
    "entities": [
        [span(TEXT, "Marie Curie"), span(TEXT, "Curie", 1)],
        {"mentions": [span(TEXT, "Warsaw")], "type": "LOC"},
        [span(TEXT, "Paris")],
        {"mentions": [list(span(TEXT, "University of Paris"))], "type": "ORG", "name": "Sorbonne"},
        [span(TEXT, "Nobel Prize")],
    ],
}
# The same document in DocRED format, by hand: the oracle of text_to_docred.
TEXT_AS_DOCRED = {
    "title": "",
    "sents": [
        ["Marie", "Curie", "was", "born", "in", "Warsaw", "."],
        ["She", "moved", "to", "Paris", "in", "1891", "and", "studied", "at", "the", "University", "of", "Paris", "."],
        ["Curie", "won", "the", "Nobel", "Prize", "."],
    ],
    "vertexSet": [
        [{"name": "Marie Curie", "sent_id": 0, "pos": [0, 2], "type": ""},
         {"name": "Curie", "sent_id": 2, "pos": [0, 1], "type": ""}],
        [{"name": "Warsaw", "sent_id": 0, "pos": [5, 6], "type": "LOC"}],
        [{"name": "Paris", "sent_id": 1, "pos": [3, 4], "type": ""}],
        [{"name": "Sorbonne", "sent_id": 1, "pos": [10, 13], "type": "ORG"}],
        [{"name": "Nobel Prize", "sent_id": 2, "pos": [3, 5], "type": ""}],
    ],
}


def tiny_docre_model(tokenizer, seed=0, **overrides):
    """A random 2-layer BERT with the tokenizer's vocabulary and Re-DocRED's 97 labels; the bilinear bias puts
    about half of the relations above the threshold, so predictions are not empty."""
    vocab = RelationVocab.builtin("re-docred")
    rel2id, names = vocab.rel2id, vocab.relation_names
    encoder = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)
    settings = dict(encoder=encoder.to_dict(), id2label={i: r for r, i in rel2id.items()}, relation_names=names,
                    pair_embedding_size=32, bilinear_block_size=8)
    settings.update(overrides)
    torch.manual_seed(seed)
    model = PemsclModel(PemsclConfig(**settings)).eval()
    with torch.no_grad():
        model.bilinear.weight.mul_(50)  # pair-dependent logits, not only the bias
        model.bilinear.bias.zero_()
        model.bilinear.bias[1:] = torch.randn(model.config.num_relations) * 0.3
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_docre_model(tokenizer)


@pytest.fixture(scope="module")
def extractor(model, tokenizer):
    return pipeline(TASK, model=model, tokenizer=tokenizer)


def direct_logits(model, tokenizer, document):
    """Logits of every pair of one DocRED-format document, straight through featurizer, collator and model."""
    features = featurize_document(document, tokenizer, model.config.label2id, model.config.entity_marker)
    batch = DataCollatorForDocRE(tokenizer=tokenizer)([features])
    with torch.no_grad():
        return model(**batch).logits, features["hts"]


def expected_relations(model, logits, hts, threshold=0.5, top_k=None):
    """(head, tail, relation) -> score by the documented rule, written as a loop over pairs."""
    top_k = model.config.max_relations_per_pair if top_k is None else top_k
    expected = {}
    for row, (head, tail) in zip(logits.tolist(), hts):
        scores = {index: 1 / (1 + math.exp(-(row[index] - row[0]))) for index in range(1, len(row))}
        kept = [index for index in sorted(scores, key=scores.get, reverse=True) if scores[index] > threshold]
        for index in kept[:top_k] if top_k else kept:
            expected[(head, tail, model.config.id2label[index])] = scores[index]
    return expected


def check_output(output, expected, document, names):
    assert [relation["score"] for relation in output] == sorted((r["score"] for r in output), reverse=True)
    got = {(r["head"]["index"], r["tail"]["index"], r["relation"]): r["score"] for r in output}
    assert set(got) == set(expected)
    for key, score in got.items():
        assert score == pytest.approx(expected[key], abs=1e-5)
    for relation in output:
        assert set(relation) == {"head", "tail", "relation", "relation_name", "score"}
        for side in ("head", "tail"):
            entity = relation[side]
            assert entity["name"] == document["vertexSet"][entity["index"]][0]["name"]
        assert relation["relation_name"] == names[relation["relation"]]


def test_text_with_character_spans(extractor, model, tokenizer):
    assert text_to_docred(TEXT_INPUT) == TEXT_AS_DOCRED
    output = extractor(TEXT_INPUT)
    logits, hts = direct_logits(model, tokenizer, TEXT_AS_DOCRED)
    expected = expected_relations(model, logits, hts)
    assert 0 < len(expected) < logits.shape[0] * model.config.num_relations
    check_output(output, expected, TEXT_AS_DOCRED, model.config.relation_names)
    # The documented rule is the model's own decision rule.
    decoded = model.decode(logits)[:, 1:].nonzero().tolist()
    assert {(*hts[p], model.config.id2label[c + 1]) for p, c in decoded} == set(expected)
    assert {r["head"]["name"] for r in output} <= {"Marie Curie", "Warsaw", "Paris", "Sorbonne", "Nobel Prize"}


def test_docred_documents_batched(extractor, model, tokenizer):
    with open(DOCRED_TEST) as f:
        documents = json.load(f)[:2]
    inputs = [documents[0], TEXT_INPUT, documents[1]]
    one_by_one = extractor(inputs, batch_size=1)
    batched = extractor(inputs, batch_size=2)
    assert len(batched) == len(one_by_one) == 3
    for single, together, document in zip(one_by_one, batched, [documents[0], TEXT_AS_DOCRED, documents[1]]):
        logits, hts = direct_logits(model, tokenizer, document)
        check_output(together, expected_relations(model, logits, hts), document, model.config.relation_names)
        assert [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in single] == \
            [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in together]
    streamed = extractor(datasets.Dataset.from_list(documents), batch_size=2)  # a lazy iterator
    assert [len(output) for output in streamed] == [len(one_by_one[0]), len(one_by_one[2])]
    # A DocRED document with labels, without names and types: labels are ignored, names come from the words.
    bare = {"sents": documents[0]["sents"],
            "vertexSet": [[{"sent_id": m["sent_id"], "pos": m["pos"]} for m in entity] for entity in documents[0]["vertexSet"]],
            "labels": [{"h": 0, "t": 1, "r": "P-unknown"}]}
    output = extractor(bare)
    assert [r["score"] for r in output] == pytest.approx([r["score"] for r in one_by_one[0]], abs=1e-5)
    first = bare["vertexSet"][0][0]
    assert {r["head"]["name"] for r in output if r["head"]["index"] == 0} <= {
        " ".join(bare["sents"][first["sent_id"]][first["pos"][0]:first["pos"][1]])}


def test_threshold_and_top_k(extractor, model, tokenizer):
    logits, hts = direct_logits(model, tokenizer, TEXT_AS_DOCRED)
    for threshold, top_k in ((0.4, 0), (0.6, 2), (0.5, 1)):
        output = extractor(TEXT_INPUT, threshold=threshold, top_k=top_k)
        expected = expected_relations(model, logits, hts, threshold=threshold, top_k=top_k)
        check_output(output, expected, TEXT_AS_DOCRED, model.config.relation_names)
    assert len(extractor(TEXT_INPUT, threshold=0.4, top_k=0)) > len(extractor(TEXT_INPUT))
    with pytest.raises(ValueError, match="threshold"):
        extractor(TEXT_INPUT, threshold=1.5)
    with pytest.raises(TypeError, match="Unknown parameters"):
        extractor(TEXT_INPUT, topk=3)


def test_text_splitting_and_span_errors():
    document = text_to_docred({"text": "The U.S. Army met. Then it left!", "entities": [[(4, 13)], [(24, 26)]]})
    # No sentence boundary inside the mention "U.S. Army"; sentences end after "." / "!".
    assert document["sents"] == [["The", "U", ".", "S", ".", "Army", "met", "."], ["Then", "it", "left", "!"]]
    assert document["vertexSet"][0] == [{"name": "U.S. Army", "sent_id": 0, "pos": [1, 6], "type": ""}]
    assert document["vertexSet"][1][0]["pos"] == [1, 2] and document["vertexSet"][1][0]["sent_id"] == 1
    with pytest.raises(ValueError, match=r"Entity 1, mention 0: character span \(1, 8\) = 'aris is' does not align"):
        text_to_docred({"text": "Paris is big", "entities": [[(0, 5)], [(1, 8)]]})
    with pytest.raises(ValueError, match=r"Entity 0, mention 1: character span \(3, 99\) is outside the text"):
        text_to_docred({"text": "Paris is big", "entities": [[(0, 5), (3, 99)]]})
    with pytest.raises(ValueError, match="Entity 0 has no mention"):
        text_to_docred({"text": "Paris", "entities": [[]]})
    with pytest.raises(ValueError, match="does not find them"):
        docre_training.to_docred({"text": "Paris is big"})


def test_model_and_tokenizer_must_match(tokenizer):
    small = tiny_docre_model(tokenizer, encoder=BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1,
                                                           num_attention_heads=4, intermediate_size=64).to_dict())
    with pytest.raises(ValueError, match=r"30522 tokens but the encoder's embedding matrix has 1000 rows"):
        pipeline(TASK, model=small, tokenizer=tokenizer)
    marker = tiny_docre_model(tokenizer, entity_marker="<ent>")
    with pytest.raises(ValueError, match=r"entity marker '<ent>' .* not as one known token"):
        check_model_and_tokenizer(marker, tokenizer)
    padded = tiny_docre_model(tokenizer)
    padded.config.encoder.pad_token_id = 1
    with pytest.raises(ValueError, match="pads with id 0 but the encoder"):
        check_model_and_tokenizer(padded, tokenizer)


def test_pipeline_by_name_loads_safetensors_only(tmp_path, model, tokenizer, extractor, monkeypatch):
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    loaded = pipeline(TASK, model=str(tmp_path / "model"))
    assert isinstance(loaded, DocumentRelationExtractionPipeline)
    def summary(output):
        return [(r["head"]["index"], r["tail"]["index"], r["relation"], round(r["score"], 5)) for r in output]

    assert summary(loaded(TEXT_INPUT)) == summary(extractor(TEXT_INPUT))

    # A pickled checkpoint is never unpickled.
    (tmp_path / "model" / "model.safetensors").rename(tmp_path / "weights.safetensors")
    torch.save(model.state_dict(), tmp_path / "model" / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a user-supplied file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ValueError, match="no file named model.safetensors"):
        pipeline(TASK, model=str(tmp_path / "model"))


def test_bad_inputs_are_named_before_any_work(extractor, monkeypatch):
    calls = []
    forward = DocumentRelationExtractionPipeline.forward
    monkeypatch.setattr(DocumentRelationExtractionPipeline, "forward",
                        lambda self, *args, **kwargs: calls.append(1) or forward(self, *args, **kwargs))
    assert extractor([]) == [] and not calls
    good = {"text": "Paris is in France.", "entities": [[(0, 5)], [(12, 18)]]}
    cases = {
        "entities None": ({"text": "Paris.", "entities": None}, r"`entities` must be a list"),
        "no name, bad sent_id": ({"sents": [["Paris"]], "vertexSet": [[{"sent_id": 3, "pos": [0, 1]}]]},
                                 r"`vertexSet\[0\]\[0\]\.name` is a required key"),
        "int pos": ({"sents": [["Paris"]], "vertexSet": [[{"name": "Paris", "sent_id": 0, "pos": 0}]]},
                    r"`vertexSet\[0\]\[0\]\.pos` 0 must be \[start, end\]"),
        "not a dict": ("Paris is in France.", r"must be a dict"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(ValueError, match=r"Document 1 of the 3 given: .*" + message):
            extractor([good, bad, good])
        assert not calls, name  # nothing ran before the check
    with pytest.raises(ValueError, match=r"`entities` must be a list"):
        extractor({"text": "Paris.", "entities": None})
