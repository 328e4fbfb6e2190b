"""Hub publishing: a tiny `run_docre.py` run with `--push_to_hub --hub_dry_run` writes exactly the Hub folder (and
contacts nothing), its README.md is a valid model card with the run's scores, the folder loads as remote code (model
and pipeline) where this project is not importable, and a push through the Trainer (recorded, not sent) creates the
repository, pushes checkpoints as `--hub_strategy` says and ends with the same files as the dry run."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, Trainer

import run_docre
from data_collators import DataCollatorForDocRE, featurize_document
from data_helpers import DOCRED_TEST, REDOCRED_DEV, minilm_tokenizer
from docre_training import hub
from model_cards import generate_model_card
from remote_code_helpers import PROJECT_PACKAGES, run_without_the_project


MODEL_ID = "org/pemscl-tiny"
HUB_FILES = {"README.md", "config.json", "model.safetensors", "configuration_pemscl.py", "modeling_pemscl.py",
             "losses.py", "pipeline_pemscl.py", "processing_pemscl.py", "tokenizer.json", "tokenizer_config.json",
             # the run's metrics and log history, as a Trainer push uploads them
             "all_results.json", "train_results.json", "eval_results.json", "predict_results.json", "trainer_state.json"}


def _forbidden(*args, **kwargs):
    raise AssertionError("the Hub was contacted")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny run (`_tiny_run_arguments`) with `--push_to_hub --hub_model_id org/pemscl-tiny --hub_dry_run DIR`."""
    root = tmp_path_factory.mktemp("run")
    argv, labelled = _tiny_run_arguments(root)
    argv += ["--save_strategy", "no", "--push_to_hub", "--hub_dry_run", str(root / "hub")]
    with pytest.MonkeyPatch.context() as patch:
        for method in ("create_repo", "upload_folder", "create_commit"):
            patch.setattr(HfApi, method, _forbidden)
        patch.setattr(Trainer, "init_hf_repo", _forbidden)
        results = run_docre.main(argv)
    return SimpleNamespace(root=root, out=root / "out", hub=root / "hub", results=results, documents=labelled)


