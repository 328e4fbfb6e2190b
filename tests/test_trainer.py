"""DocRETrainer on a tiny random model and hand-made featurized documents: the two learning rates, the logged loss
terms, predictions against a per-document loop, evaluation with the official scorer and its error messages."""

import math
import random
from itertools import permutations

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import PredictionOutput

from data_collators import DataCollatorForDocRE
from docre_training.metrics import official_scores
from docre_training.trainer import (
    LOSS_TERMS,
    CheckpointHubPush,
    DocRETrainer,
    check_evidence_labels,
    documents_from_features,
)
from model_helpers import NUM_LABELS, make_batch, random_document, tiny_model
from train_helpers import read_json


def featurized_rows(seed=0, shapes=((30, 3), (45, 5), (22, 2), (38, 4), (26, 3))):
    """Rows as `featurize_dataset` writes them (input_ids, mention_positions, hts, labels, title, vertexSet)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index, (length, num_entities) in enumerate(shapes):
        ids, entities = random_document(generator, length, num_entities)
        hts = [list(pair) for pair in permutations(range(num_entities), 2)]
        labels = make_batch([(ids, entities)], generator=generator)["labels"].long().tolist()
        rows.append({
            "title": f"document {index}",
            "vertexSet": [[{"name": f"entity {index}.{e}.{m}", "sent_id": 0, "pos": [p, p + 1], "type": "MISC"}
                           for m, p in enumerate(mentions)] for e, mentions in enumerate(entities)],
            "input_ids": ids.tolist(),
            "mention_positions": entities,
            "hts": hts,
            "labels": labels,
        })
    return rows


@pytest.fixture
def dataset():
    return Dataset.from_list(featurized_rows())


def make_trainer(tmp_path, model=None, train_dataset=None, **kwargs):
    arguments = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True,
                     per_device_train_batch_size=2, per_device_eval_batch_size=2, learning_rate=2e-5,
                     weight_decay=0.01)
    arguments.update(kwargs.pop("arguments", {}))
    return DocRETrainer(
        model=model if model is not None else tiny_model(),
        args=TrainingArguments(**arguments),
        train_dataset=train_dataset,
        data_collator=DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS),
        **kwargs,
    )


# ------------------------------------------------------------------ training
def test_head_and_encoder_have_their_own_learning_rates(tmp_path):
    trainer = make_trainer(tmp_path, head_learning_rate=1e-3)
    optimizer = trainer.create_optimizer()
    model = trainer.model
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    assert len(group_of) == len(parameters) == sum(len(group["params"]) for group in optimizer.param_groups)
    head = set(model.head_parameter_names())
    assert head and {name.split(".")[0] for name in head} == {"head_extractor", "tail_extractor", "bilinear"}
    for name, parameter in parameters.items():
        group = group_of[id(parameter)]
        assert group["lr"] == (1e-3 if name in head else 2e-5), name
        decays = not (name.endswith("bias") or "LayerNorm" in name or "layernorm" in name.lower())
        assert group["weight_decay"] == (0.01 if decays else 0.0), name


def test_default_head_learning_rate_and_columns(tmp_path):
    arguments = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                  learning_rate=2e-5, remove_unused_columns=True, hub_strategy="checkpoint")
    trainer = DocRETrainer(model=tiny_model(), args=arguments,
                           data_collator=DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS))
    assert trainer.head_learning_rate == pytest.approx(5 * 2e-5)
    assert trainer.args.remove_unused_columns is False
    # The checkpoint pushes are the trainer's own (no pickles), run as the user asked.
    assert trainer.hub_strategy == "checkpoint" and trainer.args.hub_strategy == "end"
    assert any(isinstance(callback, CheckpointHubPush) for callback in trainer.callback_handler.callbacks)
    # The caller's arguments are left as given.
    assert arguments.remove_unused_columns is True and arguments.hub_strategy == "checkpoint"


def test_logged_loss_terms_are_means_since_the_last_log(tmp_path, dataset):
    trainer = make_trainer(tmp_path)
    model = trainer.model.train()
    collator = trainer.data_collator
    outputs = []
    for rows in (dataset.select(range(2)), dataset.select(range(2, 5))):
        batch = collator(list(rows))
        trainer.compute_loss(model, batch)
        outputs.append(model(**batch))
    logs = {"loss": 1.0}
    trainer.log(logs)
    used = [name for name in LOSS_TERMS if getattr(outputs[0], name) is not None]
    assert used == ["pmt_loss", "entropy_loss", "contrastive_loss"] and "evidence_loss" not in logs  # evidence off
    for name in used:
        expected = sum(float(getattr(output, name).detach()) for output in outputs) / 2
        assert logs[name] == pytest.approx(expected, abs=1e-4), name
    assert trainer.state.log_history[-1]["contrastive_loss"] == logs["contrastive_loss"]
    later = {"loss": 1.0}
    trainer.log(later)  # nothing accumulated since: no stale terms
    assert not set(LOSS_TERMS) & set(later)
    model.eval()
    trainer.compute_loss(model, collator(list(dataset.select(range(2)))))  # evaluation losses are not logged
    eval_logs = {"loss": 1.0}
    trainer.log(eval_logs)
    assert not set(LOSS_TERMS) & set(eval_logs)


def test_compute_loss_requires_labels(tmp_path, dataset):
    trainer = make_trainer(tmp_path)
    batch = trainer.data_collator(list(dataset.remove_columns("labels").select(range(2))))
    with pytest.raises(ValueError, match="labelled documents"):
        trainer.compute_loss(trainer.model, batch)


# ------------------------------------------------------------------ evaluation
def expected_predictions(model, rows):
    """Each document alone through the model and its decoder: the facts `predict` must return, in order."""
    collator = DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS)
    facts = []
    for row in rows:
        batch = collator([row])
        batch.pop("labels")
        with torch.no_grad():
            logits = model.eval()(**batch).logits
        predicted = model.decode(logits)
        for pair, label in predicted[:, 1:].nonzero().tolist():
            head, tail = row["hts"][pair]
            facts.append({"title": row["title"], "h_idx": head, "t_idx": tail,
                          "r": model.config.id2label[label + 1], "margin": float(logits[pair, label + 1] - logits[pair, 0])})
    return facts


def test_predictions_match_a_per_document_loop(tmp_path, dataset):
    trainer = make_trainer(tmp_path)
    output = trainer.predict(dataset, metric_key_prefix="test")
    assert isinstance(output, PredictionOutput) and output.label_ids is None
    predictions, metrics = output.predictions, output.metrics
    expected = expected_predictions(trainer.model, list(dataset))
    assert len(predictions) == len(expected) > 0
    for prediction, fact in zip(predictions, expected):
        assert set(prediction) == {"title", "h_idx", "t_idx", "r", "score", "margin"}
        assert [prediction[k] for k in ("title", "h_idx", "t_idx", "r")] == [fact[k] for k in ("title", "h_idx", "t_idx", "r")]
        assert prediction["margin"] == pytest.approx(fact["margin"], abs=1e-4)
        # One meaning of score everywhere (the pipeline's too): the sigmoid of the margin.
        assert prediction["score"] == pytest.approx(1 / (1 + math.exp(-fact["margin"])), abs=1e-5)
    assert read_json(tmp_path / "predictions_test.json") == predictions
    assert set(metrics) >= {"test_f1", "test_ign_f1", "test_precision", "test_recall"}
    assert metrics["test_num_predictions"] == len(predictions)
    assert {"test_runtime", "test_samples_per_second"} <= set(metrics)


def test_bce_margins_are_over_the_global_threshold(tmp_path, dataset):
    trainer = make_trainer(tmp_path, model=tiny_model(loss="bce"))
    output = trainer.predict(dataset.remove_columns("labels"))
    predictions = output.predictions
    assert not any(key.endswith("_f1") for key in output.metrics)  # nothing to score against
    expected = expected_predictions(trainer.model, list(dataset))
    assert predictions and len(predictions) == len(expected)
    logits = {}
    for row in dataset:
        batch = trainer.data_collator([row])
        batch.pop("labels")
        with torch.no_grad():
            logits[row["title"]] = trainer.model(**batch).logits
    for prediction in predictions:
        row = next(r for r in dataset if r["title"] == prediction["title"])
        pair = row["hts"].index([prediction["h_idx"], prediction["t_idx"]])
        label = trainer.model.config.label2id[prediction["r"]]
        assert prediction["margin"] == pytest.approx(float(logits[prediction["title"]][pair, label]), abs=1e-4)
        assert prediction["margin"] > 0 and prediction["score"] > 0.5


def test_evaluate_uses_the_official_scores(tmp_path, dataset):
    train, evaluation = dataset.select(range(3)), dataset.select(range(3, 5))
    trainer = make_trainer(tmp_path, train_dataset=train, eval_dataset=evaluation)
    metrics = trainer.evaluate()
    assert metrics.pop("epoch") == 0  # Trainer.log adds it
    # The Trainer's own evaluation loop ran: its runtime metrics sit next to the DocRED scores.
    assert metrics.pop("eval_runtime") > 0 and metrics.pop("eval_samples_per_second") > 0
    metrics.pop("eval_steps_per_second")
    metrics.pop("eval_model_preparation_time", None)  # the Trainer adds it when it first prepares the model
    predictions = read_json(tmp_path / "predictions_eval.json")
    id2label = trainer.model.config.id2label
    expected = official_scores(
        predictions,
        documents_from_features(list(evaluation), id2label),
        train_documents=documents_from_features(list(train), id2label),
        relation_vocabulary=[label for index, label in id2label.items() if index],
    )
    assert metrics == {f"eval_{key}": value for key, value in expected.items()}
    assert trainer.state.log_history[-1]["eval_f1"] == metrics["eval_f1"]


def test_an_all_na_evaluation_after_training_steps_warns(tmp_path, dataset, caplog):
    model = tiny_model()
    with torch.no_grad():
        model.bilinear.bias[1:] -= 1e4  # every relation far below the threshold: every pair NA
    trainer = make_trainer(tmp_path, model=model)

    def warnings():  # other loggers (transformers' own) may log into caplog too
        return [r.getMessage() for r in caplog.records if r.name == "docre_training.trainer"]

    with caplog.at_level("WARNING", logger="docre_training.trainer"):
        assert trainer.evaluate(dataset)["eval_num_predictions"] == 0
        assert not warnings()  # before training, all-NA is no news
        trainer.state.global_step = 7
        trainer.evaluate(dataset)
    pairs = sum(len(hts) for hts in dataset["hts"])
    assert warnings() == [
        f"eval after 7 training steps: the model predicts NA for every one of the {pairs} pairs. Early in "
        "training this is expected; if it lasts past the second epoch, see `relation_bias_init` (the NA "
        "prior, on by default) in PemsclConfig."]
    caplog.clear()
    with torch.no_grad():
        model.bilinear.bias[1:] += 2e4  # every relation predicted
    with caplog.at_level("WARNING", logger="docre_training.trainer"):
        assert trainer.evaluate(dataset)["eval_num_predictions"] > 0
    assert not warnings()


def test_user_metrics_are_merged(tmp_path, dataset):
    trainer = make_trainer(tmp_path, compute_metrics=lambda predictions: {"count": len(predictions)})
    metrics = trainer.evaluate(dataset, metric_key_prefix="dev")
    assert metrics["dev_count"] == metrics["dev_num_predictions"] and "dev_f1" in metrics


def test_a_dict_of_eval_datasets_evaluates_each(tmp_path, dataset):
    first, second = dataset.select(range(2)), dataset.select(range(2, 5))
    trainer = make_trainer(tmp_path, eval_dataset={"first": first, "second": second})
    metrics = trainer.evaluate()
    for name, part in (("first", first), ("second", second)):
        alone = make_trainer(tmp_path / name).evaluate(part, metric_key_prefix="alone")
        assert metrics[f"eval_{name}_f1"] == alone["alone_f1"]
        assert metrics[f"eval_{name}_num_gold"] == alone["alone_num_gold"]
        assert {p["title"] for p in read_json(tmp_path / f"predictions_eval_{name}.json")} <= set(part["title"])


def test_evaluation_callbacks_and_progress(tmp_path, dataset):
    events = []

    class Recorder(TrainerCallback):
        def on_prediction_step(self, args, state, control, **kwargs):
            events.append("step")

        def on_predict(self, args, state, control, metrics, **kwargs):
            events.append(("predict", round(metrics["test_f1"], 6)))

    trainer = make_trainer(tmp_path, callbacks=[Recorder()])
    output = trainer.predict(dataset, metric_key_prefix="test")
    assert events.count("step") == len(trainer.get_test_dataloader(dataset)) and events[-1] == ("predict", round(output.metrics["test_f1"], 6))


def test_evaluate_names_missing_columns(tmp_path, dataset):
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"\['title', 'vertexSet'\].*featurize_dataset"):
        trainer.evaluate(dataset.remove_columns(["title", "vertexSet"]))
    with pytest.raises(ValueError, match="eval_dataset"):
        trainer.evaluate()


def test_documents_from_features_rebuilds_the_labels():
    rows = [{"title": "d", "vertexSet": [[{"name": "a"}], [{"name": "b"}], [{"name": "c"}]],
             "hts": [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]],
             "labels": [[0, 1, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0]]}]
    documents = documents_from_features(rows, {0: "Na", 1: "P1", 2: "P2"})
    assert documents == [{"title": "d", "vertexSet": rows[0]["vertexSet"],
                          "labels": [{"h": 0, "t": 1, "r": "P1"}, {"h": 0, "t": 1, "r": "P2"}, {"h": 1, "t": 2, "r": "P2"}]}]
    assert documents_from_features([{**rows[0], "labels": None}], {0: "Na"})[0]["labels"] == []


def test_length_sorted_evaluation_returns_dataset_order(tmp_path, dataset):
    batches = []
    collator = DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS)

    def recording_collator(features):
        batches.append([len(feature["input_ids"]) for feature in features])
        return collator(features)

    plain = make_trainer(tmp_path / "plain", sort_eval_by_length=False).predict(dataset)
    trainer = make_trainer(tmp_path / "sorted")
    trainer.data_collator = recording_collator
    sorted_output = trainer.predict(dataset)
    lengths = [length for batch in batches for length in batch]
    assert lengths == sorted(lengths, reverse=True) and lengths != [len(ids) for ids in dataset["input_ids"]]
    assert sorted_output.predictions == plain.predictions  # same facts, same (dataset) order
    titles = [p["title"] for p in sorted_output.predictions]
    order = {title: row for row, title in enumerate(dataset["title"])}
    assert [order[t] for t in titles] == sorted(order[t] for t in titles)
    for key in ("test_f1", "test_ign_f1", "test_num_predictions"):
        assert sorted_output.metrics[key] == plain.metrics[key]


def test_length_grouped_training_batches_read_the_length_column(tmp_path):
    """train_sampling_strategy="group_by_length" (run_docre's default) batches documents of similar length from
    the `length` column: every document once per epoch, far less padding than uniform shuffling."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    # The sampler sorts "megabatches" of min(50, N // (4 * batch)) batches: 96 documents make 12-batch groups.
    lengths = torch.randint(20, 64, (96,), generator=torch.Generator().manual_seed(0)).tolist()
    rows = featurized_rows(shapes=[(length, 2) for length in lengths])
    dataset = Dataset.from_list([{**row, "length": len(row["input_ids"])} for row in rows])

    def epoch_batches(strategy):
        batches = []
        collator = DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS)

        def recording_collator(features):
            batches.append([feature["length"] for feature in features])
            return collator(features)

        trainer = make_trainer(tmp_path / strategy, train_dataset=dataset,
                               arguments={"train_sampling_strategy": strategy, "seed": 3})
        trainer.data_collator = recording_collator
        sampler = trainer._get_train_sampler()
        for _ in trainer.get_train_dataloader():
            pass
        return sampler, batches

    grouped_sampler, grouped = epoch_batches("group_by_length")
    random_sampler, shuffled = epoch_batches("random")
    assert isinstance(grouped_sampler, LengthGroupedSampler) and list(grouped_sampler.lengths) == lengths
    assert not isinstance(random_sampler, LengthGroupedSampler)
    for batches in (grouped, shuffled):
        assert sorted(length for batch in batches for length in batch) == sorted(lengths)
    padding = lambda batches: sum(max(batch) * len(batch) - sum(batch) for batch in batches)  # noqa: E731
    assert padding(grouped) < padding(shuffled) / 3, (grouped, shuffled)


