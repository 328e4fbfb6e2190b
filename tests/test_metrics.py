"""Tests of `docre_training.metrics` and the `evaluate` module `metrics/docred`, against hand-computed scores."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import docre_training.metrics
from docre_training.metrics import (
    TRAIN_REFERENCE_FILE,
    load_train_documents,
    official_scores,
    reference_documents,
    relation_frequency_groups,
    train_facts,
)


REPO = Path(__file__).resolve().parents[1]
GOLD_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "redocred_test_sample.json"


def entities(*names_per_entity):
    """A `vertexSet` whose entity i has one mention per name in `names_per_entity[i]`."""
    return [
        [{"name": name, "sent_id": 0, "pos": [0, 1], "type": "MISC"} for name in names] for names in names_per_entity
    ]


def label(h, t, r, evidence=()):
    return {"h": h, "t": t, "r": r, "evidence": list(evidence)}


def fact(title, h, t, r, **extra):
    return {"title": title, "h_idx": h, "t_idx": t, "r": r, **extra}


# Paris (mentioned twice, the second time as "City of Light"), France, Seine.
GOLD = [
    {
        "title": "Doc1",
        "sents": [["Paris", "is", "in", "France", "."]],
        "vertexSet": entities(["Paris", "City of Light"], ["France"], ["Seine"]),
        # (0, 1, P17) is labeled twice: one gold fact.
        "labels": [label(0, 1, "P17", [0]), label(2, 1, "P17"), label(0, 2, "P206"), label(0, 1, "P17", [0])],
    },
    {"title": "Doc2", "vertexSet": entities(["Alice"], ["Bob"]), "labels": [label(0, 1, "P26")]},
    {"title": "Doc3", "vertexSet": entities(["X"], ["Y"]), "labels": []},
]
# 4 gold facts: (Doc1, 0, 1, P17), (Doc1, 2, 1, P17), (Doc1, 0, 2, P206), (Doc2, 0, 1, P26).

TRAIN = [
    {
        "title": "Train1",
        "vertexSet": entities(["City of Light"], ["France"], ["Paris"], ["Seine"]),
        # ("City of Light", "France", P17) makes (Doc1, 0, 1, P17) in train through Paris' second mention name;
        # ("Paris", "Seine", P17) has another relation than the prediction (Doc1, 0, 2, P206), which stays out of train.
        "labels": [label(0, 1, "P17"), label(2, 3, "P17")],
    }
]

PREDICTIONS = [
    fact("Doc1", 0, 1, "P17", score=3.0),  # correct, in train
    fact("Doc1", 0, 1, "P17", score=1.0),  # duplicate: dropped
    fact("Doc1", 0, 2, "P206"),  # correct, not in train
    fact("Doc1", 1, 0, "P17"),  # wrong direction
    fact("Doc2", 0, 1, "P26"),  # correct, not in train
    fact("Unknown", 0, 1, "P17"),  # title not in gold: wrong, still counted
    fact("Doc3", 0, 1, "P1"),  # document without gold relations: wrong
]


def test_precision_recall_f1_and_ign_f1():
    scores = official_scores(PREDICTIONS, GOLD, TRAIN)
    # 6 predictions after de-duplication, 4 gold facts, 3 correct of which 1 in train.
    assert (scores["num_predictions"], scores["num_gold"], scores["num_correct"]) == (6, 4, 3)
    assert scores["num_correct_in_train"] == 1
    assert scores["precision"] == pytest.approx(100 * 3 / 6)
    assert scores["recall"] == pytest.approx(100 * 3 / 4)
    # f1 = 2 (1/2)(3/4) / (1/2 + 3/4) = 3/5
    assert scores["f1"] == pytest.approx(100 * 3 / 5)
    # ign_p = (3 - 1) / (6 - 1) = 2/5; ign_f1 = 2 (2/5)(3/4) / (2/5 + 3/4) = (3/5) / (23/20) = 12/23
    assert scores["ign_precision"] == pytest.approx(100 * 2 / 5)
    assert scores["ign_f1"] == pytest.approx(100 * 12 / 23)
    assert "evi_f1" not in scores


def test_train_facts_use_every_mention_name_pair():
    assert train_facts(TRAIN) == {("City of Light", "France", "P17"), ("Paris", "Seine", "P17")}
    two_names = [{"title": "T", "vertexSet": entities(["A", "B"], ["C"]), "labels": [label(0, 1, "P1")]}]
    assert train_facts(two_names) == {("A", "C", "P1"), ("B", "C", "P1")}


def test_without_train_documents_ign_equals_plain():
    scores = official_scores(PREDICTIONS, GOLD)
    assert scores["ign_precision"] == scores["precision"] and scores["ign_f1"] == scores["f1"]
    assert scores["num_correct_in_train"] == 0
    assert "head_f1" not in scores


def test_empty_submission_and_documents_without_relations_give_zeros():
    for predictions, gold in [([], GOLD), ([], [GOLD[2]]), ([], []), ([fact("Doc3", 0, 1, "P1")], [GOLD[2]])]:
        scores = official_scores(predictions, gold, TRAIN)
        rates = {key: value for key, value in scores.items() if not key.startswith("num_")}
        assert set(rates.values()) == {0.0}, (predictions, gold)
    assert official_scores([fact("Doc3", 0, 1, "P1")], [GOLD[2]])["num_predictions"] == 1


def test_evidence_scores():
    gold = [{"title": "E", "vertexSet": entities(["A"], ["B"], ["C"]),
             "labels": [label(0, 1, "P17", [0, 1]), label(0, 2, "P131", [2])]}]  # 3 gold evidence sentences
    predictions = [
        fact("E", 0, 1, "P17", evidence=[1, 3]),  # correct, 1 of its 2 evidence sentences is gold
        fact("E", 0, 2, "P150", evidence=[0]),  # wrong: its evidence counts as predicted only
        fact("Other", 0, 1, "P17", evidence=[5]),  # title not in gold: its evidence is not counted
    ]
    scores = official_scores(predictions, gold)
    # precision = 1 / (2 + 1), recall = 1 / 3, f1 = 1/3
    assert scores["evi_p"] == pytest.approx(100 / 3)
    assert scores["evi_r"] == pytest.approx(100 / 3)
    assert scores["evi_f1"] == pytest.approx(100 / 3)


def test_builder_row_shapes_score_like_docred_json():
    rows = []
    for document in GOLD:
        rows.append({
            "title": document["title"],
            # entities as dicts of lists, labels as a dict of lists keyed head / tail / relation_id
            "vertexSet": [{"name": [m["name"] for m in entity]} for entity in document["vertexSet"]],
            "labels": {
                "head": [x["h"] for x in document["labels"]],
                "tail": [x["t"] for x in document["labels"]],
                "relation_id": [x["r"] for x in document["labels"]],
                "evidence": [x["evidence"] for x in document["labels"]],
            },
        })
    train_rows = [{**TRAIN[0], "labels": [{"head": x["h"], "tail": x["t"], "relation_id": x["r"]}
                                          for x in TRAIN[0]["labels"]]}]
    assert official_scores(PREDICTIONS, rows, train_rows) == official_scores(PREDICTIONS, GOLD, TRAIN)


def official_script_f1(predictions, gold_documents):
    """F1 as the official DocRED script counts it, written as a plain loop: sort the submission, keep the first of
    each run of equal (title, h_idx, t_idx, r), and count a kept prediction correct when its fact is labeled;
    every kept prediction, whatever it names, is in the precision denominator."""
    labeled = set()
    for document in gold_documents:
        for x in document["labels"]:
            labeled.add((document["title"], x["h"], x["t"], x["r"]))
    def key(prediction):
        return prediction["title"], prediction["h_idx"], prediction["t_idx"], prediction["r"]

    ordered = sorted(predictions, key=key)
    kept = [p for i, p in enumerate(ordered) if i == 0 or key(p) != key(ordered[i - 1])]
    correct = sum(key(p) in labeled for p in kept)
    precision, recall = correct / len(kept), correct / len(labeled)
    return 100 * 2 * precision * recall / (precision + recall) if correct else 0.0


def test_malformed_prediction_names_the_entry_and_the_missing_key():
    with pytest.raises(ValueError, match=r"^predictions, entry 1 \(title 'Doc1'\): no 'r'"):
        official_scores([fact("Doc1", 0, 1, "P17"), {"title": "Doc1", "h_idx": 0, "t_idx": 1}], GOLD)


@pytest.mark.parametrize("submission, message", [
    ({"Doc1": [fact("Doc1", 0, 1, "P17")]}, r"pred\.json: expected a JSON list of predictions .* got an object with "
                                            r"the keys \['Doc1'\]"),
    (["Doc1"], r"pred\.json, entry 0: expected an object .* got str 'Doc1'"),
    ([fact("Doc1", "0", 1, "P17")], r"pred\.json, entry 0 \(title 'Doc1'\): h_idx '0' is of type str, not int"),
    ([fact("Doc1", 0, True, "P17")], r"entry 0 \(title 'Doc1'\): t_idx True is of type bool, not int"),
    ([fact(7, 0, 1, "P17")], r"entry 0 \(title 7\): title 7 is of type int, not str"),
    ([fact("Doc1", 0, 1, "P17", evidence="0")], r"entry 0 \(title 'Doc1'\): evidence '0' is not a list"),
])
def test_a_submission_of_the_wrong_shape_is_refused_in_one_line(submission, message):
    with pytest.raises(ValueError, match=message) as error:
        official_scores(submission, GOLD, predictions_source="pred.json")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("entry, message", [
    (fact("Doc1", 999, 1, "P17"), r"entry 1 \(title 'Doc1'\): h_idx 999 is not an entity of that gold document, "
                                  r"which has 3 \(0 to 2\)"),
    (fact("Doc2", 0, -1, "P26"), r"entry 1 \(title 'Doc2'\): t_idx -1 is not an entity .* which has 2"),
    (fact("Doc2", 0, 2, "P26"), r"entry 1 \(title 'Doc2'\): t_idx 2 is not an entity .* which has 2 \(0 to 1\)"),
    (fact("Doc1", 0, 1, "Na"), r"entry 1 \(title 'Doc1'\): r 'Na' is the no-relation label"),
])
def test_entries_naming_what_does_not_exist_are_refused(entry, message):
    """The official script would count these as false positives; here they stop the scoring with the entry named."""
    with pytest.raises(ValueError, match=message):
        official_scores([fact("Doc1", 0, 1, "P17"), entry], GOLD)


def test_an_unknown_relation_is_refused_given_the_vocabulary_and_a_false_positive_without(caplog):
    predictions = [fact("Doc1", 0, 1, "P17"), fact("Doc1", 0, 2, "P99999")]
    with pytest.raises(ValueError, match=r"entry 1 \(title 'Doc1'\): r 'P99999' is neither in the relation "
                                         r"vocabulary nor labeled .* \(4 known relations, e.g. P1, P17, P206, P26\)"):
        official_scores(predictions, GOLD, relation_vocabulary={"P17": "country", "P1": "named after", "Na": "none"})
    # A gold relation missing from the vocabulary file is known all the same: its correct prediction counts.
    assert official_scores([fact("Doc1", 0, 2, "P206")], GOLD, relation_vocabulary=["P17"])["num_correct"] == 1

    scores = official_scores(predictions, GOLD)
    # 1 correct of 2 predicted, 1 of 4 gold: P = 1/2, R = 1/4, F1 = 2 (1/8) / (3/4) = 1/3
    assert scores["f1"] == pytest.approx(100 / 3) == official_script_f1(predictions, GOLD)
    assert "1 predictions use relations that no gold or training document labels (P99999)" in caplog.text


def test_self_pairs_count_as_false_positives_with_a_warning(caplog):
    predictions = [fact("Doc1", 0, 1, "P17"), fact("Doc1", 2, 2, "P17"), fact("Doc2", 1, 1, "P26")]
    scores = official_scores(predictions, GOLD)
    # 1 correct of 3 predicted, 1 of 4 gold: P = 1/3, R = 1/4, F1 = 2 (1/12) / (7/12) = 2/7
    assert scores["f1"] == pytest.approx(100 * 2 / 7) == official_script_f1(predictions, GOLD)
    assert ("2 predictions relate an entity to itself (h_idx == t_idx: entry 1 ('Doc1', 2, 2, 'P17'), "
            "entry 2 ('Doc2', 1, 1, 'P26'))") in caplog.text


def test_titles_outside_the_gold_documents_are_false_positives_named_in_a_warning(caplog):
    predictions = [fact("Doc1", 0, 1, "P17")] + [fact(f"Other {k}", 0, 1, "P17") for k in range(7)]
    scores = official_scores(predictions, GOLD, predictions_source="pred.json")
    # 1 correct of 8 predicted, 1 of 4 gold: P = 1/8, R = 1/4, F1 = 2 (1/32) / (3/8) = 1/6
    assert scores["f1"] == pytest.approx(100 / 6) == official_script_f1(predictions, GOLD)
    assert ("pred.json: 7 predictions on 7 titles that are not gold documents ('Other 0', 'Other 1', 'Other 2', "
            "'Other 3', 'Other 4', ...) count as false positives") in caplog.text


def test_a_submission_on_no_gold_title_is_refused():
    predictions = [fact(f"Other {k}", 0, 1, "P17") for k in range(7)] + [fact("Other 0", 0, 1, "P26")]
    with pytest.raises(ValueError, match=r"^pred\.json: none of its 7 titles is a gold document \('Other 0', "
                                         r"'Other 1', 'Other 2', 'Other 3', 'Other 4', \.\.\.; the gold documents "
                                         r"have 3 titles\)"):
        official_scores(predictions, GOLD, predictions_source="pred.json")
    with pytest.raises(ValueError, match="none of its 1 titles"):
        official_scores([fact("Doc1", 0, 1, "P17")], [])


def test_repeated_predictions_count_once_keeping_the_first_evidence(caplog):
    caplog.set_level("INFO", logger="docre_training.metrics")
    predictions = [fact("Doc1", 0, 1, "P17", evidence=[0]), fact("Doc1", 1, 0, "P17"),
                   fact("Doc1", 0, 1, "P17", evidence=[0, 1, 2]), fact("Doc1", 0, 1, "P17")]
    scores = official_scores(predictions, GOLD)
    # 1 correct of 2 predicted, 1 of 4 gold: P = 1/2, R = 1/4, F1 = 1/3 (counted twice it would be 3/7)
    assert scores["num_predictions"] == 2
    assert scores["f1"] == pytest.approx(100 / 3) == official_script_f1(predictions, GOLD)
    # The first occurrence's evidence: 1 of 1 predicted sentences is gold (the last one's would give 1 of 3).
    assert scores["evi_p"] == pytest.approx(100.0)
    assert "predictions: 2 repeated predictions (same title, h_idx, t_idx and r) count once" in caplog.text


def test_without_training_documents_a_warning_names_the_missing_input(caplog):
    official_scores(PREDICTIONS, GOLD, train_documents_hint="--train_file")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert [message for message in warnings if "No training documents" in message] == [
        "No training documents: ign_precision and ign_f1 equal precision and f1 (no fact is ignored) and head_f1 / "
        "mid_f1 / tail_f1 are left out; give the training documents with --train_file."]
    caplog.clear()
    official_scores(PREDICTIONS, GOLD, TRAIN)
    assert "No training documents" not in caplog.text


def test_load_train_documents_reads_a_file_a_data_folder_or_a_saved_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_revised.json").write_text(json.dumps(TRAIN))
    (data / "test_revised.json").write_text(json.dumps(GOLD))
    assert load_train_documents(data / "train_revised.json") == TRAIN
    assert load_train_documents(data) == TRAIN

    run = tmp_path / "run"
    run.mkdir()
    reference = reference_documents(TRAIN)
    (run / TRAIN_REFERENCE_FILE).write_text(json.dumps(reference))
    (run / "train_revised.json").write_text(json.dumps(GOLD))  # the saved reference wins over a data file
    assert load_train_documents(run) == reference

    (data / "train_annotated.json").write_text(json.dumps(TRAIN))
    with pytest.raises(ValueError, match="holds both train_revised.json and train_annotated.json"):
        load_train_documents(data)
    with pytest.raises(FileNotFoundError, match="holds no training documents"):
        load_train_documents(tmp_path)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_train_documents(tmp_path / "missing.json")
    (tmp_path / "dict.json").write_text(json.dumps({"data": TRAIN}))
    with pytest.raises(ValueError, match=r"dict\.json: expected a JSON list of DocRED documents .* got an object"):
        load_train_documents(tmp_path / "dict.json")


def test_reference_documents_keep_the_scores_and_drop_the_rest():
    reference = reference_documents(TRAIN)
    assert reference[0] == {
        "title": "Train1",
        "vertexSet": [[{"name": "City of Light"}], [{"name": "France"}], [{"name": "Paris"}], [{"name": "Seine"}]],
        "labels": [{"h": 0, "t": 1, "r": "P17"}, {"h": 2, "t": 3, "r": "P17"}],
    }
    assert official_scores(PREDICTIONS, GOLD, reference) == official_scores(PREDICTIONS, GOLD, TRAIN)
    sample = json.loads(GOLD_SAMPLE.read_text())  # real documents as the training set: sents, pos, evidence dropped
    predictions = [fact(doc["title"], x["h"], x["t"], x["r"]) for doc in sample[:3] for x in doc["labels"]]
    scores = official_scores(predictions, sample, reference_documents(sample))
    assert scores == official_scores(predictions, sample, sample) and scores["num_correct_in_train"] > 0
    assert len(json.dumps(reference_documents(sample))) < len(json.dumps(sample)) / 2


def relation(k):
    return f"R{k:02d}"


def frequency_train_documents():
    """Training labels where R01..R30 are labeled 30..1 times, R35 20 times (tied with R11), R31..R34 never.

    R35 also has two repeated labels, which count once: counted, its 22 would put it in the head.
    """
    frequency = {relation(k): 31 - k for k in range(1, 31)} | {"R35": 20}
    labels = [label(0, j, r) for r, n in frequency.items() for j in range(1, n + 1)]
    labels += [label(0, 1, "R35"), label(0, 2, "R35")]
    return [{"title": "Freq", "vertexSet": entities(*[[f"E{i}"] for i in range(31)]), "labels": labels}]


VOCABULARY = [relation(k) for k in range(1, 36)]


def test_relation_frequency_groups():
    groups = relation_frequency_groups(frequency_train_documents(), VOCABULARY)
    # ranking: R01..R10 (30..21), R11 (20), R35 (20, tie broken by id), R12..R30 (19..1), R31..R34 (0)
    assert groups["head"] == {relation(k) for k in range(1, 11)}
    assert groups["mid"] == {"R11", "R35", "R12", "R13", "R14"}
    assert groups["tail"] == {relation(k) for k in range(15, 35)}  # 16 seen in training + the 4 unseen ones
    assert len(groups["tail"]) == 20
    # Without the vocabulary, the 31 relations of training rank alone: the tail moves up by 4.
    groups = relation_frequency_groups(frequency_train_documents())
    assert groups["mid"] == {"R11"} and groups["tail"] == {"R35"} | {relation(k) for k in range(12, 31)}
    # Fewer than head + tail relations: head first, the rest tail, no mid.
    small = relation_frequency_groups([{"title": "S", "vertexSet": entities(["A"], ["B"]),
                                        "labels": [label(0, 1, relation(k)) for k in range(1, 13)]}])
    assert (len(small["head"]), small["mid"], len(small["tail"])) == (10, set(), 2)


def test_head_mid_tail_f1():
    gold = [{
        "title": "G",
        "vertexSet": entities(*[[f"N{i}"] for i in range(5)]),
        # head: R01, R02; mid: R35; tail: R31, R20
        "labels": [label(0, 1, "R01"), label(0, 2, "R02"), label(0, 1, "R35"), label(0, 1, "R31"), label(0, 2, "R20")],
    }]
    predictions = [
        fact("G", 0, 1, "R01"),  # head, correct
        fact("G", 0, 3, "R03"),  # head, wrong
        fact("G", 0, 1, "R35"),  # mid, correct
        fact("G", 0, 1, "R31"),  # tail, correct
        fact("G", 0, 4, "R25"),  # tail, wrong
        fact("G", 0, 3, "R34"),  # a vocabulary relation that training never labels: frequency 0, tail, wrong
    ]
    scores = official_scores(predictions, gold, frequency_train_documents(), VOCABULARY)
    # head: 1 correct / 2 predicted, 1 / 2 gold -> f1 1/2
    assert scores["head_f1"] == pytest.approx(100 / 2)
    # mid: 1 / 1, 1 / 1 -> 1
    assert scores["mid_f1"] == pytest.approx(100.0)
    # tail: P = 1/3, R = 1/2 -> f1 = 2 (1/6) / (5/6) = 2/5
    assert scores["tail_f1"] == pytest.approx(100 * 2 / 5)
    # overall: 3 / 6 predicted, 3 / 5 gold -> f1 = 2 (1/2)(3/5) / (11/10) = 6/11
    assert scores["f1"] == pytest.approx(100 * 6 / 11)


def test_cli_writes_and_prints_the_scores(tmp_path):
    paths = {}
    rel_info = {"P17": "country", "P1": "named after"}
    for name, value in [("pred", PREDICTIONS), ("gold", GOLD), ("train", TRAIN), ("rel_info", rel_info)]:
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(value))
    output = tmp_path / "scores.json"
    completed = subprocess.run(
        [sys.executable, "-m", "docre_training.metrics", "--predictions", paths["pred"], "--gold", paths["gold"],
         "--train", paths["train"], "--rel_info", paths["rel_info"], "--output", output],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    expected = official_scores(PREDICTIONS, GOLD, TRAIN, ["P17", "P1"])
    assert json.loads(output.read_text()) == pytest.approx(expected)
    assert f"ign_f1: {expected['ign_f1']:.4f}" in completed.stdout
    assert "num_correct: 3" in completed.stdout


def run_scorer(*args):
    return subprocess.run([sys.executable, "-m", "docre_training.metrics", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_bad_submission_in_one_line(tmp_path):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(GOLD))
    predictions = tmp_path / "pred.json"
    for submission, message in [
        ({"Doc1": [fact("Doc1", 0, 1, "P17")]}, f"{predictions}: expected a JSON list of predictions"),
        ([fact("Doc1", 0, 1, "P17"), fact("Doc1", 999, 1, "P17")], f"{predictions}, entry 1 (title 'Doc1'): h_idx 999"),
        ([fact("Nowhere", 0, 1, "P17")], f"{predictions}: none of its 1 titles is a gold document ('Nowhere'"),
    ]:
        predictions.write_text(json.dumps(submission))
        completed = run_scorer("--predictions", predictions, "--gold", gold)
        assert completed.returncode == 2 and completed.stdout == ""
        assert completed.stderr.startswith(f"python -m docre_training.metrics: error: {message}"), completed.stderr
        assert completed.stderr.count("\n") == 1
    predictions.write_text("[{")
    completed = run_scorer("--predictions", predictions, "--gold", gold)
    assert completed.returncode == 2 and f"error: {predictions} is not valid JSON" in completed.stderr


def test_cli_takes_the_training_documents_from_a_data_folder_and_warns_without_them(tmp_path):
    (tmp_path / "train_revised.json").write_text(json.dumps(TRAIN))
    (tmp_path / "gold.json").write_text(json.dumps(GOLD))
    (tmp_path / "pred.json").write_text(json.dumps(PREDICTIONS))
    common = ("--predictions", tmp_path / "pred.json", "--gold", tmp_path / "gold.json")
    with_folder = run_scorer(*common, "--train", tmp_path)
    assert with_folder.returncode == 0, with_folder.stderr
    assert f"ign_f1: {100 * 12 / 23:.4f}" in with_folder.stdout and "No training documents" not in with_folder.stderr
    without = run_scorer(*common)
    assert without.returncode == 0 and f"ign_f1: {100 * 3 / 5:.4f}" in without.stdout
    assert ("WARNING: No training documents: ign_precision and ign_f1 equal precision and f1 (no fact is ignored) and "
            "head_f1 / mid_f1 / tail_f1 are left out; give the training documents with --train") in without.stderr


def as_module_rows(predictions, gold):
    """`metrics/docred` rows, as JSON strings: each gold document, and its predicted facts in the same position.

    Facts on titles outside the gold documents go to the last row (rows are pooled before scoring).
    """
    rows = {document["title"]: [] for document in gold}
    for prediction in predictions:
        rows.get(prediction["title"], rows[gold[-1]["title"]]).append(prediction)
    return [json.dumps(facts) for facts in rows.values()], [json.dumps(document) for document in gold]


@pytest.fixture(scope="module")
def docred_metric():
    evaluate = pytest.importorskip("evaluate")  # slow: it imports transformers
    # force_redownload re-copies the script, so the cached copy records this checkout as its origin.
    return evaluate.load(str(REPO / "metrics" / "docred"), download_mode="force_redownload")


def test_evaluate_module_matches_official_scores(docred_metric):
    predictions = PREDICTIONS + [fact("Doc2", 0, 1, "P26", evidence=[0])]  # adds evidence, keeps the facts
    rows, references = as_module_rows(predictions, GOLD)
    scores = docred_metric.compute(
        predictions=rows, references=references, train_documents=TRAIN, relation_vocabulary=["P17", "P1"]
    )
    assert scores == pytest.approx(official_scores(predictions, GOLD, TRAIN, ["P17", "P1"]))
    assert scores["ign_f1"] == pytest.approx(100 * 12 / 23) and "evi_f1" in scores


def test_evaluate_module_refuses_a_row_that_is_not_a_list_and_warns_without_training_documents(docred_metric,
                                                                                               caplog):
    rows, references = as_module_rows(PREDICTIONS, GOLD)
    with pytest.raises(ValueError, match=r"^predictions row 1: expected the JSON of a list of predictions .* got an "
                                         r"object with the keys \['h_idx', 'r', 't_idx', 'title'\]"):
        docred_metric.compute(predictions=[rows[0], json.dumps(fact("Doc2", 0, 1, "P26")), rows[2]],
                              references=references)
    # rows[0] holds the 4 entries of Doc1: the bad one is the 5th entry.
    with pytest.raises(ValueError, match=r"the prediction rows \(entries numbered across the rows\), entry 4 "
                                         r"\(title 'Doc2'\): h_idx 5 is not an entity"):
        docred_metric.compute(predictions=[rows[0], json.dumps([fact("Doc2", 5, 1, "P26")]), rows[2]],
                              references=references)
    docred_metric.compute(predictions=rows, references=references)
    assert "give the training documents with train_documents= (the documents, their file" in caplog.text


def test_evaluate_module_finds_the_scorer_outside_the_repository(docred_metric, monkeypatch):
    """`evaluate` runs a cached copy of the script; with the project not importable it loads the repository's file."""
    script = sys.modules[type(docred_metric).__module__]
    assert Path(script.__file__).parent != REPO / "metrics" / "docred"  # the cached copy
    monkeypatch.setitem(sys.modules, "docre_training", None)  # makes `import docre_training` fail
    scorer = script._load_scorer()
    assert scorer is not docre_training.metrics
    assert Path(scorer.__file__) == REPO / "docre_training" / "metrics.py"
    assert scorer.official_scores(PREDICTIONS, GOLD, TRAIN) == official_scores(PREDICTIONS, GOLD, TRAIN)