def test_dry_run_writes_exactly_the_hub_folder(tiny_run):
    assert set(os.listdir(tiny_run.hub)) == HUB_FILES
    config = json.loads((tiny_run.hub / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_pemscl.PemsclConfig",
                                  "AutoModel": "modeling_pemscl.PemsclModel"}
    assert len(config["id2label"]) == 97 and config["relation_names"]["P17"] == "country"
    # The unlabeled test split: predictions written, no test metrics.
    assert (tiny_run.out / "predictions_test.json").is_file()
    all_results = json.loads((tiny_run.out / "all_results.json").read_text())
    assert "eval_f1" in all_results and not any(key.startswith("test_") and key.endswith("f1") for key in all_results)
    assert "test_runtime" in all_results  # the prediction still went through the Trainer's loop


def test_model_card_metadata(tiny_run):
    card = ModelCard.load(tiny_run.hub / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert {"pemscl", "document-level-relation-extraction", "relation-extraction"} <= set(data["tags"])
    assert data["datasets"] == ["tonytan48/Re-DocRED"]
    (index,) = data["model-index"]
    assert index["name"] == MODEL_ID
    (result,) = index["results"]
    assert result["task"]["type"] == "document-relation-extraction"
    assert result["dataset"]["split"] == "validation"
    metrics = {metric["type"]: metric["value"] for metric in result["metrics"]}
    all_results = json.loads((tiny_run.out / "all_results.json").read_text())
    assert metrics["f1"] == round(all_results["eval_f1"], 2) == round(tiny_run.results["eval_f1"], 2)
    assert metrics["ign_f1"] == round(all_results["eval_ign_f1"], 2)
    text = card.text
    assert f'pipeline("document-relation-extraction", model="{MODEL_ID}", trust_remote_code=True)' in text
    assert "25% of the training triples were removed" in text  # --label_drop_rate 0.25
    assert "Guo, Jia and Kok, Stanley and Bing, Lidong" in text
    # The settings the paper and its code differ in are on the card as this run used them.
    assert "| contrastive_anchors | `all` |" in text and "| relation_bias_init | 0.0 |" in text


def test_folder_loads_without_the_project(tiny_run, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_run.hub)
    run_model = AutoModel.from_pretrained(tiny_run.out).eval()  # the run's own saved model
    features = featurize_document(tiny_run.documents[4], tokenizer, run_model.config.label2id)
    batch = DataCollatorForDocRE(tokenizer=tokenizer)([features])
    with torch.no_grad():
        expected = run_model(**batch).logits
    save_file({**batch, "expected": expected}, tmp_path / "batch.safetensors")
    text_ids = tokenizer("Paris is the capital of France .")["input_ids"]
    result = run_without_the_project(
        f"""
        for name in {PROJECT_PACKAGES!r}:
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit(name + " was importable")
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer
        folder = {str(tiny_run.hub)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer("Paris is the capital of France .")["input_ids"] == {text_ids!r}
        batch = load_file({str(tmp_path / "batch.safetensors")!r})
        expected = batch.pop("expected")
        with torch.no_grad():
            logits = model(**batch).logits
        torch.testing.assert_close(logits, expected, rtol=0, atol=0)
        print("REMOTE-OK")
        """,
        tmp_path,
    )
    assert "REMOTE-OK" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]


def _tiny_run_arguments(root, tokenizer=None):
    """Flags of a 3-step run on 4 Re-DocRED documents (tiny random BERT, MiniLM tokenizer), evaluated on 2,
    predicting 2 unlabeled DocRED documents."""
    tokenizer = tokenizer or minilm_tokenizer()
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64), add_pooling_layer=False)
    encoder.save_pretrained(root / "encoder")
    tokenizer.save_pretrained(root / "encoder")
    data = root / "data"
    data.mkdir()
    with open(REDOCRED_DEV) as f:
        labelled = json.load(f)[:6]
    with open(DOCRED_TEST) as f:
        unlabeled = json.load(f)[:2]
    for name, documents in (("train.json", labelled[:4]), ("dev.json", labelled[4:]), ("test.json", unlabeled)):
        (data / name).write_text(json.dumps(documents))
    argv = [
        "--model_name_or_path", str(root / "encoder"), "--output_dir", str(root / "out"),
        "--train_file", str(data / "train.json"), "--validation_file", str(data / "dev.json"),
        "--test_file", str(data / "test.json"), "--do_train", "--do_eval", "--do_predict",
        "--max_steps", "3", "--per_device_train_batch_size", "2", "--pair_embedding_size", "32",
        "--bilinear_block_size", "8", "--eval_strategy", "no", "--report_to", "none",
        # No NA prior: 3 steps then still predict facts, which the pipeline tests compare.
        "--relation_bias_init", "0",
        "--use_cpu", "--seed", "0", "--label_drop_rate", "0.25", "--hub_model_id", MODEL_ID,
    ]
    return argv, labelled