# ------------------------------------------------------------------ evidence
def with_sentences(rows, seed=0, without_evidence=()):
    """The rows with four sentences each (random cuts of the tokens between the special tokens) and gold evidence:
    zero to two random sentences for every relation (none in the rows of `without_evidence`)."""
    generator = random.Random(seed)
    result = []
    for index, row in enumerate(rows):
        length = len(row["input_ids"])
        bounds = [1, *sorted(generator.sample(range(2, length - 1), 3)), length - 1]
        evidence = []
        for pair_row, label_row in enumerate(row["labels"]):
            for column, flag in enumerate(label_row):
                if flag and column and index not in without_evidence:  # the first relation has some, others maybe
                    count = generator.randint(0 if evidence else 1, 2)
                    evidence += [[pair_row, column, s] for s in sorted(generator.sample(range(4), count))]
        result.append({**row, "sentence_spans": [list(span) for span in zip(bounds, bounds[1:])],
                       "relation_evidence": evidence})
    return result


def test_logged_evidence_loss_is_the_mean_since_the_last_log(tmp_path):
    dataset = Dataset.from_list(with_sentences(featurized_rows()))
    trainer = make_trainer(tmp_path, model=tiny_model(evidence_weight=0.5), train_dataset=dataset)
    model = trainer.model.train()
    outputs = []
    for rows in (dataset.select(range(2)), dataset.select(range(2, 5))):
        batch = trainer.data_collator(list(rows))
        assert batch["evidence_labels"].sum() > 0
        trainer.compute_loss(model, batch)
        outputs.append(model(**batch))
    logs = {"loss": 1.0}
    trainer.log(logs)
    expected = sum(float(output.evidence_loss.detach()) for output in outputs) / 2
    assert logs["evidence_loss"] == pytest.approx(expected, abs=1e-4) and expected > 0
    for output in outputs:
        torch.testing.assert_close(output.loss, output.pmt_loss + output.entropy_loss + 0.3 * output.contrastive_loss
                                   + 0.5 * output.evidence_loss)


