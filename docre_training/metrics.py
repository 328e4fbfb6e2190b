"""The official DocRED / Re-DocRED scores (Yao et al., ACL 2019), plus the head / mid / tail F1 of PEMSCL's Table 3.

Standard library only, so that the trainer, the `evaluate` module `metrics/docred` and the command line share one
scorer:

    python -m docre_training.metrics --predictions pred.json --gold test_revised.json --train train_revised.json \
        [--rel_info rel_info.json] [--output scores.json]

(`--train` also takes a data folder or a saved run's folder: `load_train_documents`.)

Definitions (those of the official DocRED evaluation script; a *fact* is `(title, h, t, r)`):

- **Gold facts**: the set of facts labeled in the gold documents (a label repeated in a document counts once);
  `num_gold` is its size.
- **Submission**: the predicted facts, de-duplicated on `(title, h_idx, t_idx, r)` (the first occurrence keeps its
  evidence). `num_predictions` is its size and the precision denominator, *including* predictions whose title is not
  a gold document (they are never correct).
- `num_correct`: submission facts that are gold facts.
- **Facts in train**: `(name of a head mention, name of a tail mention, r)` for every training label and every pair of
  mentions of its head and tail entities. A correct fact is *in train* when any pair of mention names of its head and
  tail entities (in the gold document) with its relation is in that set; `num_correct_in_train` counts them.
- `precision = num_correct / num_predictions`, `recall = num_correct / num_gold`, `f1 = 2 p r / (p + r)`, each 0 when
  its denominator is 0.
- `ign_precision = (num_correct - num_correct_in_train) / (num_predictions - num_correct_in_train)` and
  `ign_f1 = 2 ign_p r / (ign_p + r)` with the plain recall. The official script adds 1e-5 to the `ign_precision`
  denominator; here an exact 0 denominator gives 0 (its numerator is then 0 too) and otherwise the division is exact,
  which differs from the official value by less than 1e-5 (as a fraction, 1e-3 in percent).
- **Evidence** (reported only when some prediction has an `"evidence"` key): over correct facts, the number of
  predicted evidence sentences that are gold evidence of the fact; precision divides by all predicted evidence
  sentences of predictions on gold titles, recall by all gold evidence sentences. (The official script counts the
  evidence of repeated gold labels once per repetition and matches against the last one; here a repeated label
  contributes the union of its evidence once. The two agree when no label is repeated, as in Re-DocRED.)
- **Head / mid / tail** (PEMSCL Table 3): relations ranked by their number of labeled entity pairs in the training
  documents, descending, ties by relation id; head = the first 10, tail = the last 20, mid = the rest. Relations of the
  relation vocabulary and of the gold documents that training never labels count as frequency 0; any other predicted
  relation is tail. `head_f1` etc. is the F1 above with gold facts and predictions restricted to the group's relations.

All rates are returned in percent (x100); the `num_*` counts are ints.

**What the scorer refuses, and what it counts as wrong.** The official script matches facts by `(title, h, t, r)`
and counts any prediction that can never match as a false positive; it checks nothing. Here:

- *Refused* (`ValueError` naming the file, the entry's index, its title and the field): a submission that is not a
  list of objects with `title` (str), `h_idx`, `t_idx` (int), `r` (str) and optional `evidence` (list of ints);
  an `h_idx` / `t_idx` that is not an entity of its gold document (the predictions were made on other documents, so
  even their in-range indices are suspect); `r` equal to `"Na"`, the no-relation label (a decoder that lists its
  no-relation pairs, whose every entry would be a false positive); `r` outside the relation vocabulary, when one is
  given, and the gold and training labels (another label set, e.g. relation names instead of Wikidata ids); and a
  submission none of whose titles is a gold document (predictions for another split: the official script silently
  gives 0).
- *Counted as false positives, as the official script does, with one warning line saying how many*: predictions on
  titles that are not gold documents while others are (the first 5 named), predictions with `h_idx == t_idx`, and,
  without a relation vocabulary, relations that no gold or training document labels.
- *Counted once*: repeated `(title, h_idx, t_idx, r)`, as in the official script (logged at info level).
"""

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

