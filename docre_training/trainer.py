"""`DocRETrainer`: a `transformers.Trainer` that trains PEMSCL and always evaluates with the DocRED metrics."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
from huggingface_hub import HfApi
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput, HubStrategy, PredictionOutput, SaveStrategy
from transformers.utils import PushInProgress

from model_cards import write_model_card
from modeling_pemscl import decision_threshold, relation_margins

from .hub import HUB_IGNORE_PATTERNS, check_hub_folder, copy_hub_folder, default_model_id
from .metrics import TRAIN_REFERENCE_FILE, official_scores, reference_documents

logger = logging.getLogger(__name__)

LOSS_TERMS = ("pmt_loss", "entropy_loss", "contrastive_loss", "evidence_loss")
# Columns the evaluation needs beside the model inputs: mention names for Ign F1, titles for the output file.
EVALUATION_COLUMNS = ("title", "vertexSet", "hts")


def _reference_rows(dataset):
    """The columns `documents_from_features` reads (labels where the split has them)."""
    return dataset.select_columns([c for c in (*EVALUATION_COLUMNS, "labels", "relation_evidence")
                                   if c in dataset.column_names])


def _rows_in_document_order(dataset):
    """The reference columns of an evaluation dataset (`DocRETrainer._scored_dataset`) in `document_index` order."""
    document_index = list(dataset["document_index"])
    return _reference_rows(dataset).select(sorted(range(len(document_index)), key=document_index.__getitem__))


def documents_from_features(rows: Sequence[Mapping[str, Any]], id2label: Mapping[int, str]) -> list[dict]:
    """DocRED-format documents (title, vertexSet, labels as h/t/r) rebuilt from featurized rows.

    The featurized `labels` (one multi-hot row per pair of `hts`) are the training labels as the model saw
    them, after any label dropping: the right reference for Ign F1 and for the relation frequency ranking. Each
    label carries its gold `evidence` where the rows have `relation_evidence`.
    """
    documents = []
    for row in rows:
        evidence = defaultdict(list)
        for pair_row, column, sentence in row.get("relation_evidence") or []:
            evidence[pair_row, column].append(sentence)
        labels = []
        for pair_row, ((head, tail), label_row) in enumerate(zip(row["hts"], row.get("labels") or [])):
            for index, flag in enumerate(label_row):
                if flag and index != 0:
                    label = {"h": head, "t": tail, "r": id2label[index]}
                    if "relation_evidence" in row:
                        label["evidence"] = sorted(evidence.get((pair_row, index), []))
                    labels.append(label)
        documents.append({"title": row["title"], "vertexSet": row["vertexSet"], "labels": labels})
    return documents


def is_complete_checkpoint(folder: str) -> bool:
    """A checkpoint the Trainer finished writing: `trainer_state.json` (written last) is there and parses, and so
    are the weights. A kill while saving leaves a folder without one of them."""
    state = os.path.join(folder, "trainer_state.json")
    weights = [os.path.join(folder, name) for name in ("model.safetensors", "model.safetensors.index.json")]
    if not os.path.isfile(state) or not any(os.path.isfile(path) for path in weights):
        return False
    try:
        with open(state, encoding="utf-8") as file:
            json.load(file)
    except (OSError, ValueError):
        return False
    return True


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` that `is_complete_checkpoint`; torn newer ones are
    skipped with a warning. None when there is none."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.rsplit("-", 1)[1]), name) for name in os.listdir(output_dir)
        if name.startswith("checkpoint-") and name.rsplit("-", 1)[1].isdigit()
        and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        if is_complete_checkpoint(folder):
            return folder
        logger.warning("Skipping %s: it is incomplete (the run was stopped while saving it).", folder)
    return None


def write_json_atomically(payload: Any, path: str) -> None:
    """Write JSON to a temporary file in the same folder, then rename: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(json.dumps(payload))  # one C-encoded string: json.dump encodes chunk by chunk in Python
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def check_evidence_labels(train_dataset) -> None:
    """Refuse a training set without any gold evidence for `evidence_weight > 0`; log how many documents have none
    (the evidence term skips them, their relations train as usual)."""
    columns = getattr(train_dataset, "column_names", None)
    if columns is None:  # columns unknown ahead of training
        return
    if "relation_evidence" not in columns:
        raise ValueError("evidence_weight > 0 needs evidence labels, but the training set has no `relation_evidence` "
                         "column: featurize it with data_collators.featurize_dataset (it reads each label's "
                         "`evidence`), or train with evidence_weight 0.")
    if not hasattr(train_dataset, "__len__"):  # an iterable dataset: its documents cannot be counted ahead
        return
    without = sum(not evidence for evidence in train_dataset["relation_evidence"])
    if without == len(train_dataset):
        raise ValueError(f"evidence_weight > 0 needs evidence labels, but none of the {without} training documents "
                         "has a label with `evidence` sentences: give the labels their `evidence` (the indices of the "
                         "sentences that support them, as DocRED's labels have), or train with evidence_weight 0.")
    if without:
        logger.info("%d of %d training documents have no evidence labels: the evidence term skips them (their "
                    "relations train as usual).", without, len(train_dataset))


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
        sort_eval_by_length: batch evaluation and prediction documents by length, longest first (less
            padding); outputs come back in dataset order either way.
        model_card_kwargs: the run's other arguments for the model card (`data_args`, `model_args`: see
            `model_cards.generate_model_card`).
        **kwargs: passed to `Trainer` (`data_collator`, `callbacks`, `compute_metrics`, ...).
    """

    # How a user gives the training documents, named in the metric's warning when there are none; a script
    # replaces it with its own flags.
    train_documents_hint = "DocRETrainer(train_documents=...) or a train_dataset"

    def __init__(
        self,
        model=None,
        args: TrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        head_learning_rate: float | None = None,
        train_documents: Sequence[Mapping[str, Any]] | None = None,
        sort_eval_by_length: bool = True,
        model_card_kwargs: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        # The trainer works on a copy of `args`: the collator reads index columns the model signature lacks
        # (`remove_unused_columns=False`), and checkpoint pushes are this trainer's (`CheckpointHubPush`), because
        # the Trainer's own has no ignore patterns and uploads `training_args.bin`, a pickle.
        # The DocRED metrics are always computed (`evaluation_loop`); a user's compute_metrics gets the
        # official-format predictions and its results are merged in.
        self.user_compute_metrics = kwargs.pop("compute_metrics", None)
        super().__init__(model=model, args=copy.copy(args), train_dataset=train_dataset, eval_dataset=eval_dataset,
                         **kwargs)
        self.hub_strategy = HubStrategy(self.args.hub_strategy)
        self.args.remove_unused_columns = False
        self.args.hub_strategy = HubStrategy.END
        self.add_callback(CheckpointHubPush(self))
        self.sort_eval_by_length = sort_eval_by_length
        if hasattr(self.model, "model_card_data"):  # the card the model renders on every save_pretrained
            self.model.model_card_data.update(training_args=self.args, **dict(model_card_kwargs or {}))
        self.head_learning_rate = head_learning_rate if head_learning_rate is not None else 5 * self.args.learning_rate
        self.model_accepts_loss_kwargs = False  # the model averages its loss over pairs itself
        self._train_documents = list(train_documents) if train_documents is not None else None
        self._loss_term_sums: dict[str, float] = defaultdict(float)
        self._loss_term_count = 0
        if train_dataset is not None and getattr(getattr(self.model, "config", None), "evidence_weight", 0) > 0:
            check_evidence_labels(train_dataset)

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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`: the final model all or nothing (`save_final_model`), then, with `push_to_hub`,
        a push (`push_to_hub`). Checkpoints (`_internal_call`) are saved by the Trainer as usual."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        self.save_final_model(output_dir)
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def save_final_model(self, output_dir: str | None = None) -> None:
        """Save the model (weights, config, tokenizer) to `output_dir` all or nothing, and push nothing: the files are
        written to a temporary folder beside `output_dir`, then moved in, the weights last. A kill while saving leaves
        the previous files or a folder without weights (a clear loading error), never weights without their
        tokenizer and config."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:  # other processes still take part in gathering a sharded state dict
            return super().save_model(output_dir, _internal_call=True)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(dir=output_dir, prefix=".saving-")
        try:
            super().save_model(staging, _internal_call=True)
            weights = {"model.safetensors", "model.safetensors.index.json"}
            names = sorted(os.listdir(staging), key=lambda name: (name in weights or name.startswith("model-"), name))
            for name in names:
                target = os.path.join(output_dir, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                os.replace(os.path.join(staging, name), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def save_train_reference(self, output_dir: str | None = None) -> None:
        """Write the training facts beside the saved model (`TRAIN_REFERENCE_FILE`: titles, entity names and
        triples), so that evaluating it later without its training file still reports Ign F1 and head / mid / tail
        F1 (`run_docre.py` reads it back)."""
        documents = self._train_reference_documents()
        if documents and self.args.should_save:
            path = os.path.join(output_dir if output_dir is not None else self.args.output_dir, TRAIN_REFERENCE_FILE)
            write_json_atomically(reference_documents(documents), path)

    # ------------------------------------------------------------ Hub
    # Pushes keep the Trainer's machinery: `init_hf_repo` at start (with --push_to_hub), `push_checkpoint` at each
    # save as `hub_strategy` says (through the `on_save` hook), `push_to_hub` at the end, `on_push_begin` callbacks,
    # background uploads awaited before the last one. What differs is the folder (docre_training.hub): the
    # pipeline's remote code and our model card go in, pickles (training_args.bin) and predictions stay out.

    def create_model_card(self, **kwargs) -> None:
        """Write this project's model card (`model_cards.generate_model_card`: the DocRE scores of
        `all_results.json`, the run's settings, the pipeline call) to `output_dir/README.md`, in place of the
        Trainer's generic one. The Trainer's own arguments (`language`, `tags`, `model_name`, ...) are not used."""
        if not self.is_world_process_zero():
            return
        self.model.model_card_data.update(model_id=self.hub_model_id or default_model_id(self.args))
        write_model_card(self.args.output_dir, self.model)

    def _write_hub_files(self) -> list[str]:
        """Make `output_dir`, which holds a saved model, the Hub folder; returns the files a push uploads.

        Its `config.json` then carries `custom_pipelines`, so `pipeline(...)` on the folder needs
        `trust_remote_code=True` (or `pipeline_class=`), as on the Hub."""
        self.create_model_card()
        self.model.save_pipeline_code(self.args.output_dir)
        return check_hub_folder(self.args.output_dir)

    def _upload(self, folder: str, commit_message: str, blocking: bool, path_in_repo: str | None = None,
                ignore_patterns=HUB_IGNORE_PATTERNS, token: str | None = None, revision: str | None = None):
        return HfApi().upload_folder(
            repo_id=self.hub_model_id, folder_path=folder, path_in_repo=path_in_repo, commit_message=commit_message,
            token=token if token is not None else self.args.hub_token, run_as_future=not blocking,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
            revision=revision if revision is not None else self.args.hub_revision,
        )

    def write_hub_folder(self, destination: str) -> list[str]:
        """The dry run of `push_to_hub`: save the model, make `output_dir` the Hub folder, and copy exactly the
        files a push would upload into the empty folder `destination`. Nothing contacts the Hub.

        Returns:
            The files written (relative paths, sorted).
        """
        self.save_final_model()
        if not self.is_world_process_zero():
            return []
        self._write_hub_files()
        return copy_hub_folder(self.args.output_dir, destination)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """`Trainer.push_to_hub` with the Hub folder of `docre_training.hub`: the model is saved to `output_dir`
        with the pipeline's remote code and this project's card, and `output_dir` is uploaded without pickles,
        checkpoints or predictions (after any checkpoint push still in flight)."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_final_model()
        if not self.is_world_process_zero():
            return None
        self._write_hub_files()
        if self.push_in_progress is not None:  # checkpoint uploads first
            self.push_in_progress.wait_until_done()
        return self._upload(self.args.output_dir, commit_message, blocking, token=token, revision=revision)

    def push_checkpoint(self, checkpoint_folder: str) -> None:
        """Push at a checkpoint save, in the background, as `hub_strategy` says (every_save / checkpoint /
        all_checkpoints): the checkpoint's model becomes `output_dir`'s, which is uploaded as the Hub folder (card
        without final scores); with `checkpoint` / `all_checkpoints` the whole checkpoint folder, optimizer state
        included as the Trainer writes it, goes to `last-checkpoint/` / `checkpoint-N/` for resuming."""
        if not self.is_world_process_zero() or self.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return  # the previous upload is still running
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        output_dir = self.args.output_dir
        for name in os.listdir(checkpoint_folder):
            if name == "config.json" or name.endswith(".py") or (name.startswith("model") and ".safetensors" in name):
                shutil.copyfile(os.path.join(checkpoint_folder, name), os.path.join(output_dir, name))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        self._write_hub_files()
        if self.args.save_strategy == SaveStrategy.STEPS:
            commit_message = f"Training in progress, step {self.state.global_step}"
        else:
            commit_message = f"Training in progress, epoch {int(self.state.epoch)}"
        jobs = [self._upload(output_dir, commit_message, blocking=False)]
        if self.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            path_in_repo = ("last-checkpoint" if self.hub_strategy == HubStrategy.CHECKPOINT
                            else os.path.basename(os.path.normpath(checkpoint_folder)))
            jobs.append(self._upload(checkpoint_folder, commit_message + ", checkpoint", blocking=False,
                                     path_in_repo=path_in_repo, ignore_patterns=None))
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    # ------------------------------------------------------------ evaluation
    # Evaluation and prediction run through the Trainer's own `evaluation_loop` (progress bar, `*_runtime` and
    # `*_samples_per_second`, callbacks, several eval datasets): `prediction_step` decodes each batch into a
    # padded [B, F, 5] tensor of facts; `evaluation_loop` turns the gathered facts into official-format predictions
    # and scores them against the documents of its dataloader.

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Decoded facts of a batch, per document: `(None, facts, document_index)`.

        `facts` is float64 [B, F, 5], one row `(document_index, head, tail, label index, margin)` per predicted
        relation, padded with -100 (F = most facts of a document in the batch); `margin` is the logit margin over
        the decoding threshold (`modeling_pemscl.relation_margins`). The evaluation loss is not computed
        (the contrastive term over every pair of an evaluation batch would cost more than the prediction).
        """
        inputs = self._prepare_inputs(inputs)
        document_index = inputs.pop("document_index", None)
        if document_index is None:
            raise ValueError("DocRETrainer.prediction_step needs `document_index` in the batch; evaluate through "
                             "DocRETrainer.evaluate / predict, which add it.")
        inputs.pop("labels", None)
        if prediction_loss_only:
            return None, None, None
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs, return_predictions=True)
        facts = decoded_facts(outputs.logits, outputs.predictions, inputs["hts"], inputs["pair_document_index"],
                              document_index, model.config.loss)
        if outputs.evidence_predictions is None:
            return None, facts, document_index
        evidence = decoded_evidence(outputs.predictions, outputs.evidence_predictions, inputs["hts"],
                                    inputs["pair_document_index"], document_index)
        return None, (facts, evidence), document_index

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """`Trainer.evaluation_loop`, then the DocRE results: `predictions` are the official-format facts (written
        atomically to `output_dir/predictions_{prefix}.json`), `metrics` the DocRED scores (when the documents
        have labels) merged with the user's `compute_metrics`, prefixed like the Trainer's."""
        output = super().evaluation_loop(dataloader, description, False, ignore_keys, metric_key_prefix)
        rows = _rows_in_document_order(dataloader.dataset)
        facts, evidence = (output.predictions if isinstance(output.predictions, (tuple, list))
                           else (output.predictions, None))
        predictions = official_predictions(facts, list(rows["title"]), self.model.config.id2label, evidence)
        if self.is_world_process_zero():
            write_json_atomically(predictions, os.path.join(self.args.output_dir,
                                                            f"predictions_{metric_key_prefix}.json"))
        metrics = dict(output.metrics)
        for name, value in self._docred_metrics(predictions, rows, metric_key_prefix).items():
            metrics[f"{metric_key_prefix}_{name}"] = value
        return EvalLoopOutput(predictions=predictions, label_ids=None, metrics=metrics, num_samples=output.num_samples)

    def _train_reference_documents(self):
        if self._train_documents is None and self.train_dataset is not None:
            self._train_documents = documents_from_features(
                _reference_rows(self.train_dataset), self.model.config.id2label
            )
        return self._train_documents

    def _scored_dataset(self, dataset):
        """`dataset` with a `document_index` column (the row each batch's facts go back to), sorted by length."""
        if isinstance(dataset, str):  # Trainer.evaluate passes the names of a dict of eval datasets
            dataset = self.eval_dataset[dataset]
        if dataset is None:
            raise ValueError("DocRETrainer.evaluate needs an eval_dataset.")
        missing = [column for column in EVALUATION_COLUMNS if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The evaluation dataset lacks the columns {missing}; featurize it with "
                "data_collators.featurize_dataset, which keeps them."
            )
        if "document_index" in dataset.column_names:
            dataset = dataset.remove_columns("document_index")
        indexed = dataset.add_column("document_index", list(range(dataset.num_rows)))
        if not self.sort_eval_by_length:
            return indexed
        # Batches of similar lengths waste little on padding; longest first, so the memory peak comes early.
        # Facts carry their document_index, so predictions and scores come back in dataset order.
        lengths = (list(dataset["length"]) if "length" in dataset.column_names
                   else [len(ids) for ids in dataset["input_ids"]])
        return indexed.select(sorted(range(len(lengths)), key=lambda row: (-lengths[row], row)))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """DocRE evaluation over all pairs through `Trainer.evaluate`: the official DocRED metrics prefixed with
        `metric_key_prefix` (`eval_f1`, `eval_ign_f1`, ...) next to the Trainer's runtime metrics, and the
        predictions written to `output_dir/predictions_{prefix}.json`. A dict of datasets evaluates each one
        (`eval_{name}_f1`, ...)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        return super().evaluate(self._scored_dataset(dataset), ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Predictions on `test_dataset` through `Trainer.predict`: a `PredictionOutput` whose `predictions`
        are the official-format facts (`{"title", "h_idx", "t_idx", "r", "score", "margin"}`: see
        `modeling_pemscl.relation_margins`; also written to `output_dir/predictions_{prefix}.json`), `label_ids`
        None, and `metrics` with the DocRED scores when the dataset has labels (besides the runtime metrics)."""
        return super().predict(self._scored_dataset(test_dataset), ignore_keys, metric_key_prefix)

    def _docred_metrics(self, predictions: list[dict], rows, prefix: str) -> dict[str, float]:
        """The DocRED scores of `predictions` against `rows` (none without labels), merged with the user's
        `compute_metrics`."""
        if "labels" not in rows.column_names:
            return {}
        scores = official_scores(
            predictions,
            documents_from_features(rows, self.model.config.id2label),
            train_documents=self._train_reference_documents(),
            relation_vocabulary=[label for index, label in sorted(self.model.config.id2label.items()) if index],
            train_documents_hint=self.train_documents_hint,
        )
        if not predictions and self.state.global_step > 0 and scores["num_gold"]:
            # A run can predict NA for every pair for whole epochs; say so instead of a silent F1 of 0.
            logger.warning(
                "%s after %d training steps: the model predicts NA for every one of the %d pairs. Early in "
                "training this is expected; if it lasts past the second epoch, see `relation_bias_init` (the NA "
                "prior, on by default) in PemsclConfig.", prefix, self.state.global_step,
                sum(len(hts) for hts in rows["hts"]))
        if self.user_compute_metrics is not None:
            scores.update(self.user_compute_metrics(predictions))
        return scores


class CheckpointHubPush(TrainerCallback):
    """Calls `DocRETrainer.push_checkpoint` after each checkpoint save (the Trainer's `on_save` hook)."""

    def __init__(self, trainer: "DocRETrainer"):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if args.push_to_hub:
            self.trainer.push_checkpoint(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))