def test_predictions_carry_the_evidence_of_a_per_document_loop(tmp_path):
    rows = with_sentences(featurized_rows())
    model, collator = tiny_model(evidence_threshold=0.2), DataCollatorForDocRE(pad_token_id=0, num_labels=NUM_LABELS)
    expected = {}
    for row in rows:
        batch = collator([row])
        batch.pop("labels")
        with torch.no_grad():
            evidence = model(**batch).evidence
        for pair, (head, tail) in enumerate(row["hts"]):
            expected[row["title"], head, tail] = [s for s, share in enumerate(evidence[pair].tolist()) if share >= 0.2]
        # Gold evidence: the model's own evidence of the pair and one sentence more, so that the evidence scores of
        # the few correct facts are neither 0 nor 100.
        row["relation_evidence"] = []
        for pair, label_row in enumerate(row["labels"]):
            own = expected[(row["title"], *row["hts"][pair])]
            more = [s for s in range(4) if s not in own][:1]
            row["relation_evidence"] += [[pair, column, s] for column, flag in enumerate(label_row) if flag and column
                                         for s in sorted(own + more)]
    trainer = make_trainer(tmp_path, model=model)
    output = trainer.predict(Dataset.from_list(rows), metric_key_prefix="test")  # 3 batches of 1 to 2 documents
    predictions = output.predictions
    assert predictions and all(set(p) == {"title", "h_idx", "t_idx", "r", "score", "margin", "evidence"}
                               for p in predictions)
    for prediction in predictions:
        assert prediction["evidence"] == expected[prediction["title"], prediction["h_idx"], prediction["t_idx"]]
    assert {len(p["evidence"]) for p in predictions} >= {1, 2}
    # Scored against the gold evidence rebuilt from the rows, label by label.
    gold = documents_from_features(rows, model.config.id2label)
    for row, document in zip(rows, gold):
        for label in document["labels"]:
            pair = row["hts"].index([label["h"], label["t"]])
            column = model.config.label2id[label["r"]]
            assert label["evidence"] == sorted(s for p, c, s in row["relation_evidence"] if (p, c) == (pair, column))
    scores = official_scores(predictions, gold, relation_vocabulary=[r for i, r in model.config.id2label.items() if i])
    assert 0 < scores["evi_p"] < 100 and 0 < scores["evi_r"] < 100
    for key in ("evi_p", "evi_r", "evi_f1"):
        assert output.metrics[f"test_{key}"] == scores[key]