GROUPS = ("head", "mid", "tail")
# The no-relation class: the label at index 0 of DocRED's rel2id.json, as the package ships it (read, not imported
# from the model package, so that scoring needs no torch).
_DOCRED_REL2ID = Path(__file__).resolve().parents[1] / "data_collators" / "vocabularies" / "docred" / "rel2id.json"
NO_RELATION = next(label for label, index in json.loads(_DOCRED_REL2ID.read_text(encoding="utf-8")).items() if index == 0)
PREDICTION_FORMAT = '{"title": str, "h_idx": int, "t_idx": int, "r": str[, "evidence": [int]]}'
# Unknown titles and relations named in a message; the count says how many there are.
NAMED_IN_MESSAGES = 5
# Training documents inside a folder: a saved run's reference (`reference_documents`), else the training file of
# Re-DocRED or DocRED as shipped.
TRAIN_REFERENCE_FILE = "train_reference.json"
TRAIN_FILES_OF_A_DATA_FOLDER = ("train_revised.json", "train_annotated.json")


def load_json(path):
    """Reads a JSON file.

    Args:
        path (`str` or `os.PathLike`): the file (a DocRED document list, a submission list or `rel_info.json`).

    Returns:
        The decoded JSON value.
    """
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}.") from None


def load_documents(path):
    """Reads a JSON list of DocRED documents (gold or training).

    Raises:
        ValueError: when the file is not JSON or not a list of objects (the message names the file).
    """
    documents = load_json(path)
    if not isinstance(documents, list) or not all(isinstance(document, dict) for document in documents):
        raise ValueError(f"{path}: expected a JSON list of DocRED documents (objects with title, vertexSet and "
                         f"labels), got {describe_json_value(documents)}.")
    return documents


def load_train_documents(path):
    """Training documents for Ign F1 and the head / mid / tail groups, from a file or a folder.

    Args:
        path (`str` or `os.PathLike`): a DocRED JSON file; or a folder: a saved run's `train_reference.json`
            (`reference_documents`) when it has one, else the training file of a data folder as shipped
            (`train_revised.json` for Re-DocRED, `train_annotated.json` for DocRED).

    Raises:
        FileNotFoundError: when the path does not exist or the folder holds none of these files.
        ValueError: when the folder holds both training files (which one is meant is unclear), or the file is not a
            list of documents.
    """
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"The training documents {path} do not exist.")
        return load_documents(path)
    reference = os.path.join(path, TRAIN_REFERENCE_FILE)
    if os.path.isfile(reference):
        return load_documents(reference)
    found = [name for name in TRAIN_FILES_OF_A_DATA_FOLDER if os.path.isfile(os.path.join(path, name))]
    if len(found) > 1:
        raise ValueError(f"{path} holds both {' and '.join(found)}: pass the training file itself.")
    if not found:
        raise FileNotFoundError(f"{path} holds no training documents ({TRAIN_REFERENCE_FILE} of a saved run, or "
                                f"{' / '.join(TRAIN_FILES_OF_A_DATA_FOLDER)}): pass the training file itself.")
    return load_documents(os.path.join(path, found[0]))


def reference_documents(train_documents):
    """The part of training documents that Ign F1 and the groups read: titles, mention names and `h` / `t` / `r`.

    A run saves this beside its model (`TRAIN_REFERENCE_FILE`, about a quarter of the training file) so that a
    later evaluation of the model finds the training facts it was trained on; `official_scores` gives the same
    scores with it as with the full documents.

    Args:
        train_documents (`list[dict]`): training documents (any shape `official_scores` accepts).

    Returns:
        `list[dict]`: DocRED-format documents, `{"title", "vertexSet": [[{"name"}]], "labels": [{"h", "t", "r"}]}`.
    """
    documents = []
    for document in train_documents:
        title, entity_names, labels = _normalize_document(document)
        documents.append({
            "title": title,
            "vertexSet": [[{"name": name} for name in sorted(names)] for names in entity_names],
            "labels": [{"h": h, "t": t, "r": r} for h, t, r, _ in labels],
        })
    return documents