class RecordingHub:
    """Stands in for the Hub API: records each repository creation and each upload as the Hub would receive it
    (the files left after the upload's ignore patterns, and the card and config read at the time of the call)."""

    def __init__(self):
        self.repos, self.uploads = [], []

    def create_repo(self, api, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.repos.append((repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, api, *, repo_id, folder_path, path_in_repo=None, commit_message=None, token=None,
                      run_as_future=False, ignore_patterns=None, revision=None, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        folder = os.fspath(folder_path)
        everything = sorted(os.path.relpath(os.path.join(top, name), folder).replace(os.sep, "/")
                            for top, _, names in os.walk(folder) for name in names)
        files = list(filter_repo_objects(everything, ignore_patterns=ignore_patterns))
        read = lambda name: (open(os.path.join(folder, name), encoding="utf-8").read()  # noqa: E731
                             if name in files else None)
        self.uploads.append(SimpleNamespace(repo_id=repo_id, path_in_repo=path_in_repo, message=commit_message,
                                            files=files, card=read("README.md"), config=read("config.json"),
                                            background=run_as_future, token=token))
        result = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{len(self.uploads)}")
        if run_as_future:
            from concurrent.futures import Future

            future = Future()
            future.set_result(result)
            return future
        return result


def test_push_goes_through_the_trainer_with_checkpoints_and_our_card(tiny_run, tmp_path, monkeypatch):
    """`--push_to_hub --hub_strategy checkpoint`: the repository is created at the start, each checkpoint save
    pushes the Hub folder in the background and the checkpoint to `last-checkpoint/`, the end of the run pushes
    the final folder with the card's scores; the root never gets a pickle, and its files are exactly the dry run's."""
    argv, _ = _tiny_run_arguments(tmp_path)
    recorder = RecordingHub()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **k: recorder.create_repo(api, *a, **k))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **k: recorder.upload_folder(api, **k))
    monkeypatch.setattr(HfApi, "create_commit", _forbidden)
    run_docre.main(argv + ["--push_to_hub", "--hub_strategy", "checkpoint", "--save_strategy", "steps",
                           "--save_steps", "2", "--hub_token", "secret", "--hub_private_repo", "true"])
    assert recorder.repos == [(MODEL_ID, True, True)]
    assert [(u.message, u.path_in_repo, u.background) for u in recorder.uploads] == [
        ("Training in progress, step 2", None, True), ("Training in progress, step 2, checkpoint", "last-checkpoint", True),
        ("Training in progress, step 3", None, True), ("Training in progress, step 3, checkpoint", "last-checkpoint", True),
        ("End of training", None, False),
    ]
    assert {u.repo_id for u in recorder.uploads} == {MODEL_ID} and {u.token for u in recorder.uploads} == {"secret"}
    roots = [u for u in recorder.uploads if u.path_in_repo is None]
    for upload in roots:
        assert {"config.json", "model.safetensors", "README.md", "pipeline_pemscl.py", "processing_pemscl.py",
                "modeling_pemscl.py", "losses.py", "configuration_pemscl.py", "tokenizer.json"} <= set(upload.files)
        assert not [name for name in upload.files if name.endswith((".bin", ".pt", ".pth")) or "checkpoint" in name
                    or name.startswith("predictions_")], upload.files
        assert "document-relation-extraction" in json.loads(upload.config)["custom_pipelines"]
        assert ModelCard(upload.card).data.to_dict()["library_name"] == "transformers"
    # The checkpoint push carries what resuming needs.
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= set(recorder.uploads[1].files)
    # Scores appear on the card only at the end, when they exist.
    assert "model-index" not in ModelCard(roots[0].card).data.to_dict()
    (index,) = ModelCard(roots[-1].card).data.to_dict()["model-index"]
    assert index["name"] == MODEL_ID and index["results"][0]["dataset"]["split"] == "validation"
    assert f'model="{MODEL_ID}", trust_remote_code=True' in roots[-1].card
    # What the dry run writes is what the push uploads.
    assert roots[-1].files == sorted(os.listdir(tiny_run.hub))


def test_card_reports_noisy_label_regimes_and_test_scores(tmp_path):
    (tmp_path / "all_results.json").write_text(json.dumps(
        {"eval_f1": 61.234, "eval_ign_f1": 59.5, "test_f1": 60.1, "test_ign_f1": 58.04, "test_head_f1": 70.0}))
    card = ModelCard(generate_model_card(
        tmp_path, "org/pemscl-roberta",
        training_args={"learning_rate": 3e-5, "num_train_epochs": 8, "max_steps": -1, "seed": 66},
        data_args={"dataset": "docred", "train_file": "/d/train_annotated.json", "validation_file": "/d/dev.json",
                   "test_file": "/d/test_labelled.json", "label_drop_rate": 0.5, "label_drop_seed": 3,
                   "train_labels_file": "/d/oog_labels.json"},
        model_args={"model_name_or_path": "FacebookAI/roberta-large", "head_learning_rate": 1e-4},
        model_config={"negative_sample_ratio": 0.1, "id2label": {str(i): f"P{i}" for i in range(97)},
                      "loss": "pemscl"},
    ))
    data = card.data.to_dict()
    assert data["base_model"] == "FacebookAI/roberta-large" and data["datasets"] == ["thunlp/docred"]
    splits = {result["dataset"]["split"]: {m["type"]: m["value"] for m in result["metrics"]}
              for result in data["model-index"][0]["results"]}
    assert splits == {"validation": {"f1": 61.23, "ign_f1": 59.5},
                      "test": {"f1": 60.1, "ign_f1": 58.04, "head_f1": 70.0}}
    for phrase in ("`oog_labels.json`", "50% of the training triples were removed at random (seed 3)",
                   "kept 10% of its negative", "| num_train_epochs | 8 |", "| learning rate (head) | 0.0001 |"):
        assert phrase in card.text, phrase
    empty = ModelCard(generate_model_card(tmp_path / "missing", "org/x"))
    assert "model-index" not in empty.data.to_dict() and "No evaluation results" in empty.text


def test_dry_run_folder_must_be_empty(tmp_path):
    hub.check_dry_run_dir(tmp_path / "new")
    hub.check_dry_run_dir(tmp_path)
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        hub.check_dry_run_dir(tmp_path)


def test_pipeline_from_the_hub_folder_with_remote_code_alone(tiny_run, tmp_path):
    """`pipeline("document-relation-extraction", model=folder, trust_remote_code=True)` in a Python where
    nothing of this project can be imported gives the relations this project's own pipeline gives."""
    import docre_training.pipeline  # noqa: F401  (registers the task here)
    from transformers import pipeline

    config = json.loads((tiny_run.hub / "config.json").read_text())
    assert config["custom_pipelines"]["document-relation-extraction"]["impl"] == "pipeline_pemscl.DocumentRelationExtractionPipeline"
    text_document = {"text": "Paris is the capital of France . Marie Curie lived in Paris .",
                     "entities": [[(0, 5), (54, 59)], [(24, 30)], [(33, 44)]]}
    docred_document = {key: tiny_run.documents[4][key] for key in ("title", "sents", "vertexSet")}
    from docre_training.pipeline import DocumentRelationExtractionPipeline

    # The pushed output folder is the Hub folder: its custom_pipelines entry asks for trust_remote_code, unless the
    # pipeline class is given, here this project's own.
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("document-relation-extraction", model=str(tiny_run.out))
    local = pipeline("document-relation-extraction", model=str(tiny_run.out),
                     pipeline_class=DocumentRelationExtractionPipeline)([text_document, docred_document])
    (tmp_path / "inputs.json").write_text(json.dumps([text_document, docred_document]))
    result = run_without_the_project(
        f"""
        import json
        from transformers import pipeline
        extractor = pipeline("document-relation-extraction", model={str(tiny_run.hub)!r}, trust_remote_code=True)
        assert type(extractor).__module__.startswith("transformers_modules"), type(extractor).__module__
        documents = json.load(open({str(tmp_path / "inputs.json")!r}))
        print("REMOTE-PIPELINE " + json.dumps(extractor(documents)))
        """,
        tmp_path,
    )
    line = next((l for l in result.stdout.splitlines() if l.startswith("REMOTE-PIPELINE ")), None)
    assert line is not None, result.stdout[-2000:] + result.stderr[-3000:]
    remote = json.loads(line[len("REMOTE-PIPELINE "):])
    assert len(remote) == 2 and any(remote)
    for got, expected in zip(remote, local):
        assert [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in got] == \
            [(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in expected]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in expected], abs=1e-6)


