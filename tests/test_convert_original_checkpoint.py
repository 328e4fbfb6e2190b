"""`modeling_pemscl.convert_original_checkpoint` against a checkpoint written by the released PEMSCL research code
itself, with that code's own logits and predictions (tests/fixtures/released-pemscl-tiny, see its README): the
converted model computes the same logits and decodes the same relations through every way in, and every file that
cannot be converted is refused with a message that names it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertConfig

import run_docre
from modeling_pemscl import PemsclModel
from modeling_pemscl.convert_original_checkpoint import CheckpointError, convert_original_checkpoint, main
from modeling_pemscl.modeling_pemscl import truncate_documents
from modeling_pemscl.processing_pemscl import DataCollatorForDocRE, featurize_document
from remote_code_helpers import run_without_the_project
from train_helpers import COMMON_ARGUMENTS, read_json

RELEASE = Path(__file__).resolve().parent / "fixtures" / "released-pemscl-tiny"
CHECKPOINT = RELEASE / "release-checkpoint.pt"
ENCODER = RELEASE / "encoder"
DOCUMENTS = read_json(RELEASE / "documents.json")
RESEARCH_LIMIT = 1024


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("converted") / "pemscl-tiny"
    convert_original_checkpoint(CHECKPOINT, str(ENCODER), folder)
    return folder


@pytest.fixture(scope="module")
def release_logits():
    outputs = load_file(RELEASE / "release_outputs.safetensors")
    return [(outputs[f"hts_{i}"], outputs[f"logits_{i}"]) for i in range(len(DOCUMENTS))]


def release_facts() -> set[tuple]:
    return {(fact["title"], fact["h_idx"], fact["t_idx"], fact["r"]) for fact in read_json(RELEASE / "release_predictions.json")}


def pair_rows(document, hts: torch.Tensor) -> list[int]:
    """Rows of the release's pairs (matched by `hts`) in this project's head-major pair order."""
    n = len(document["vertexSet"])
    return [h * (n - 1) + t - (t > h) for h, t in hts.tolist()]


def model_outputs(model, tokenizer, documents):
    config = model.config
    features = [featurize_document(document, tokenizer, config.label2id, entity_marker=config.entity_marker,
                                   word_prefix_space=config.word_prefix_space) for document in documents]
    batch = DataCollatorForDocRE(tokenizer=tokenizer)(features)
    with torch.no_grad():
        output = model(**batch, return_predictions=True)
    return batch, output


def facts_of(model, batch, output, documents) -> set[tuple]:
    facts = set()
    for pair, label in output.predictions[:, 1:].nonzero().tolist():
        head, tail = batch["hts"][pair].tolist()
        title = documents[int(batch["pair_document_index"][pair])]["title"]
        facts.add((title, head, tail, model.config.id2label[label + 1]))
    return facts


# ------------------------------------------------------------------ the same computation
def test_converted_folder_is_a_complete_pemscl_model(converted):
    files = {path.name for path in converted.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json", "configuration_pemscl.py",
            "modeling_pemscl.py", "losses.py", "pipeline_pemscl.py", "processing_pemscl.py"} <= files
    assert not any(name.endswith((".pt", ".bin")) for name in files)
    config = read_json(converted / "config.json")
    assert (config["pair_embedding_size"], config["bilinear_block_size"]) == (64, 8)  # read off the shapes
    assert config["window_scheme"] == "atlop" and config["max_document_length"] == RESEARCH_LIMIT
    assert config["max_relations_per_pair"] == 4 and config["entity_marker"] == "*"
    from data_collators import RelationVocab

    assert config["label2id"] == RelationVocab.builtin("re-docred").rel2id  # ATLOP's rel2id.json, Na at 0
    assert "document-relation-extraction" in config["custom_pipelines"]
    card = (converted / "README.md").read_text()
    assert "release-checkpoint.pt" in card and "convert_original_checkpoint --checkpoint release-checkpoint.pt" in card
    assert "Guo, Kok and Bing" in card


@pytest.mark.parametrize("batched", [False, True], ids=["one-document-a-batch", "all-in-one-batch"])
def test_logits_equal_the_research_code_for_every_pair(converted, release_logits, batched):
    model = AutoModel.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    groups = [DOCUMENTS] if batched else [[document] for document in DOCUMENTS]
    ours = []
    for documents in groups:
        batch, output = model_outputs(model, tokenizer, documents)
        for row in range(len(documents)):
            ours.append(output.logits[batch["pair_document_index"] == row])
    lengths = [len(featurize_document(d, tokenizer, model.config.label2id)["input_ids"]) for d in DOCUMENTS]
    assert lengths[2] > 512 and lengths[3] > RESEARCH_LIMIT  # two windows; cut by the research code
    for document, logits, (hts, expected) in zip(DOCUMENTS, ours, release_logits):
        assert logits.shape[0] == expected.shape[0]
        got = logits[pair_rows(document, hts)]
        scale = expected.abs().max()
        assert float((got - expected).abs().max() / scale) < 1e-4, document["title"]


def test_decoded_relations_equal_the_research_code_predictions(converted):
    model = AutoModel.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    batch, output = model_outputs(model, tokenizer, DOCUMENTS)
    assert facts_of(model, batch, output, DOCUMENTS) == release_facts()


def test_the_truncated_document_is_read_as_the_research_code_reads_it(converted):
    """Past 1,024 subwords the research code keeps the first 1,023 and the final special token, drops the mentions
    past the cut (an entity left without any is a zero vector), and keeps a mention whose cut marker lands on
    position 1,023, where it reads the final token. The same tensors come out of `truncate_documents`."""
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModel.from_pretrained(converted).eval()
    features = featurize_document(DOCUMENTS[3], tokenizer, model.config.label2id)
    batch = DataCollatorForDocRE(tokenizer=tokenizer)([features])
    ids, mask, positions = truncate_documents(batch["input_ids"], batch["attention_mask"],
                                              batch["mention_positions"], RESEARCH_LIMIT)
    original = batch["input_ids"][0]
    assert ids.shape == (1, RESEARCH_LIMIT) and int(mask.sum()) == RESEARCH_LIMIT
    assert ids[0, :-1].tolist() == original[: RESEARCH_LIMIT - 1].tolist()
    assert int(ids[0, -1]) == tokenizer.sep_token_id == int(original[-1])
    every = batch["mention_positions"][0]
    kept = positions[0]
    assert ((kept >= 0) == ((every >= 0) & (every < RESEARCH_LIMIT))).all()
    assert (every == RESEARCH_LIMIT - 1).any()  # the fixture holds the marker that lands on the final token
    cut_entities = [e for e in range(len(features["mention_positions"])) if not (kept[e] >= 0).any()]
    assert cut_entities  # whole entities lie past the cut, and still get pairs (zero vectors), as in the research code
    n = len(DOCUMENTS[3]["vertexSet"])
    assert len(features["hts"]) == n * (n - 1)


def test_a_long_document_over_two_windows_is_refused_without_the_cut(converted):
    model = AutoModel.from_pretrained(converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model.config.max_document_length = None
    with pytest.raises(ValueError, match="max_document_length"):
        model_outputs(model, tokenizer, [DOCUMENTS[3]])
    with pytest.raises(ValueError, match="max_document_length"):
        type(model.config)(**{**model.config.to_dict(), "max_document_length": None})


# ------------------------------------------------------------------ everywhere a trained model works
def test_pipeline_gives_the_research_code_relations(converted):
    import docre_training.pipeline  # noqa: F401  (registers the task)
    from transformers import pipeline

    from docre_training.pipeline import DocumentRelationExtractionPipeline

    extractor = pipeline("document-relation-extraction", model=str(converted),
                         pipeline_class=DocumentRelationExtractionPipeline)
    outputs = extractor([{key: d[key] for key in ("title", "sents", "vertexSet")} for d in DOCUMENTS])
    facts = {(d["title"], r["head"]["index"], r["tail"]["index"], r["relation"]) for d, rs in zip(DOCUMENTS, outputs)
             for r in rs}
    assert facts == release_facts()


def test_remote_code_alone_gives_the_research_code_relations(converted, tmp_path):
    """AutoModel and the pipeline through `trust_remote_code=True`, in a Python that cannot import this project."""
    documents = [{key: d[key] for key in ("title", "sents", "vertexSet")} for d in DOCUMENTS]
    (tmp_path / "documents.json").write_text(json.dumps(documents))
    result = run_without_the_project(
        f"""
        import json
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained({str(converted)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        extractor = pipeline("document-relation-extraction", model={str(converted)!r}, trust_remote_code=True)
        documents = json.load(open({str(tmp_path / "documents.json")!r}))
        facts = [[d["title"], r["head"]["index"], r["tail"]["index"], r["relation"]]
                 for d, rs in zip(documents, extractor(documents)) for r in rs]
        print("REMOTE " + json.dumps(facts))
        """,
        tmp_path,
    )
    line = next((l for l in result.stdout.splitlines() if l.startswith("REMOTE ")), None)
    assert line is not None, result.stdout[-2000:] + result.stderr[-3000:]
    assert {tuple(fact) for fact in json.loads(line[len("REMOTE "):])} == release_facts()


def test_run_docre_predicts_the_research_code_relations_and_continues_training(converted, tmp_path):
    test_file = tmp_path / "documents.json"
    shutil.copyfile(RELEASE / "documents.json", test_file)
    common = ["--test_file", str(test_file), *COMMON_ARGUMENTS]
    run_docre.main(["--model_name_or_path", str(converted), "--output_dir", str(tmp_path / "predict"), *common,
                    "--do_predict"])
    predictions = read_json(tmp_path / "predict" / "predictions_test.json")
    assert {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in predictions} == release_facts()

    before = load_file(converted / "model.safetensors")
    run_docre.main(["--model_name_or_path", str(converted), "--output_dir", str(tmp_path / "train"), *common,
                    "--train_file", str(test_file), "--do_train", "--max_steps", "2",
                    "--per_device_train_batch_size", "2"])
    trained = PemsclModel.from_pretrained(tmp_path / "train")
    assert trained.config.window_scheme == "atlop" and trained.config.max_document_length == RESEARCH_LIMIT
    after = trained.state_dict()
    assert not torch.equal(after["bilinear.weight"], before["bilinear.weight"])  # it trained


def test_atlop_checkpoints_convert_with_the_atlop_loss(tmp_path):
    model = convert_original_checkpoint(CHECKPOINT, str(ENCODER), tmp_path / "atlop", loss="atlop")
    assert model.config.loss == "atlop"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "atlop")
    batch, output = model_outputs(model, tokenizer, DOCUMENTS)
    assert facts_of(model, batch, output, DOCUMENTS) == release_facts()  # ATLOP decodes as PEMSCL does
    card = (tmp_path / "atlop" / "README.md").read_text()
    assert "--loss atlop" in card and "79.86" not in card


def test_push_to_hub_uploads_the_converted_folder(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kwargs: calls.append(("create", repo_id)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kwargs: calls.append(
        ("upload", kwargs["repo_id"], sorted(os.listdir(kwargs["folder_path"])))))
    folder = tmp_path / "out"
    assert main(["--checkpoint", str(CHECKPOINT), "--encoder", str(ENCODER), "--output_dir", str(folder),
                 "--push_to_hub", "org/pemscl-tiny"]) == 0
    assert calls[0] == ("create", "org/pemscl-tiny")
    assert calls[1][:2] == ("upload", "org/pemscl-tiny") and "model.safetensors" in calls[1][2]
    card = (folder / "README.md").read_text()
    assert "name: org/pemscl-tiny" in card and "--push_to_hub org/pemscl-tiny" in card


def test_reported_scores_are_quoted_only_for_the_published_roberta_large_shape(tmp_path):
    from model_cards import generate_model_card

    from modeling_pemscl.convert_original_checkpoint import PAPER, PAPER_URL, REPORTED_SCORES

    conversion = {"source": "pemscl-re-docred.pt", "encoder": "roberta-large", "command": "python -m ...",
                  "paper": PAPER, "paper_url": PAPER_URL, "release_url": "https://github.com/guojiapub/PEMSCL",
                  "reported": REPORTED_SCORES["re-docred"]}
    card = generate_model_card(tmp_path, "org/pemscl-roberta-large", data_args={"dataset": "re-docred"},
                               model_config={"window_scheme": "atlop", "max_document_length": 1024},
                               conversion=conversion)
    assert "79.86" in card and "not measured by this conversion" in card
    assert "source:" in card and PAPER_URL in card  # the model-index attributes the scores to the paper


# ------------------------------------------------------------------ files that cannot be converted
def _convert(tmp_path, checkpoint, encoder=ENCODER, **kwargs):
    return convert_original_checkpoint(checkpoint, str(encoder), tmp_path / "out", **kwargs)


def _save(tmp_path, payload, name="bad.pt"):
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _release_state():
    return torch.load(CHECKPOINT, weights_only=True)


class NotATensor:
    pass


def test_a_file_holding_objects_is_refused_not_unpickled(tmp_path):
    path = _save(tmp_path, {"model.embeddings.word_embeddings.weight": NotATensor()})
    with pytest.raises(CheckpointError, match=rf"{path.name}.*objects other than tensors"):
        _convert(tmp_path, path)


@pytest.mark.parametrize("payload", [[torch.zeros(2)], torch.zeros(3), {"step": 3}], ids=["list", "tensor", "not-tensors"])
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path, payload):
    path = _save(tmp_path, payload)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*(not a state dict|holds a)"):
        _convert(tmp_path, path)


def test_a_missing_file_and_a_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        _convert(tmp_path, tmp_path / "nothing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="broken.pt.*not a PyTorch checkpoint"):
        _convert(tmp_path, broken)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = _release_state()
    del state["tail_extractor.bias"]
    with pytest.raises(CheckpointError, match=r"lacks \['tail_extractor.bias'\]"):
        _convert(tmp_path, _save(tmp_path, state))
    state = _release_state()
    state["classifier.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"unexpected entries \['classifier.weight'\]"):
        _convert(tmp_path, _save(tmp_path, state))
    state = _release_state()
    del state["model.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"missing entries \['model.encoder.layer.1.output.dense.weight'\]"):
        _convert(tmp_path, _save(tmp_path, state))


def _encoder_folder(tmp_path, **changes):
    folder = tmp_path / "other-encoder"
    shutil.copytree(ENCODER, folder)
    config = BertConfig.from_pretrained(ENCODER)
    for name, value in changes.items():
        setattr(config, name, value)
    config.save_pretrained(folder)
    return folder


def test_an_encoder_of_another_size_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"head_extractor.weight has shape \(64, 64\).*hidden size 48"):
        _convert(tmp_path, CHECKPOINT, _encoder_folder(tmp_path, hidden_size=48, num_attention_heads=2))


def test_an_encoder_with_another_vocabulary_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="embedding matrix has 30522 rows.*vocabulary of 30000"):
        _convert(tmp_path, CHECKPOINT, _encoder_folder(tmp_path, vocab_size=30000))


def test_a_relation_count_that_is_not_the_datasets_is_refused(tmp_path):
    state = _release_state()
    state["bilinear.weight"] = state["bilinear.weight"][:50]
    state["bilinear.bias"] = state["bilinear.bias"][:50]
    with pytest.raises(CheckpointError, match="scores 50 labels.*has 97"):
        _convert(tmp_path, _save(tmp_path, state))


def test_a_non_empty_output_folder_is_kept(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an empty folder"):
        _convert(tmp_path, CHECKPOINT)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_the_command_line_reports_errors_in_one_line(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nothing.pt"), "--encoder", str(ENCODER),
                 "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nothing.pt" in err[0]


def test_spacy_component_gives_the_pipelines_relations(converted):
    spacy = pytest.importorskip("spacy", reason='the spaCy tests need the `spacy` extra: pip install -e ".[spacy]"')
    from transformers import pipeline

    from docre_training.pipeline import DocumentRelationExtractionPipeline

    text = "Marie Curie was born in Warsaw. She moved to Paris in 1891. Curie won the Nobel Prize in Paris."
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PER", "pattern": "Curie"},
                                               {"label": "LOC", "pattern": "Warsaw"},
                                               {"label": "LOC", "pattern": "Paris"},
                                               {"label": "MISC", "pattern": "Nobel Prize"}])
    nlp.add_pipe("pemscl_relations", config={"model": str(converted), "threshold": 0.3})
    doc = nlp(text)
    entities = {}
    for ent in doc.ents:
        entities.setdefault((ent.text.casefold(), ent.label_), []).append((ent.start_char, ent.end_char))
    extractor = pipeline("document-relation-extraction", model=str(converted),
                         pipeline_class=DocumentRelationExtractionPipeline)
    expected = extractor({"text": text, "entities": [{"mentions": spans, "type": label}
                                                      for (_, label), spans in entities.items()]}, threshold=0.3)
    assert expected  # the converted tiny model predicts something here
    got = {(r["head"][0].text, r["tail"][0].text, r["relation"]) for r in doc._.relations}
    assert got == {(r["head"]["name"], r["tail"]["name"], r["relation"]) for r in expected}