def describe_json_value(value):
    """A short description of a JSON value of the wrong kind, for error messages."""
    if isinstance(value, dict):
        keys = sorted(map(str, value))
        return f"an object with the keys {keys[:NAMED_IN_MESSAGES]}{' ...' if len(keys) > NAMED_IN_MESSAGES else ''}"
    if isinstance(value, list):
        kinds = sorted({type(item).__name__ for item in value if not isinstance(item, dict)})
        return f"a list whose entries include {', '.join(kinds)}"
    return f"{type(value).__name__} {value!r:.40}"


def _normalize_document(document):
    """Reads one gold or training document in either accepted shape.

    Accepted shapes: DocRED JSON (`"vertexSet"`: entities as lists of mention dicts; `"labels"`: a list of
    `{"h", "t", "r", "evidence"}`), and rows of a `datasets` builder, whose `"labels"` may be a dict of lists or a list
    of dicts keyed `head` / `tail` / `relation_id` (and whose entities may be dicts of lists, `{"name": [...], ...}`).

    Args:
        document (`dict`): one document.

    Returns:
        `(title, entity_names, labels)`: the title, for each entity the set of its mention names, and a list of
        `(h, t, r, evidence)` with `h`, `t` ints, `r` a string and `evidence` a tuple of sentence ids.

    Raises:
        ValueError: when the document has no title, no `vertexSet` or a label without head, tail or relation.
    """
    if "title" not in document:
        raise ValueError(f"A document has no `title` (keys: {sorted(document)}).")
    title = str(document["title"])
    if "vertexSet" not in document:
        raise ValueError(f"Document {title!r} has no `vertexSet`.")
    entity_names = []
    for entity in document["vertexSet"]:
        names = entity["name"] if isinstance(entity, dict) else [mention["name"] for mention in entity]
        entity_names.append(set(names))

    raw_labels = document.get("labels") or []
    if isinstance(raw_labels, dict):  # dict of lists -> list of dicts
        keys = list(raw_labels)
        raw_labels = [dict(zip(keys, values)) for values in zip(*(raw_labels[key] for key in keys))]
    labels = []
    for label in raw_labels:
        try:
            h = label["h"] if "h" in label else label["head"]
            t = label["t"] if "t" in label else label["tail"]
            r = label["r"] if "r" in label else label["relation_id"]
        except KeyError as error:
            raise ValueError(
                f"A label of document {title!r} has no {error.args[0]!r} (accepted keys: h/t/r or head/tail/relation_id)."
            ) from None
        labels.append((int(h), int(t), str(r), tuple(label.get("evidence") or ())))
    return title, entity_names, labels


def train_facts(train_documents):
    """The facts in train: `(head mention name, tail mention name, r)` for every label and mention pair.

    Args:
        train_documents (`list[dict]`): training documents (any shape `official_scores` accepts).

    Returns:
        `set[tuple[str, str, str]]`.
    """
    facts = set()
    for document in train_documents:
        _, entity_names, labels = _normalize_document(document)
        for h, t, r, _ in labels:
            facts.update((n1, n2, r) for n1 in entity_names[h] for n2 in entity_names[t])
    return facts


def relation_frequency_groups(train_documents, relation_vocabulary=None, head=10, tail=20):
    """Splits relations into head / mid / tail by their number of labeled entity pairs in training (PEMSCL Table 3).

    Relations are ranked by frequency, descending, ties broken by relation id. Head takes the first `head`, tail the
    last `tail` of the rest, mid what remains (so with fewer than `head + tail` relations mid is empty and tail short).

    Args:
        train_documents (`list[dict]`): training documents; a label repeated within a document counts once.
        relation_vocabulary (`Iterable[str]`, *optional*): relations to rank even if training never labels them
            (frequency 0), e.g. the keys of `rel_info.json`.
        head (`int`, defaults to 10): size of the head group.
        tail (`int`, defaults to 20): size of the tail group.

    Returns:
        `dict[str, set[str]]` with keys `"head"`, `"mid"`, `"tail"`.
    """
    frequency = Counter()
    for document in train_documents:
        _, _, labels = _normalize_document(document)
        frequency.update(r for _, _, r in {(h, t, r) for h, t, r, _ in labels})
    for relation in relation_vocabulary or ():
        frequency[str(relation)] += 0
    ranked = sorted(frequency, key=lambda relation: (-frequency[relation], relation))
    tail_start = max(head, len(ranked) - tail)
    return {"head": set(ranked[:head]), "mid": set(ranked[head:tail_start]), "tail": set(ranked[tail_start:])}