def test_gold_against_itself_on_re_docred_test():
    gold = json.loads(GOLD_SAMPLE.read_text())
    predictions = [fact(doc["title"], x["h"], x["t"], x["r"]) for doc in gold for x in doc["labels"]]
    total = sum(len(doc["labels"]) for doc in gold)
    assert total > 400
    scores = official_scores(predictions, gold)
    assert scores["num_gold"] == scores["num_correct"] == scores["num_predictions"] == total
    assert scores["precision"] == scores["recall"] == scores["f1"] == 100.0
    scores = official_scores(predictions, gold, train_documents=gold)
    assert scores["num_correct_in_train"] == total
    assert scores["ign_f1"] == 0.0
    assert scores["head_f1"] == scores["mid_f1"] == scores["tail_f1"] == 100.0


def test_the_scorer_imports_no_torch_and_registers_nothing():
    code = ("import sys, docre_training.metrics, docre_training; "
            "print('torch' in sys.modules, 'transformers' in sys.modules, 'docre_training.pipeline' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.split() == ["False", "False", "False"], result.stderr


# ------------------------------------------------------------------ evidence on real documents
def official_script_evidence(predictions, gold_documents):
    """evi_p, evi_r, evi_f1 (percent) as the official DocRED `evaluation.py` computes them, as a plain loop: the gold
    evidence of each labeled (title, r, h, t) and the count of all gold evidence sentences; the submission sorted and
    de-duplicated on (title, h_idx, t_idx, r), first of a run kept; over kept predictions on gold titles, every
    predicted sentence counts as predicted evidence, and for a correct fact |predicted evidence & gold evidence|
    counts as correct evidence."""
    gold_evidence, total_evidence, titles = {}, 0, set()
    for document in gold_documents:
        titles.add(document["title"])
        for x in document["labels"]:
            gold_evidence[document["title"], x["r"], x["h"], x["t"]] = set(x["evidence"])
            total_evidence += len(x["evidence"])

    def key(prediction):
        return prediction["title"], prediction["h_idx"], prediction["t_idx"], prediction["r"]

    ordered = sorted(predictions, key=key)
    kept = [p for i, p in enumerate(ordered) if i == 0 or key(p) != key(ordered[i - 1])]
    correct_evidence = predicted_evidence = 0
    for p in kept:
        if p["title"] not in titles:
            continue
        evidence = set(p["evidence"]) if "evidence" in p else set()
        predicted_evidence += len(evidence)
        fact = (p["title"], p["r"], p["h_idx"], p["t_idx"])
        if fact in gold_evidence:
            correct_evidence += len(gold_evidence[fact] & evidence)
    precision = correct_evidence / predicted_evidence if predicted_evidence else 0.0
    recall = correct_evidence / total_evidence if total_evidence else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100 * precision, 100 * recall, 100 * f1


def perturbed_predictions(gold_documents, seed):
    """Predictions made from the gold labels, each changed at random: kept as is, missed, some evidence sentences
    dropped, wrong sentences added, the relation changed (its evidence then counts only as predicted), no evidence
    key, a sentence listed twice (counts once), repeated with other evidence (the first counts), plus a prediction on
    a title that is not gold."""
    import random

    rng = random.Random(seed)
    relations = sorted({x["r"] for document in gold_documents for x in document["labels"]})
    predictions = []
    for document in gold_documents:
        num_sentences = len(document["sents"])
        for x in document["labels"]:
            prediction = fact(document["title"], x["h"], x["t"], x["r"], evidence=list(x["evidence"]))
            change = rng.choice(["keep", "miss", "drop", "add", "relation", "no-key", "twice", "repeat"])
            if change == "miss":
                continue
            if change == "drop":
                prediction["evidence"] = [s for s in prediction["evidence"] if rng.random() < 0.5]
            elif change == "add":
                wrong = [s for s in range(num_sentences) if s not in x["evidence"]]
                prediction["evidence"] += rng.sample(wrong, min(len(wrong), rng.randint(1, 3)))
                rng.shuffle(prediction["evidence"])
            elif change == "relation":
                prediction["r"] = rng.choice([r for r in relations if r != x["r"]])
            elif change == "no-key":
                del prediction["evidence"]
            elif change == "twice":
                prediction["evidence"] += [rng.randrange(num_sentences)]
            predictions.append(prediction)
            if change == "repeat":
                predictions.append({**prediction, "evidence": rng.sample(range(num_sentences), 2)})
    predictions.append(fact("Not a gold title", 0, 1, relations[0], evidence=[0, 1, 2]))
    rng.shuffle(predictions)
    return predictions


def test_gold_evidence_as_predictions_scores_100():
    gold = json.loads(GOLD_SAMPLE.read_text())
    predictions = [fact(d["title"], x["h"], x["t"], x["r"], evidence=x["evidence"]) for d in gold for x in d["labels"]]
    scores = official_scores(predictions, gold)
    assert (scores["evi_p"], scores["evi_r"], scores["evi_f1"]) == (100.0, 100.0, 100.0)
    assert official_script_evidence(predictions, gold) == (100.0, 100.0, 100.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evidence_scores_follow_the_official_script_on_real_documents(seed):
    gold = json.loads(GOLD_SAMPLE.read_text())
    # The official script and this scorer agree when no label repeats within a document (as in Re-DocRED).
    assert all(len({(x["h"], x["t"], x["r"]) for x in d["labels"]}) == len(d["labels"]) for d in gold)
    predictions = perturbed_predictions(gold, seed)
    scores = official_scores(predictions, gold)
    expected = official_script_evidence(predictions, gold)
    assert (scores["evi_p"], scores["evi_r"], scores["evi_f1"]) == pytest.approx(expected, abs=1e-9)
    assert 0 < expected[0] < 100 and 0 < expected[1] < 100
    assert scores["f1"] == pytest.approx(official_script_f1(predictions, gold))