def test_card_snippets_run_with_transformers_alone(tiny_run, tmp_path):
    """Every Python block of the pushed card runs as written (the repository id replaced by the dry-run folder) in
    a Python where nothing of this project can be imported."""
    import re

    card = (tiny_run.hub / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) >= 2 and all(f'"{MODEL_ID}"' in block for block in blocks)
    code = "\n".join(blocks).replace(f'"{MODEL_ID}"', repr(str(tiny_run.hub)))
    result = run_without_the_project(f"{code}\nprint('SNIPPETS-OK', type(extractor).__module__)\n", tmp_path)
    assert "SNIPPETS-OK transformers_modules" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]


def test_card_says_what_the_score_is_for_the_models_loss_and_limit(tmp_path):
    """The card's `score` sentence follows the loss (bce has a global threshold) and the per-pair limit (0 = none)."""
    def card_text(config):
        return " ".join(generate_model_card(tmp_path, "org/x", model_config=config).split())

    threshold = card_text({"loss": "pemscl", "max_relations_per_pair": 4})
    assert "sigmoid(f_r - f_NA)" in threshold and "at most 4 per entity pair" in threshold
    bce = card_text({"loss": "bce", "max_relations_per_pair": 0})
    assert "sigmoid(f_r)," in bce and "f_NA" not in bce.split("`score`")[1].split(".")[0]
    assert "no limit per entity pair" in bce and "at most 0" not in bce


def test_save_pretrained_writes_the_card_with_the_hubs_metadata(tmp_path):
    """The card lives with the model: every save_pretrained renders it (not only the Trainer), with library_name,
    pipeline_tag, a widget example and, once the folder holds results, a model-index the Hub can read."""
    from model_helpers import tiny_model

    model = tiny_model()
    model.model_card_data.update(model_id="org/tiny-pemscl", data_args={"dataset": "re-docred"})
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.widget[0]["text"] and "org/tiny-pemscl" in card.text and card.data.eval_results is None
    (folder / "all_results.json").write_text(json.dumps({"test_f1": 51.25, "test_ign_f1": 50.5}))
    model.save_pretrained(folder)
    scores = {(result.dataset_split, result.metric_type): result.metric_value
              for result in ModelCard.load(folder / "README.md").data.eval_results}
    assert scores == {("test", "f1"): 51.25, ("test", "ign_f1"): 50.5}