def _precision_recall_f1(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    return precision, recall, _f1(precision, recall)


def _f1(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _read_submission(predictions, entity_counts, relation_vocabulary, source):
    """Checks a submission entry by entry and de-duplicates it (what is refused: see the module docstring).

    Args:
        predictions: the decoded submission.
        entity_counts (`dict[str, int]`): number of entities of each gold document, by title.
        relation_vocabulary (`set[str]` or `None`): the known relation ids (the vocabulary and the labeled ones), when
            a vocabulary is given.
        source (`str`): the submission's name in messages (its file).

    Returns:
        `(submission, first_entry)`: `{(title, h, t, r): evidence or None}` in first-occurrence order, and the index
        of each fact's first entry.

    Raises:
        ValueError: naming `source`, the entry's index, its title and the field.
    """
    if not isinstance(predictions, (list, tuple)):
        raise ValueError(f"{source}: expected a JSON list of predictions {PREDICTION_FORMAT}, "
                         f"got {describe_json_value(predictions)}.")
    submission, first_entry = {}, {}
    for index, prediction in enumerate(predictions):
        where = f"{source}, entry {index}"
        if not isinstance(prediction, dict):
            raise ValueError(f"{where}: expected an object {PREDICTION_FORMAT}, got {describe_json_value(prediction)}.")
        if "title" in prediction:
            where += f" (title {prediction['title']!r})"
        for field, kind in (("title", str), ("h_idx", int), ("t_idx", int), ("r", str)):
            if field not in prediction:
                raise ValueError(f"{where}: no {field!r}; each prediction is {PREDICTION_FORMAT}.")
            value = prediction[field]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{where}: {field} {value!r} is of type {type(value).__name__}, not {kind.__name__}.")
        title, h, t, r = prediction["title"], prediction["h_idx"], prediction["t_idx"], prediction["r"]
        if r == NO_RELATION:
            raise ValueError(f"{where}: r {r!r} is the no-relation label, not a relation; leave pairs without a "
                             "relation out of the submission.")
        if relation_vocabulary is not None and r not in relation_vocabulary:
            known = sorted(relation_vocabulary)[:NAMED_IN_MESSAGES]
            raise ValueError(f"{where}: r {r!r} is neither in the relation vocabulary nor labeled in the gold or "
                             f"training documents ({len(relation_vocabulary)} known relations, e.g. "
                             f"{', '.join(known)}).")
        if title in entity_counts:
            for field, entity in (("h_idx", h), ("t_idx", t)):
                if not 0 <= entity < entity_counts[title]:
                    raise ValueError(f"{where}: {field} {entity} is not an entity of that gold document, which has "
                                     f"{entity_counts[title]} (0 to {entity_counts[title] - 1}); were the predictions "
                                     "made on other documents?")
        evidence = prediction.get("evidence")
        if evidence is not None and (not isinstance(evidence, list) or not all(
                isinstance(sentence, int) and not isinstance(sentence, bool) for sentence in evidence)):
            raise ValueError(f"{where}: evidence {evidence!r:.60} is not a list of sentence ids (ints).")
        fact = (title, h, t, r)
        if fact not in submission:
            submission[fact], first_entry[fact] = evidence, index
    return submission, first_entry


def _named(facts, first_entry):
    """`entry i (title, h, t, r)` for the first few facts, for a warning."""
    named = [f"entry {first_entry[fact]} {fact}" for fact in facts[:NAMED_IN_MESSAGES]]
    return ", ".join(named) + (", ..." if len(facts) > NAMED_IN_MESSAGES else "")


def _warn_about_never_correct(submission, first_entry, entity_names_by_title, labeled_relations, source):
    """Refuses a submission on other documents; warns about predictions counted as false positives."""
    titles = list(dict.fromkeys(title for title, _, _, _ in submission))
    unknown_titles = [title for title in titles if title not in entity_names_by_title]
    named_titles = ", ".join(map(repr, unknown_titles[:NAMED_IN_MESSAGES]))
    if titles and len(unknown_titles) == len(titles):
        raise ValueError(f"{source}: none of its {len(titles)} titles is a gold document ({named_titles}"
                         f"{', ...' if len(titles) > NAMED_IN_MESSAGES else ''}; the gold documents have "
                         f"{len(entity_names_by_title)} titles); score the predictions against the gold file of the "
                         "split they were made on.")
    if unknown_titles:
        count = sum(title not in entity_names_by_title for title, _, _, _ in submission)
        logger.warning("%s: %d predictions on %d titles that are not gold documents (%s%s) count as false positives, "
                       "as in the official scorer.", source, count, len(unknown_titles), named_titles,
                       ", ..." if len(unknown_titles) > NAMED_IN_MESSAGES else "")
    self_pairs = [fact for fact in submission if fact[1] == fact[2]]
    if self_pairs:
        logger.warning("%s: %d predictions relate an entity to itself (h_idx == t_idx: %s); they count as false "
                       "positives, as in the official scorer.", source, len(self_pairs),
                       _named(self_pairs, first_entry))
    if labeled_relations is not None:
        unlabeled = [fact for fact in submission if fact[3] not in labeled_relations]
        if unlabeled:
            relations = sorted({fact[3] for fact in unlabeled})
            logger.warning("%s: %d predictions use relations that no gold or training document labels (%s); they "
                           "count as false positives. Pass the relation vocabulary (rel_info.json) to refuse unknown "
                           "relation ids.", source, len(unlabeled), ", ".join(relations[:NAMED_IN_MESSAGES]))


def official_scores(predictions, gold_documents, train_documents=None, relation_vocabulary=None,
                    predictions_source="predictions", train_documents_hint="train_documents="):
    """Scores a submission against gold documents with the official DocRED definitions (see the module docstring).

    Args:
        predictions (`list[dict]`): the official submission format, `{"title", "h_idx", "t_idx", "r"}` with optional
            `"evidence"` (sentence ids) and `"score"` (ignored).
        gold_documents (`list[dict]`): gold documents, DocRED JSON or `datasets` builder rows.
        train_documents (`list[dict]`, *optional*): training documents, for Ign F1 and the head / mid / tail groups
            (`load_train_documents` reads them from a file, a data folder or a saved run). Without them `ign_*`
            equals the plain scores and the group scores are left out, which a warning says.
        relation_vocabulary (`Iterable[str]`, *optional*): all relation ids (e.g. the keys of `rel_info.json`),
            ranked for the groups even when training never labels them; a prediction of another relation is refused.
        predictions_source (`str`, defaults to `"predictions"`): the submission's name in messages, e.g. its file.
        train_documents_hint (`str`, defaults to `"train_documents="`): how the caller's user gives the training
            documents (a flag, an argument), named in the warning when they are missing.

    Returns:
        `dict`: `precision`, `recall`, `f1`, `ign_precision`, `ign_f1`, then `head_f1`, `mid_f1`, `tail_f1` (with
        training documents), `evi_p`, `evi_r`, `evi_f1` (when a prediction carries
        evidence), all floats in percent; then the ints `num_predictions`, `num_gold`, `num_correct`,
        `num_correct_in_train`.

    Raises:
        ValueError: when the submission is refused (see the module docstring; the message names `predictions_source`,
            the entry, its title and the field), or a document is malformed.
    """
    gold, entity_names_by_title, entity_counts = _read_gold(gold_documents)
    labeled_relations = {r for _, _, _, r in gold}
    for document in train_documents or ():
        labeled_relations.update(r for _, _, r, _ in _normalize_document(document)[2])
    vocabulary = None if relation_vocabulary is None else set(map(str, relation_vocabulary)) - {NO_RELATION}
    submission, first_entry = _read_submission(
        predictions, entity_counts,
        # The labeled relations are known too: a vocabulary file that misses one must not refuse a correct fact.
        None if vocabulary is None else vocabulary | labeled_relations, predictions_source)
    repeated = len(predictions) - len(submission)
    if repeated:
        logger.info("%s: %d repeated predictions (same title, h_idx, t_idx and r) count once, as in the official "
                    "scorer.", predictions_source, repeated)
    _warn_about_never_correct(submission, first_entry, entity_names_by_title,
                              labeled_relations if vocabulary is None else None, predictions_source)
    has_evidence = any(prediction.get("evidence") is not None for prediction in predictions)  # repeats too

    in_train = set() if train_documents is None else train_facts(train_documents)
    if train_documents is None:
        logger.warning("No training documents: ign_precision and ign_f1 equal precision and f1 (no fact is ignored) "
                       "and head_f1 / mid_f1 / tail_f1 are left out; give the training documents with %s.",
                       train_documents_hint)

    matches = _match_submission(submission, gold, entity_names_by_title, in_train)
    counts = {"num_predictions": len(submission), "num_gold": len(gold), "num_correct": len(matches.correct),
              "num_correct_in_train": matches.num_correct_in_train}
    scores = _fact_scores(**counts)
    if train_documents is not None:
        relations = (vocabulary or set()) | {r for _, _, _, r in gold}
        scores.update(_relation_group_f1(train_documents, relations, submission, gold, matches.correct))
    if has_evidence:
        total_gold_evidence = sum(len(evidence) for evidence in gold.values())
        evidence_scores = _precision_recall_f1(matches.correct_evidence, matches.predicted_evidence,
                                               total_gold_evidence)
        scores.update(zip(("evi_p", "evi_r", "evi_f1"), evidence_scores))
    percent = {key: 100 * value for key, value in scores.items()}
    return {**percent, **counts}


def _read_gold(gold_documents):
    """The gold facts of the documents, with the entities of each title.

    Returns:
        `(gold, entity_names_by_title, entity_counts)`: `{(title, h, t, r): set of gold evidence sentences}`, the
        mention names of each entity by title, and the most entities of a document of each title (titles may repeat).
    """
    if not isinstance(gold_documents, (list, tuple)):
        raise ValueError("The gold documents must be a list of DocRED documents, got "
                         f"{describe_json_value(gold_documents)}.")
    gold = {}
    entity_names_by_title = {}
    entity_counts = Counter()
    for document in gold_documents:
        title, entity_names, labels = _normalize_document(document)
        entity_names_by_title[title] = entity_names
        entity_counts[title] = max(entity_counts[title], len(entity_names))
        for h, t, r, evidence in labels:
            gold.setdefault((title, h, t, r), set()).update(evidence)
    return gold, entity_names_by_title, entity_counts


class _Matches(NamedTuple):
    """What a submission gets right: its correct facts in submission order, how many of them are facts in train,
    and the evidence counts (correct, and all predicted on gold titles)."""

    correct: list
    num_correct_in_train: int
    correct_evidence: int
    predicted_evidence: int


def _match_submission(submission, gold, entity_names_by_title, in_train):
    """Matches the submission's facts against the gold facts (predictions on other titles are never correct)."""
    correct = []
    num_correct_in_train = correct_evidence = predicted_evidence = 0
    for fact, evidence in submission.items():
        title, h, t, r = fact
        if title not in entity_names_by_title:
            continue
        predicted_evidence += len(set(evidence or ()))
        if fact not in gold:
            continue
        correct.append(fact)
        correct_evidence += len(gold[fact].intersection(evidence or ()))
        if in_train:
            entity_names = entity_names_by_title[title]
            if any((n1, n2, r) in in_train for n1 in entity_names[h] for n2 in entity_names[t]):
                num_correct_in_train += 1
    return _Matches(correct, num_correct_in_train, correct_evidence, predicted_evidence)


def _fact_scores(num_predictions, num_gold, num_correct, num_correct_in_train):
    """`precision`, `recall`, `f1`, `ign_precision` and `ign_f1` as fractions (definitions: the module docstring)."""
    precision, recall, f1 = _precision_recall_f1(num_correct, num_predictions, num_gold)
    ign_denominator = num_predictions - num_correct_in_train
    ign_precision = (num_correct - num_correct_in_train) / ign_denominator if ign_denominator else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ign_precision": ign_precision,
        "ign_f1": _f1(ign_precision, recall),
    }


def _relation_group_f1(train_documents, relations, submission, gold, correct):
    """`head_f1`, `mid_f1` and `tail_f1` as fractions: the F1 of the facts of each frequency group's relations
    (`relation_frequency_groups` ranks `relations` and those training labels; any other relation is tail)."""
    groups = relation_frequency_groups(train_documents, relations)
    group_of = {relation: group for group in ("head", "mid") for relation in groups[group]}
    counts = {group: Counter() for group in GROUPS}
    for name, facts in (("predicted", submission), ("gold", gold), ("correct", correct)):
        for fact in facts:
            counts[group_of.get(fact[3], "tail")][name] += 1
    return {f"{group}_f1": _precision_recall_f1(counts[group]["correct"], counts[group]["predicted"],
                                                counts[group]["gold"])[2] for group in GROUPS}


COMMAND_LINE_EPILOG = """\
Refused, with one line naming the file, the entry, its title and the field: a submission that is not a list of
{title, h_idx, t_idx, r}; an h_idx / t_idx that is not an entity of its gold document; r "Na" (the no-relation
label); r outside --rel_info's relations (and the gold and training labels); a submission none of whose titles
is in --gold.
Counted as false positives, as the official DocRED scorer does, with a warning saying how many: predictions on
titles missing from --gold (while others are there), h_idx == t_idx, and (without --rel_info) relations that no gold
or training document labels. A repeated (title, h_idx, t_idx, r) counts once.
Without --train, Ign F1 equals F1 and head / mid / tail F1 are left out (a warning says so).
"""


def main(argv=None):
    """Command line: scores a submission file and prints the scores (one `key: value` a line).

    Args:
        argv (`list[str]`, *optional*): arguments, `sys.argv[1:]` by default.

    Returns:
        `dict`: the scores of `official_scores`.

    Raises:
        ValueError / OSError: a refused submission, a malformed or missing file (`cli` prints them in one line).
    """
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0], epilog=COMMAND_LINE_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="submission JSON: list of {title, h_idx, t_idx, r}")
    parser.add_argument("--gold", required=True, help="gold documents, DocRED JSON (e.g. test_revised.json)")
    parser.add_argument("--train", help="training documents for Ign F1 and head / mid / tail F1: a DocRED JSON file, "
                        f"a data folder (its {' or '.join(TRAIN_FILES_OF_A_DATA_FOLDER)}) or a saved run's folder "
                        f"(its {TRAIN_REFERENCE_FILE})")
    parser.add_argument("--rel_info", help="rel_info.json: its keys are the relation vocabulary (of the groups, and "
                        "any other predicted relation is refused)")
    parser.add_argument("--output", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)

    scores = official_scores(
        load_json(args.predictions),
        load_documents(args.gold),
        train_documents=load_train_documents(args.train) if args.train else None,
        relation_vocabulary=load_json(args.rel_info) if args.rel_info else None,
        predictions_source=args.predictions,
        train_documents_hint="--train (the training file, its data folder or the saved run's folder)",
    )
    for key, value in scores.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(scores, f, indent=2)
    return scores


def cli(argv=None):
    """`main` for the command line: a refused submission or a bad file ends in one line on stderr, exit status 2."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    try:
        main(argv)
    except (OSError, ValueError) as error:
        print(f"python -m docre_training.metrics: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