def test_evidence_weight_needs_training_documents_with_evidence(tmp_path, caplog):
    rows = featurized_rows()
    model = tiny_model(evidence_weight=0.5)
    with pytest.raises(ValueError, match=r"evidence_weight > 0 needs evidence labels, but the training set has no "
                                         r"`relation_evidence` column: featurize it with data_collators.featurize_dataset"):
        make_trainer(tmp_path, model=model, train_dataset=Dataset.from_list(rows))
    none = Dataset.from_list(with_sentences(rows, without_evidence=range(5)))
    with pytest.raises(ValueError, match=r"none of the 5 training documents has a label with `evidence` sentences: "
                                         r"give the labels their `evidence` .*, or train with evidence_weight 0"):
        make_trainer(tmp_path, model=model, train_dataset=none)
    some = Dataset.from_list(with_sentences(rows, without_evidence=(1, 3)))
    with caplog.at_level("INFO", logger="docre_training.trainer"):
        make_trainer(tmp_path, model=model, train_dataset=some)
    assert "2 of 5 training documents have no evidence labels: the evidence term skips them" in caplog.text
    make_trainer(tmp_path, model=tiny_model(), train_dataset=none)  # evidence off: nothing to check
    check_evidence_labels(some.to_iterable_dataset())  # an iterable dataset cannot be counted ahead: accepted
