"""`DocRETrainer`: a `transformers.Trainer` that trains PEMSCL and always evaluates with the DocRED metrics."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
from transformers import Trainer, TrainingArguments

from .metrics import official_scores

logger = logging.getLogger(__name__)

LOSS_TERMS = ("pmt_loss", "entropy_loss", "contrastive_loss")
# Columns the evaluation needs beside the model inputs: mention names for Ign F1, titles for the output file.
EVALUATION_COLUMNS = ("title", "vertexSet", "hts")


def _reference_rows(dataset):
    """The columns `documents_from_features` reads (labels where the split has them)."""
    return dataset.select_columns([c for c in (*EVALUATION_COLUMNS, "labels") if c in dataset.column_names])


def documents_from_features(rows: Sequence[Mapping[str, Any]], id2label: Mapping[int, str]) -> list[dict]:
    """DocRED-format documents (title, vertexSet, labels as h/t/r) rebuilt from featurized rows.

    The featurized `labels` (one multi-hot row per pair of `hts`) are the training labels as the model saw
    them, after any label dropping: the right reference for Ign F1 and for the relation frequency ranking.
    """
    documents = []
    for row in rows:
        labels = []
        for (head, tail), label_row in zip(row["hts"], row.get("labels") or []):
            for index, flag in enumerate(label_row):
                if flag and index != 0:
                    labels.append({"h": head, "t": tail, "r": id2label[index]})
        documents.append({"title": row["title"], "vertexSet": row["vertexSet"], "labels": labels})
    return documents


def write_json_atomically(payload: Any, path: str) -> None:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class DocRETrainer(Trainer):
    """Trainer for document-level relation extraction with a [`PemsclModel`].

    On top of `Trainer` it
    - keeps the dataset columns the collator needs (`remove_unused_columns=False`, set for you),
    - gives the new head layers their own learning rate (`head_learning_rate`, ATLOP: 1e-4 vs 2e-5),
    - logs the loss terms (`pmt_loss`, `entropy_loss`, `contrastive_loss`) next to `loss`,
    - evaluates over all entity pairs of every document with the official DocRED metrics (precision, recall,
      F1, Ign F1, head / mid / tail F1), merged with any `compute_metrics` of the user, and writes the
      predictions in the official submission format to `output_dir/predictions_{split}.json`.

    Args:
        model: a `PemsclModel`.
        args: `TrainingArguments`.
        train_dataset / eval_dataset: featurized datasets (`data_collators.featurize_dataset`) that keep the
            `title` and `vertexSet` columns.
        head_learning_rate: learning rate of the head layers (default: 5x `args.learning_rate`, ATLOP's ratio).
        train_documents: DocRED-format training documents for Ign F1 and the relation frequency ranking;
            default: rebuilt from `train_dataset`.
        **kwargs: passed to `Trainer` (`data_collator`, `callbacks`, `compute_metrics`, ...).
    """

    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        head_learning_rate: float | None = None,
        train_documents: Sequence[Mapping[str, Any]] | None = None,
        **kwargs,
    ):
        if args is not None and args.remove_unused_columns:
            args.remove_unused_columns = False  # the collator reads index columns the model signature lacks
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self.head_learning_rate = head_learning_rate if head_learning_rate is not None else 5 * self.args.learning_rate
        self.model_accepts_loss_kwargs = False  # the model averages its loss over pairs itself
        self._train_documents = list(train_documents) if train_documents is not None else None
        self._loss_term_sums: dict[str, float] = defaultdict(float)
        self._loss_term_count = 0

    # ------------------------------------------------------------ training
    def create_optimizer(self, model=None):
        """AdamW with two learning rates: the pretrained encoder's and the new head's."""
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        head_names = set(model.head_parameter_names())
        decay_names = set(self.get_decay_parameter_names(model))
        groups = defaultdict(list)
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups[(name in head_names, name in decay_names)].append(parameter)
        parameter_groups = [
            {
                "params": parameters,
                "lr": self.head_learning_rate if is_head else self.args.learning_rate,
                "weight_decay": self.args.weight_decay if decays else 0.0,
            }
            for (is_head, decays), parameters in sorted(groups.items())
        ]
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_class(parameter_groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError("The batch has no `labels`: DocRETrainer trains on labelled documents only.")
        if model.training:
            for name in LOSS_TERMS:
                value = getattr(outputs, name)
                if value is not None:
                    self._loss_term_sums[name] += float(value.detach())
            self._loss_term_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Adds the mean of each loss term since the last log to the training logs.

        Under torch.distributed each process holds its own share of the terms (scaled so that their mean over
        processes is the global-batch term, like `loss`); they are averaged over processes here. Every process
        calls `log` with the training `loss` (the Trainer gathers `loss` just before), so the collective is safe.
        """
        if "loss" in logs and self._loss_term_count:
            present = [name for name in LOSS_TERMS if name in self._loss_term_sums]
            means = [self._loss_term_sums[name] / self._loss_term_count for name in present]
            if self.args.world_size > 1 and present:
                # Every process has the same terms (they depend on the config only).
                means = self.accelerator.reduce(
                    torch.tensor(means, dtype=torch.float32, device=self.args.device), reduction="mean"
                ).tolist()
            for name, value in zip(present, means):
                logs[name] = round(value, 4)
            self._loss_term_sums.clear()
            self._loss_term_count = 0
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_documents(self, dataset) -> list[list[dict]]:
        """Decoded relations of every document of `dataset`, in dataset order.

        Returns:
            per document, a list of `{"h_idx", "t_idx", "r", "score"}` with `r` the relation label
            (Wikidata id) and `score` the logit margin over the decoding threshold (the pair's NA logit; 0 for
            the `"bce"` loss).
        """
        model = self.model
        model.eval()
        id2label = model.config.id2label
        dataloader = self.get_eval_dataloader(dataset)
        per_document: list[list[dict]] = []
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            batch.pop("labels", None)
            with self.compute_loss_context_manager():
                outputs = model(**batch, return_predictions=True)
            logits = outputs.logits.float()
            # The margin over the threshold `decode` used: the NA logit, or 0 for the "bce" baseline.
            scores = (logits if model.config.loss == "bce" else logits - logits[:, :1]).cpu()
            predictions = outputs.predictions.cpu()
            hts = batch["hts"].cpu()
            documents = batch["pair_document_index"].cpu()
            batch_facts: list[list[dict]] = [[] for _ in range(batch["input_ids"].shape[0])]
            pair_index, label_index = predictions[:, 1:].nonzero(as_tuple=True)
            for p, label in zip(pair_index.tolist(), (label_index + 1).tolist()):
                head, tail = hts[p].tolist()
                batch_facts[int(documents[p])].append(
                    {"h_idx": head, "t_idx": tail, "r": id2label[label], "score": round(float(scores[p, label]), 4)}
                )
            per_document.extend(self.accelerator.gather_for_metrics(batch_facts, use_gather_object=True))
        return per_document

    def _train_reference_documents(self):
        if self._train_documents is None and self.train_dataset is not None:
            self._train_documents = documents_from_features(
                _reference_rows(self.train_dataset), self.model.config.id2label
            )
        return self._train_documents

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """DocRE evaluation over all pairs: metrics prefixed with `metric_key_prefix` (`eval_f1`,
        `eval_ign_f1`, ...), logged, and the predictions written to `output_dir/predictions_{split}.json`."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("DocRETrainer.evaluate needs an eval_dataset.")
        missing = [column for column in EVALUATION_COLUMNS if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The evaluation dataset lacks the columns {missing}; featurize it with "
                "data_collators.featurize_dataset, which keeps them."
            )
        metrics, _ = self._evaluate_dataset(dataset, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Predictions on `test_dataset` (written to `output_dir/predictions_{prefix}.json`) and, when it has
        labels, the metrics. Returns `(predictions, metrics)`; predictions are official-format dicts."""
        metrics, predictions = self._evaluate_dataset(test_dataset, metric_key_prefix)
        if metrics:
            self.log(metrics)
        return predictions, metrics

    def _evaluate_dataset(self, dataset, prefix: str):
        per_document = self.predict_documents(dataset)
        rows = _reference_rows(dataset)
        predictions = [
            {"title": title, **fact} for title, facts in zip(rows["title"], per_document) for fact in facts
        ]
        if self.is_world_process_zero():
            write_json_atomically(predictions, os.path.join(self.args.output_dir, f"predictions_{prefix}.json"))
        metrics: dict[str, float] = {}
        if "labels" in rows.column_names:
            scores = official_scores(
                predictions,
                documents_from_features(rows, self.model.config.id2label),
                train_documents=self._train_reference_documents(),
                relation_vocabulary=[label for index, label in sorted(self.model.config.id2label.items()) if index],
            )
            if self.compute_metrics is not None:
                scores.update(self.compute_metrics(predictions))
            metrics = {f"{prefix}_{name}": value for name, value in scores.items()}
        return metrics, predictions
