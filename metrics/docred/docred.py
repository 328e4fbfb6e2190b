"""The official DocRED / Re-DocRED scores as an `evaluate` metric: `evaluate.load("metrics/docred")`.

The scoring itself is `docre_training.metrics.official_scores` (definitions in that module's docstring); this file
only adapts `evaluate`'s row-wise inputs to it. `evaluate` copies this script into its module cache, so the scorer is
found by, in order: importing `docre_training.metrics` (the project installed, or its root on `sys.path`), then
loading `docre_training/metrics.py` from the repository this script was loaded from (`evaluate` records that path
beside its copy).
"""

import importlib.util
import json
from pathlib import Path

import datasets
import evaluate


_DESCRIPTION = """\
Document-level relation extraction scores of the official DocRED evaluation: precision, recall, F1, Ign precision and
Ign F1 (facts whose mention-name triple appears in the training documents are ignored), head / mid / tail F1 over
relations ranked by training frequency (PEMSCL, EACL 2023, Table 3) and, when predictions carry evidence, evidence
precision / recall / F1. Rates are in percent.
"""

_KWARGS_DESCRIPTION = """\
Rows are JSON strings, so that documents keep their own keys (`evaluate` rejects keys that a nested feature does not
declare, and DocRED documents and predictions carry optional ones: `sents`, `pos`, `evidence`, `score`, ...).

Args:
    predictions (`list[str]`): one row per document, the JSON of that document's predicted facts in the official
        submission format, `[{"title": str, "h_idx": int, "t_idx": int, "r": str, "evidence": [int] (optional)}]`.
        Rows are pooled before scoring: a row need not pair with the reference at its position, and may name a title
        absent from the references (its facts are wrong).
    references (`list[str]`): one gold document per row, its JSON in DocRED format (`title`, `vertexSet`, `labels`)
        or as a row of the `datasets` builder.
    train_documents (`list[dict]` or `str`, *optional*): training documents, or the path of their JSON file, of their
        data folder or of a saved run's folder (`docre_training.metrics.load_train_documents`); needed for Ign F1
        (which otherwise equals F1, with a warning) and for head / mid / tail F1.
    relation_vocabulary (`list[str]`, `dict` or `str`, *optional*): all relation ids, e.g. `rel_info.json` or its path.

    What is refused (`ValueError`) and what counts as a false positive with a warning is that of
    `docre_training.metrics` (its module docstring); entries are numbered across the pooled rows.

Returns:
    `dict`: `precision`, `recall`, `f1`, `ign_precision`, `ign_f1`, `head_f1`, `mid_f1`, `tail_f1` (with training
    documents), `evi_p`, `evi_r`, `evi_f1` (when a prediction has evidence), in percent,
    and the counts `num_predictions`, `num_gold`, `num_correct`, `num_correct_in_train`.

Examples:
    >>> import json
    >>> docred = evaluate.load("metrics/docred")
    >>> gold = {"title": "A", "vertexSet": [[{"name": "Paris"}], [{"name": "France"}]],
    ...         "labels": [{"h": 0, "t": 1, "r": "P17", "evidence": [0]}]}
    >>> predicted = [{"title": "A", "h_idx": 0, "t_idx": 1, "r": "P17"}]
    >>> docred.compute(predictions=[json.dumps(predicted)], references=[json.dumps(gold)])["f1"]
    100.0
"""

_CITATION = """\
@inproceedings{yao-etal-2019-docred,
    title = "{D}oc{RED}: A Large-Scale Document-Level Relation Extraction Dataset",
    author = "Yao, Yuan and Ye, Deming and Li, Peng and Han, Xu and Lin, Yankai and Liu, Zhenghao and Liu, Zhiyuan
              and Huang, Lixin and Zhou, Jie and Sun, Maosong",
    booktitle = "Proceedings of ACL",
    year = "2019",
}
"""


def _load_scorer():
    """Returns the module `docre_training.metrics`.

    Raises:
        ImportError: when neither an import nor the repository this script was loaded from provides it.
    """
    try:
        from docre_training import metrics

        return metrics
    except ImportError:
        pass
    scripts = [Path(__file__).resolve()]
    meta = Path(__file__).with_suffix(".json")  # written by `evaluate` beside its cached copy
    if meta.is_file():
        scripts.insert(0, Path(json.loads(meta.read_text(encoding="utf-8"))["original file path"]).resolve())
    for script in scripts:
        if len(script.parents) < 3:
            continue
        path = script.parents[2] / "docre_training" / "metrics.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("_pemscl_docre_training_metrics", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ImportError(
        "The DocRED metric scores with `docre_training.metrics` of the pemscl project, which is not importable: "
        "install the project (`pip install -e .` in its root) or run from its root."
    )


_scorer = _load_scorer()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Docred(evaluate.Metric):
    """DocRED's official relation extraction scores (see `docre_training.metrics` for the definitions)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/thunlp/DocRED", "https://github.com/tonytan48/Re-DocRED"],
        )

    def _compute(self, predictions, references, train_documents=None, relation_vocabulary=None):
        if isinstance(train_documents, (str, Path)):
            train_documents = _scorer.load_train_documents(train_documents)
        if isinstance(relation_vocabulary, (str, Path)):
            relation_vocabulary = _scorer.load_json(relation_vocabulary)
        submission = []
        for index, row in enumerate(predictions):
            facts = _row_json(row, f"predictions row {index}")
            if not isinstance(facts, list):
                raise ValueError(f"predictions row {index}: expected the JSON of a list of predictions "
                                 f"{_scorer.PREDICTION_FORMAT}, got {_scorer.describe_json_value(facts)}.")
            submission.extend(facts)
        gold_documents = [_row_json(row, f"references row {index}") for index, row in enumerate(references)]
        return _scorer.official_scores(
            submission, gold_documents, train_documents, relation_vocabulary,
            predictions_source="the prediction rows (entries numbered across the rows)",
            train_documents_hint="train_documents= (the documents, their file, or their data folder)",
        )


def _row_json(row, name):
    """The JSON value of a row; a row that is not JSON is named in the error."""
    try:
        return json.loads(row)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is not JSON ({error}); rows are JSON strings (json.dumps).") from None