def _rows_per_document(values: torch.Tensor, document: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Rows `values` [N, C] (grouped by their batch `document`, non-decreasing) laid out as [B, F, C], each document's
    rows first in its slot, padded with -100 (F = most rows of a document)."""
    counts = torch.bincount(document, minlength=batch_size)
    width = int(counts.max()) if counts.numel() and document.numel() else 0
    out = torch.full((batch_size, width, values.shape[1]), -100, dtype=values.dtype, device=values.device)
    if document.numel():
        rank = torch.arange(document.numel(), device=values.device) - (torch.cumsum(counts, 0) - counts)[document]
        out[document, rank] = values
    return out


def decoded_facts(logits, predictions, hts, pair_document_index, document_index, loss_kind: str) -> torch.Tensor:
    """Decoded relations as padded per-document fact rows (see `DocRETrainer.prediction_step`)."""
    margins = relation_margins(logits, decision_threshold(loss_kind))
    pair, column = predictions[:, 1:].nonzero(as_tuple=True)
    document = pair_document_index[pair]
    values = torch.stack([document_index[document].double(), hts[pair, 0].double(), hts[pair, 1].double(),
                          (column + 1).double(), margins[pair, column].double()], dim=1)
    return _rows_per_document(values, document, document_index.shape[0])


def decoded_evidence(predictions, evidence_predictions, hts, pair_document_index, document_index) -> torch.Tensor:
    """Evidence sentences of the pairs with a predicted relation as padded per-document rows: int64 [B, F, 4], one
    row `(document_index, head, tail, sentence)` per evidence sentence, padded with -100."""
    pair, sentence = (evidence_predictions & ~predictions[:, :1]).nonzero(as_tuple=True)
    document = pair_document_index[pair]
    values = torch.stack([document_index[document], hts[pair, 0], hts[pair, 1], sentence], dim=1)
    return _rows_per_document(values, document, document_index.shape[0])


def official_predictions(facts, titles: Sequence[str], id2label: Mapping[int, str], evidence=None) -> list[dict]:
    """Fact rows gathered over the evaluation (numpy [N, F, 5], -100 padding) -> official-format predictions in
    dataset order; a document seen twice (padding of the last distributed batch) counts once. With `evidence`
    (rows of `decoded_evidence`, numpy [N, F2, 4]) every prediction carries its pair's sorted `evidence` sentences."""
    import numpy as np

    rows = np.asarray(facts, dtype=np.float64).reshape(-1, 5)
    rows = rows[rows[:, 0] >= 0]
    sentences = None
    if evidence is not None:
        sentences = defaultdict(set)
        for document, head, tail, sentence in np.asarray(evidence, dtype=np.int64).reshape(-1, 4).tolist():
            if document >= 0:
                sentences[document, head, tail].add(sentence)
    seen, predictions = set(), []
    for document, head, tail, label, margin in sorted(rows.tolist(), key=lambda row: row[0]):
        key = (int(document), int(head), int(tail), int(label))
        if key in seen:
            continue
        seen.add(key)
        prediction = {"title": titles[key[0]], "h_idx": key[1], "t_idx": key[2], "r": id2label[key[3]],
                      "score": round(1.0 / (1.0 + math.exp(-margin)), 6), "margin": round(margin, 4)}
        if sentences is not None:
            prediction["evidence"] = sorted(sentences.get(key[:3], ()))
        predictions.append(prediction)
    return predictions
