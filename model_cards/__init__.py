"""Model cards generated from a run: `generate_model_card` fills `template.md` from the run's `all_results.json`,
its arguments and the model's configuration. The YAML front matter is built with `huggingface_hub.ModelCardData`
(library, tags, datasets, metrics and a `model-index` with the run's scores), so the Hub reads it as metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from string import Template
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from modeling_pemscl.losses import decision_threshold

TEMPLATE_PATH = Path(__file__).with_name("template.md")
TASK_TYPE = "document-relation-extraction"
TASK_NAME = "Document-level relation extraction"
TAGS = ["document-level-relation-extraction", "relation-extraction", "pemscl", "atlop", "custom_code"]
# Hub dataset id, pretty name, annotation note, citation.
DATASETS = {
    "docred": (
        "thunlp/docred",
        "DocRED",
        "known to miss many true relations (false negatives): precision and recall measured on it are "
        "underestimates, and a model trained on it learns to under-predict.",
        """@inproceedings{yao-etal-2019-docred,
  title = "{D}oc{RED}: A Large-Scale Document-Level Relation Extraction Dataset",
  author = "Yao, Yuan and Ye, Deming and Li, Peng and Han, Xu and Lin, Yankai and Liu, Zhenghao and Liu, Zhiyuan and Huang, Lixin and Zhou, Jie and Sun, Maosong",
  booktitle = "Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics",
  year = "2019",
}""",
    ),
    "re-docred": (
        "tonytan48/Re-DocRED",
        "Re-DocRED",
        "a revision of DocRED that adds many missing relations; it is far more complete but still not "
        "exhaustive.",
        """@inproceedings{tan-etal-2022-revisiting,
  title = "Revisiting {D}oc{RED} - Addressing the False Negative Problem in Relation Extraction",
  author = "Tan, Qingyu and Xu, Lu and Bing, Lidong and Ng, Hwee Tou and Aljunied, Sharifah Mahani",
  booktitle = "Proceedings of the 2022 Conference on Empirical Methods in Natural Language Processing",
  year = "2022",
}""",
    ),
}
# Metric key suffix -> display name; the order of the results table.
METRICS = {
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "ign_f1": "Ign F1",
    "head_f1": "Head F1",
    "mid_f1": "Mid F1",
    "tail_f1": "Tail F1",
}
SPLITS = {"eval": "validation", "test": "test"}  # metric prefix -> split
# The Hub's closest task to relations between the entities of a text (its own list has no relation extraction).
PIPELINE_TAG = "text-classification"
WIDGET_TEXT = "Marie Curie was born in Warsaw, the capital of Poland."


def _as_dict(arguments: Any) -> dict[str, Any]:
    if arguments is None:
        return {}
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if hasattr(arguments, "to_dict"):
        return arguments.to_dict()
    if dataclasses.is_dataclass(arguments):
        return dataclasses.asdict(arguments)
    return dict(vars(arguments))


def read_results(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's `all_results.json` (written by `Trainer.save_metrics`), `{}` when the run wrote none."""
    path = Path(output_dir) / "all_results.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _table(rows: list[tuple[str, Any]], header=("setting", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _split_descriptions(data: dict[str, Any]) -> dict[str, str]:
    validation = "validation split"
    if data.get("validation_file"):
        validation = f"`{os.path.basename(data['validation_file'])}`"
    elif data.get("validation_split_size"):
        validation = f"{data['validation_split_size']} documents held out of the training file (model selection)"
    test = f"`{os.path.basename(data['test_file'])}`" if data.get("test_file") else "test split"
    return {"eval": validation, "test": test}


def _results(results: dict[str, Any], dataset_id: str, dataset_name: str, data: dict[str, Any]):
    """EvalResults for the model-index and the markdown results table."""
    eval_results, rows = [], []
    descriptions = _split_descriptions(data)
    for prefix, split in SPLITS.items():
        scores = {name: results[f"{prefix}_{name}"] for name in METRICS if f"{prefix}_{name}" in results}
        if not scores:
            continue
        rows.append((descriptions[prefix], scores))
        for name, value in scores.items():
            eval_results.append(
                EvalResult(
                    task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset_id, dataset_name=dataset_name,
                    dataset_split=split, metric_type=name, metric_name=METRICS[name], metric_value=round(float(value), 2),
                )
            )
    if not rows:
        return [], "No evaluation results were recorded for this run."
    columns = [name for name in METRICS if any(name in scores for _, scores in rows)]
    lines = ["| split | " + " | ".join(METRICS[name] for name in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for description, scores in rows:
        cells = [f"{scores[name]:.2f}" if name in scores else "" for name in columns]
        lines.append(f"| {description} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nScores in percent, official DocRED evaluation over all entity pairs (Ign F1 ignores " \
                               "facts seen in the training documents)."
    if "train_loss" in results:
        text += f" Final training loss {results['train_loss']:.4f}"
        if "epoch" in results:
            text += f" after {results['epoch']:g} epochs"
        text += "."
    return eval_results, text


def _label_regime(data: dict[str, Any], config: dict[str, Any]) -> str:
    lines = []
    if data.get("train_labels_file"):
        lines.append(f"- Training labels were taken from `{os.path.basename(data['train_labels_file'])}` (matched by "
                     "title) instead of the training file's own labels: the paper's noisy-label regimes (OOG / OGG), "
                     "where training and test annotations come from different sources.")
    if data.get("label_drop_rate"):
        lines.append(f"- {100 * float(data['label_drop_rate']):g}% of the training triples were removed at random "
                     f"(seed {data.get('label_drop_seed', 0)}) to mimic incomplete annotation (`label_drop_rate`).")
    ratio = config.get("negative_sample_ratio", 1.0)
    if ratio is not None and float(ratio) < 1.0:
        lines.append(f"- Negative label sampling: each no-relation pair kept {100 * float(ratio):g}% of its negative "
                     "relations per step (Eq. 12-13), which makes training robust to missing labels.")
    if not data:
        lines.append("- Not recorded (the card was generated without the run's data arguments).")
    elif not lines:
        lines.append("- Clean: the training file's own labels, unchanged (`label_drop_rate` 0, no `train_labels_file`, "
                     "no negative sampling).")
    return "\n".join(lines)


def _training_data(data: dict[str, Any], dataset_name: str) -> str:
    if not data:
        return f"{dataset_name} (the exact files were not recorded)."
    files = [(split, data.get(f"{split}_file")) for split in ("train", "validation", "test")]
    lines = [f"{dataset_name} documents (Wikipedia introductions annotated with entities and Wikidata relations)."]
    for split, path in files:
        if path:
            lines.append(f"- {split}: `{os.path.basename(path)}`")
    if not any(path for _, path in files) and data.get("data_dir"):
        lines.append(f"- the standard splits of `{os.path.basename(os.path.normpath(data['data_dir']))}`")
    if data.get("validation_split_size") and not data.get("validation_file"):
        lines.append(f"- validation: {data['validation_split_size']} documents held out of the training file")
    if data.get("max_train_documents"):
        lines.append(f"- at most {data['max_train_documents']} training documents were used")
    return "\n".join(lines)


def _hyperparameters(training: dict[str, Any], model: dict[str, Any], config: dict[str, Any]) -> str:
    rows = []
    if "learning_rate" in training:
        rows.append(("learning rate (encoder)", training["learning_rate"]))
    if model.get("head_learning_rate") is not None:
        rows.append(("learning rate (head)", model["head_learning_rate"]))
    for name in ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                 "warmup_steps", "weight_decay", "lr_scheduler_type", "max_grad_norm", "seed", "bf16", "fp16"):
        value = training.get(name)
        skip = (value is None or (name in ("bf16", "fp16") and not value)
                or (name == "max_steps" and value <= 0) or (name == "num_train_epochs" and training.get("max_steps", -1) > 0))
        if skip:
            continue
        rows.append((name, value))
    for name in ("loss", "contrastive_temperature", "contrastive_weight", "gamma_pos", "gamma_neg", "use_entropy",
                 "use_contrastive", "contrastive_average", "contrastive_anchors", "negative_sample_ratio",
                 "max_relations_per_pair", "pair_embedding_size", "head_init", "relation_bias_init", "bilinear_block_size",
                 "entity_marker", "window_length", "window_scheme", "max_document_length", "word_prefix_space"):
        if config.get(name) is not None:
            rows.append((name, f"`{config[name]}`" if isinstance(config[name], str) else config[name]))
    encoder = config.get("encoder") or {}
    if isinstance(encoder, Mapping) and encoder.get("model_type"):
        rows.append(("encoder", f"{encoder['model_type']}, {encoder.get('num_hidden_layers')} layers, hidden size "
                                f"{encoder.get('hidden_size')}"))
    if not rows:
        return "Not recorded."
    return _table(rows)


def _framework_versions() -> str:
    lines = []
    for package in ("pemscl", "transformers", "torch", "datasets", "huggingface_hub"):
        try:
            lines.append(f"- {package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines)


def _base_model(model: dict[str, Any]) -> str | None:
    """A Hub id the run started from; None for a local folder (not a valid `base_model`)."""
    name = model.get("model_name_or_path")
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def generate_model_card(
    output_dir: str | os.PathLike,
    model_id: str,
    training_args: Any = None,
    data_args: Any = None,
    model_args: Any = None,
    model_config: Any = None,
    results: Mapping[str, Any] | None = None,
    conversion: Mapping[str, Any] | None = None,
) -> str:
    """The README.md of a trained PEMSCL model, filled from its run.

    Args:
        output_dir: The run's output folder; its `all_results.json` gives the scores and, when `model_config`
            is not given, its `config.json` the model settings.
        model_id: The Hub repository id (`org/name`), used as the card's model name and in the usage examples.
        training_args: The run's `TrainingArguments` (or a dict): optimisation hyperparameters.
        data_args: `run_docre.DataArguments` (or a dict): dataset, files and the noisy-label regime
            (`label_drop_rate`, `train_labels_file`).
        model_args: `run_docre.ModelArguments` (or a dict): the starting encoder and the head learning rate.
        model_config: The model's `PemsclConfig` (or a dict): relation vocabulary and loss settings.
        results: Scores to report instead of `all_results.json` (keys like `eval_f1`, `test_ign_f1`, in percent).
        conversion: For a model converted from a research checkpoint (`modeling_pemscl.convert_original_checkpoint`)
            instead of trained by a run: `source` (the file), `encoder`, `command` (the conversion command),
            `paper`, `paper_url`, `release_url` and `reported` (`{"source": where in the paper, "scores": {"eval" |
            "test": {metric: value}}}`, or None): the card quotes the paper's scores, attributed to it.

    Returns:
        The card as markdown with YAML front matter (`huggingface_hub.ModelCard(text)` parses it).
    """
    training, data, model = _as_dict(training_args), _as_dict(data_args), _as_dict(model_args)
    if model_config is None and (Path(output_dir) / "config.json").is_file():
        with open(Path(output_dir) / "config.json", encoding="utf-8") as file:
            model_config = json.load(file)
    config = _as_dict(model_config)
    results = dict(results) if results is not None else read_results(output_dir)

    dataset_key = data.get("dataset", "re-docred")
    dataset_id, dataset_name, annotation_note, dataset_citation = DATASETS.get(dataset_key, DATASETS["re-docred"])
    eval_results, results_text = _results(results, dataset_id, dataset_name, data)
    if conversion is not None:
        eval_results, results_text = _reported_results(conversion, dataset_id, dataset_name)
    id2label = config.get("id2label") or {}
    num_relations = max(len(id2label) - 1, 0) or 96
    base_model = _base_model(model)
    card_data = _card_metadata(model_id, base_model, dataset_key, dataset_id, config, eval_results)
    values = {
        "card_data": card_data.to_yaml(),
        "model_name": model_id.split("/")[-1],
        "model_id": model_id,
        "num_relations": num_relations,
        "dataset_pretty": dataset_name,
        **_provenance(base_model, training, data, model, config, dataset_name, conversion),
        "results_table": results_text,
        "score_sentence": _score_sentence(config),
        "windows_sentence": _windows_sentence(config),
        "entity_marker": config.get("entity_marker", "*"),
        "annotation_note": annotation_note,
        "framework_versions": _framework_versions(),
        "dataset_citation": f"```bibtex\n{dataset_citation}\n```",
    }
    return Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)


def _card_metadata(
    model_id: str,
    base_model: str | None,
    dataset_key: str,
    dataset_id: str,
    config: dict[str, Any],
    eval_results: list[EvalResult],
) -> ModelCardData:
    """The card's YAML metadata: library, pipeline tag, tags (a baseline loss tagged), dataset and model-index."""
    tags = TAGS + [dataset_key]
    if config.get("loss") and config["loss"] != "pemscl":
        tags.append(f"{config['loss']}-loss")
    return ModelCardData(
        model_name=model_id,
        base_model=base_model,
        datasets=[dataset_id],
        language="en",
        library_name="transformers",
        license="mit",
        metrics=["f1", "precision", "recall"],
        tags=tags,
        eval_results=eval_results or None,
        pipeline_tag=PIPELINE_TAG,
        widget=[{"text": WIDGET_TEXT}],
    )


def _provenance(
    base_model: str | None,
    training: dict[str, Any],
    data: dict[str, Any],
    model: dict[str, Any],
    config: dict[str, Any],
    dataset_name: str,
    conversion: Mapping[str, Any] | None,
) -> dict[str, str]:
    """The card's sections on how the model was made: its base model, training data, label regime and settings,
    from the run, or for a converted research checkpoint from its conversion."""
    if base_model:
        base_sentence = f"It was fine-tuned from [{base_model}](https://huggingface.co/{base_model})."
    else:
        encoder = config.get("encoder") or {}
        kind = encoder.get("model_type", "pretrained") if isinstance(encoder, Mapping) else "pretrained"
        base_sentence = f"Its encoder is a {kind} model fine-tuned with the relation head."
    training_data = _training_data(data, dataset_name)
    label_regime = _label_regime(data, config)
    hyperparameters = _hyperparameters(training, model, config)
    if conversion is not None:
        base_sentence = (f"It was trained with the released research code ({conversion['release_url']}) and converted "
                         f"from its checkpoint `{conversion['source']}`; its encoder is `{conversion['encoder']}`.")
        training_data = (f"Trained with the released research code on {dataset_name}; the paper ({conversion['paper']}) "
                         "describes the authors' setup.")
        label_regime = "- Not recorded in a research checkpoint."
        hyperparameters = _conversion_procedure(conversion, hyperparameters)
    return {
        "base_model_sentence": base_sentence,
        "training_data": training_data,
        "label_regime": label_regime,
        "hyperparameters_table": hyperparameters,
    }


def write_model_card(folder: str | os.PathLike, model: Any) -> str:
    """Render the card of `model` (its `model_card_data`: `model_id`, `training_args`, `data_args`, `model_args`,
    `conversion`, each optional) with the results found in `folder`, and write it as `folder/README.md`.

    Returns:
        The card's text.
    """
    data = dict(getattr(model, "model_card_data", None) or {})
    model_id = data.pop("model_id", None) or Path(folder).resolve().name
    card = generate_model_card(folder, model_id, model_config=model.config, **data)
    Path(folder, "README.md").write_text(card, encoding="utf-8")
    return card


def _reported_results(conversion: Mapping[str, Any], dataset_id: str, dataset_name: str):
    """The paper's scores for a converted model, attributed to the paper in the text and in the model-index."""
    reported = conversion.get("reported")
    if not reported:
        return [], ("Not measured by the conversion. The scores the paper reports belong to the authors' "
                    "RoBERTa-large checkpoints; this checkpoint has another encoder or head size (or loss), so they "
                    "are not its scores. Evaluate it with `run_docre.py --do_eval`.")
    eval_results, rows = [], []
    for prefix, split in SPLITS.items():
        scores = reported["scores"].get(prefix, {})
        if scores:
            rows.append((split, scores))
        for name, value in scores.items():
            eval_results.append(EvalResult(
                task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset_id, dataset_name=dataset_name,
                dataset_split=split, metric_type=name, metric_name=METRICS[name], metric_value=value,
                source_name=conversion["paper"], source_url=conversion["paper_url"],
            ))
    columns = [name for name in METRICS if any(name in scores for _, scores in rows)]
    lines = ["| split | " + " | ".join(METRICS[name] for name in columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {split} | " + " | ".join(f"{scores[name]:.2f}" if name in scores else "" for name in columns) + " |"
              for split, scores in rows]
    return eval_results, (
        f"Reported by the authors in the paper ({conversion['paper']}, {reported['source']}), not measured by this "
        f"conversion:\n\n" + "\n".join(lines) + "\n\nWhat the conversion checked is that the converted model computes "
        "what the research code computes: the same pair logits and the same decoded relations on the same documents."
    )


def _conversion_procedure(conversion: Mapping[str, Any], settings_table: str) -> str:
    return (f"Converted from the research checkpoint `{conversion['source']}` with:\n\n```bash\n"
            f"{conversion['command']}\n```\n\nThe settings that make it compute what the research code computes "
            "(`window_scheme`, `max_document_length`, `word_prefix_space`, `max_relations_per_pair`) are in "
            f"`config.json`:\n\n{settings_table}")


def _windows_sentence(config: Mapping) -> str:
    """How documents longer than the encoder's window are read, for this model's settings."""
    limit = config.get("max_document_length")
    cut = f" Documents are cut to their first {limit} subwords (mentions past the cut are dropped)." if limit else ""
    if config.get("window_scheme") == "atlop":
        return ("Documents longer than the encoder's window are read as ATLOP's research code reads them: a first and "
                f"a last window, averaged where they overlap.{cut}")
    return f"Documents longer than the encoder's window are read in overlapping windows.{cut}"


def _score_sentence(config: Mapping) -> str:
    """What `score` means and how relations are picked, for this model's loss and decoding settings."""
    if decision_threshold(config.get("loss", "pemscl")) == "global":
        score = ("`score` is sigmoid(f_r), the logistic of the relation's logit (this model was trained with a "
                 "binary cross-entropy loss, whose threshold is a global 0)")
    else:
        score = ("`score` is sigmoid(f_r - f_NA), the logistic of the relation's logit margin over the pair's "
                 "threshold logit")
    limit = config.get("max_relations_per_pair", 4)
    most = f", at most {limit} per entity pair" if limit else " (no limit per entity pair)"
    return f"{score}; a relation is predicted when its score is above 0.5{most}."


__all__ = ["TEMPLATE_PATH", "generate_model_card", "read_results", "write_model_card"]
