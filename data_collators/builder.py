"""A `datasets` builder for DocRED-format JSON (DocRED, Re-DocRED), with the noisy-annotation regimes of the paper.

Sources, in order of precedence:

1. `data_files`: explicit files per split, e.g. `{"train": ".../dev_revised.json", "test": ".../test_revised.json"}`
   (any split names; the split named `train` is the one the label regimes act on).
2. `data_dir`: a folder holding the files as shipped. Re-DocRED: `train_revised.json`, `dev_revised.json`,
   `test_revised.json`; DocRED: `train_annotated.json`, `dev.json`, `test.json` (or `test_unlabeled.json`).
   They become the splits `train`, `validation`, `test`; a missing file is simply an absent split.
3. Neither: the public files are downloaded. Re-DocRED comes from the Hugging Face Hub dataset
   `tonytan48/Re-DocRED` through `huggingface_hub` (cached; `hub_revision` pins the commit, by default the
   one this project was tested with; `HF_HUB_OFFLINE=1` reads the cache only), see `hub_data.py`. DocRED's
   official files only exist on the authors' Google Drive (the thunlp/DocRED GitHub repository has no data
   files, only a link), so the `docred` configuration downloads the Drive files the DocRED README links to
   through the download manager; Google Drive may refuse automated downloads (quota, confirmation pages), in
   which case download them by hand and pass `data_dir`. DocRED's distantly supervised `train_distant.json`
   is never downloaded; pass it through `data_files`.

The relation vocabulary (for validating relation ids and filling `relation_text`) is read from `rel2id_file` /
`rel_info_file`, else from `rel2id.json` / `rel_info.json` in `data_dir` or beside the first data file, else
it is the vocabulary built into the package for the configuration (DocRED's 96 relations, shared by
Re-DocRED: `RelationVocab.builtin`).

Label regimes of the paper (section 4.2), applied to the `train` split only; other splits are never touched:

- `train_labels_file`: take the training labels from another DocRED-format file whose documents are matched
  to the training documents by title (e.g. train on DocRED's original labels, evaluate on Re-DocRED's).
  Entities are matched by their mentions, so the two files may order or split entities differently;
  triples whose entities cannot be matched are left out with a warning.
- `label_drop_rate` / `label_drop_seed`: drop exactly `round(rate * n)` of the n training triples, chosen
  uniformly at random with the seed, which turns pairs into false NA as DocRED's incomplete annotation does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import datasets
from datasets import Features, List, Value
from datasets.exceptions import DatasetGenerationError

from .hub_data import REDOCRED_FILES, download_redocred
from .relations import RelationVocab
from .validation import (
    REQUIRED_KEYS,
    REQUIRED_LABEL_KEYS,
    REQUIRED_MENTION_KEYS,
    label_records,
    validate_document,
)

logger = logging.getLogger(__name__)

_CITATION = """\
@inproceedings{yao-etal-2019-docred,
  title = {{D}oc{RED}: A Large-Scale Document-Level Relation Extraction Dataset},
  author = {Yao, Yuan and Ye, Deming and Li, Peng and Han, Xu and Lin, Yankai and Liu, Zhenghao and Liu, Zhiyuan
            and Huang, Lixin and Zhou, Jie and Sun, Maosong},
  booktitle = {Proceedings of ACL},
  year = {2019}
}
@inproceedings{tan-etal-2022-revisiting,
  title = {Revisiting {D}oc{RED} - Addressing the False Negative Problem in Relation Extraction},
  author = {Tan, Qingyu and Xu, Lu and Bing, Lidong and Ng, Hwee Tou and Aljunied, Sharifah Mahani},
  booktitle = {Proceedings of EMNLP},
  year = {2022}
}
"""

_GOOGLE_DRIVE = "https://drive.google.com/uc?export=download&id={}"

FEATURES = Features(
    {
        "title": Value("string"),
        "sents": List(List(Value("string"))),
        "vertexSet": List(
            List(
                {
                    "name": Value("string"),
                    "sent_id": Value("int32"),
                    "pos": List(Value("int32")),
                    "type": Value("string"),
                }
            )
        ),
        # None for unlabelled documents (DocRED's test set); [] for a labelled document without relations.
        "labels": List(
            {
                "head": Value("int32"),
                "tail": Value("int32"),
                "relation_id": Value("string"),
                "relation_text": Value("string"),
                "evidence": List(Value("int32")),
            }
        ),
    }
)
"""Row features, close to the Hub's `docred` dataset (labels are a list of dicts, not a dict of lists)."""


@dataclass
class DocREDConfig(datasets.BuilderConfig):
    """Configuration of `DocREDBuilder`.

    Args:
        split_files: Split -> candidate file names looked up in `data_dir` (first existing one wins).
        urls: Split -> public download location, used when neither `data_files` nor `data_dir` is given.
        hub_files: Split -> file of the Hub dataset `tonytan48/Re-DocRED`, used instead of `urls` when set.
        hub_revision: Commit, tag or branch of that Hub dataset (default: the commit this project was tested
            with, `hub_data.REDOCRED_HUB_REVISION`).
        train_labels_file: DocRED-format JSON whose labels replace those of the `train` split, documents
            matched by title (the OOG / OGG regimes). Every training document must have a match.
        label_drop_rate: Fraction in [0, 1] of the `train` split's triples to drop (0 keeps them all).
        label_drop_seed: Seed of the drop.
        skip_invalid: Skip invalid documents (and training documents without a match in
            `train_labels_file`) with one warning per split that counts them, instead of raising.
        rel2id_file: `rel2id.json` (label indices, `Na` = 0) used to check relation ids.
        rel_info_file: `rel_info.json` (relation names) used to check relation ids and fill `relation_text`.
    """

    split_files: dict = field(default_factory=dict)
    urls: dict = field(default_factory=dict)
    hub_files: dict = field(default_factory=dict)
    hub_revision: Optional[str] = None
    train_labels_file: Optional[str] = None
    label_drop_rate: float = 0.0
    label_drop_seed: int = 0
    skip_invalid: bool = False
    rel2id_file: Optional[str] = None
    rel_info_file: Optional[str] = None

    def local_source_files(self) -> list[str]:
        """The local files this configuration reads (those that exist), for cache invalidation."""
        candidates = [self.train_labels_file, self.rel2id_file, self.rel_info_file]
        if self.data_files:
            candidates += [path for paths in self.data_files.values() for path in paths]
        if self.data_dir:
            names = [name for names in self.split_files.values() for name in names]
            candidates += [os.path.join(self.data_dir, name) for name in names + ["rel2id.json", "rel_info.json"]]
        return sorted({os.path.abspath(path) for path in candidates if path and os.path.isfile(path)})

    def create_config_id(self, config_kwargs: dict, custom_features: Optional[Features] = None) -> str:
        """The cache id of `datasets`, extended with the size and modification time of every local source
        file, so that editing a file (even one found through `data_dir`) rebuilds the cache."""
        config_id = super().create_config_id(config_kwargs, custom_features=custom_features)
        stats = [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in self.local_source_files()]
        if not stats:
            return config_id
        return f"{config_id}-{hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]}"


def document_to_row(document: dict, relation_names: Optional[dict] = None) -> dict:
    """Convert a valid raw DocRED JSON document to a row of `FEATURES` (the builder's output shape).

    Args:
        document: A document that passed `validate_document`.
        relation_names: Wikidata id -> relation name, for `relation_text` (empty strings when absent).

    Returns:
        The row: mentions keep `name`, `sent_id`, `pos`, `type` (extra keys such as Re-DocRED's `global_pos`
        are dropped); labels become `{head, tail, relation_id, relation_text, evidence}`, or `None` for an
        unlabelled document.
    """
    names = relation_names or {}
    records = label_records(document)
    return {
        "title": document["title"],
        "sents": document["sents"],
        "vertexSet": [
            [{key: mention[key] for key in REQUIRED_MENTION_KEYS} for mention in entity]
            for entity in document["vertexSet"]
        ],
        "labels": None
        if records is None
        else [
            {
                "head": head,
                "tail": tail,
                "relation_id": relation,
                "relation_text": names.get(relation, ""),
                "evidence": list(label.get("evidence") or []),
            }
            for (head, tail, relation, _), label in zip(records, document["labels"])
        ],
    }


def read_json_file(path: str) -> Any:
    """The content of a UTF-8 JSON file; text that is not UTF-8 or not JSON ends in a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); JSON files are read as "
                         "UTF-8.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}).") from None


def _read_documents(path: str) -> list[dict]:
    """The documents of a DocRED-format JSON file; every way it can be unreadable ends in a ValueError naming it."""
    documents = read_json_file(path)
    if not isinstance(documents, list):
        raise ValueError(f"{path}: expected a JSON list of DocRED-format documents, got {type(documents).__name__}")
    if not documents:
        raise ValueError(f"{path}: holds no documents (an empty list).")
    return documents


def _mention_keys(vertex_set: list) -> list[frozenset]:
    return [frozenset((m["sent_id"], m["pos"][0], m["pos"][1]) for m in entity) for entity in vertex_set]


def _match_entities(source_vertex_set: list, target_vertex_set: list) -> dict[int, int]:
    """Source entity index -> target entity index: same mention set, else the only entity sharing a mention."""
    source_keys, target_keys = _mention_keys(source_vertex_set), _mention_keys(target_vertex_set)
    if source_keys == target_keys:
        return {index: index for index in range(len(target_keys))}
    exact = {key: index for index, key in enumerate(target_keys)}
    owners: dict[tuple, set[int]] = {}
    for index, key in enumerate(target_keys):
        for mention in key:
            owners.setdefault(mention, set()).add(index)
    mapping = {}
    for index, key in enumerate(source_keys):
        if key in exact:
            mapping[index] = exact[key]
        else:
            candidates = set().union(*(owners.get(mention, set()) for mention in key))
            if len(candidates) == 1:
                mapping[index] = candidates.pop()
    return mapping


def invalid_documents(path: str, relation_ids=None) -> list[dict]:
    """`{"file", "document", "title", "problem"}` for every invalid document of a DocRED-format file (what
    `skip_invalid=True` leaves out), in file order.

    Raises:
        ValueError: If the file itself cannot be read (see `_read_documents`).
    """
    found = []
    for position, document in enumerate(_read_documents(path)):
        try:
            validate_document(document, relation_ids=relation_ids)
        except ValueError as error:
            title = document.get("title") if isinstance(document, dict) else None
            found.append({"file": path, "document": position, "title": title, "problem": str(error)})
    return found


class DocREDBuilder(datasets.GeneratorBasedBuilder):
    """`datasets` builder for DocRED-format JSON; see the module docstring for sources and label regimes.

    Configurations: `re-docred` (default) and `docred`. Use `load_docred` rather than this class directly.

    Example:
        ```python
        builder = DocREDBuilder(config_name="re-docred", data_dir="../shared/data/re-docred", cache_dir="cache")
        builder.download_and_prepare()
        splits = builder.as_dataset()  # DatasetDict with "validation" and "test"
        ```
    """

    REQUIRED_KEYS = REQUIRED_KEYS
    """Keys every document must have."""
    REQUIRED_MENTION_KEYS = REQUIRED_MENTION_KEYS
    """Keys every mention must have."""
    REQUIRED_LABEL_KEYS = REQUIRED_LABEL_KEYS
    """Keys every label must have."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = DocREDConfig
    BUILDER_CONFIGS = [
        DocREDConfig(
            name="re-docred",
            version=VERSION,
            description="Re-DocRED (Tan et al., 2022): DocRED documents with revised, far more complete labels.",
            split_files={
                "train": ("train_revised.json",),
                "validation": ("dev_revised.json",),
                "test": ("test_revised.json",),
            },
            hub_files=dict(REDOCRED_FILES),
        ),
        DocREDConfig(
            name="docred",
            version=VERSION,
            description="DocRED (Yao et al., 2019): human-annotated training, dev and (unlabelled) test documents.",
            split_files={
                "train": ("train_annotated.json",),
                "validation": ("dev.json",),
                "test": ("test.json", "test_unlabeled.json"),
            },
            urls={
                "train": _GOOGLE_DRIVE.format("1NN33RzyETbanw4Dg2sRrhckhWpzuBQS9"),
                "validation": _GOOGLE_DRIVE.format("1AHUm1-_V9GCtGuDcc8XrMUCJE8B-HHoL"),
                "test": _GOOGLE_DRIVE.format("1lAVDcD94Sigx7gR3jTfStI66o86cflum"),
            },
        ),
    ]
    DEFAULT_CONFIG_NAME = "re-docred"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("dataset_name", "pemscl_docred")
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.config.description,
            features=FEATURES,
            homepage="https://github.com/tonytan48/Re-DocRED",
            citation=_CITATION,
            license="MIT (Re-DocRED); DocRED: see https://github.com/thunlp/DocRED",
        )

    def _check_options(self) -> None:
        config = self.config
        if not 0.0 <= config.label_drop_rate <= 1.0:
            raise ValueError(f"label_drop_rate must be in [0, 1], got {config.label_drop_rate}.")
        if config.train_labels_file is not None and not os.path.isfile(config.train_labels_file):
            raise FileNotFoundError(f"train_labels_file {config.train_labels_file} does not exist.")

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        self._check_options()
        config = self.config
        if config.data_files:
            files = dl_manager.download({str(split): list(paths) for split, paths in config.data_files.items()})
            search_dirs = [config.data_dir] if config.data_dir else []
            search_dirs += [os.path.dirname(paths[0]) for paths in files.values() if paths]
        elif config.data_dir:
            files = {}
            for split, names in config.split_files.items():
                found = [os.path.join(config.data_dir, name) for name in names]
                found = [path for path in found if os.path.isfile(path)]
                if found:
                    files[split] = found[:1]
            if not files:
                expected = sorted(name for names in config.split_files.values() for name in names)
                raise FileNotFoundError(
                    f"{config.data_dir} holds none of the {config.name} files {expected}; pass data_files to name "
                    "the files explicitly."
                )
            search_dirs = [config.data_dir]
        elif config.hub_files:
            paths = download_redocred(list(config.hub_files.values()), revision=config.hub_revision)
            files = {split: [paths[name]] for split, name in config.hub_files.items()}
            search_dirs = []
        else:
            files = {split: [path] for split, path in dl_manager.download(dict(config.urls)).items()}
            search_dirs = []
        if "train" not in files and (config.train_labels_file or config.label_drop_rate):
            raise ValueError(
                f"train_labels_file and label_drop_rate act on the `train` split, but the sources have only "
                f"{sorted(files)}; name a training file, e.g. data_files={{'train': ..., 'test': ...}}."
            )
        vocab = self._relation_vocab(search_dirs)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"paths": paths, "split": split, "vocab": vocab})
            for split, paths in files.items()
        ]

    def _relation_vocab(self, search_dirs: list[str]) -> RelationVocab:
        """The vocabulary given as files, else one found beside the data, else the built-in one."""
        config = self.config
        if config.rel2id_file or config.rel_info_file:
            return RelationVocab.from_files(config.rel2id_file, config.rel_info_file)
        for directory in dict.fromkeys(search_dirs):
            try:
                return RelationVocab.from_dir(directory)
            except FileNotFoundError:
                continue
        return RelationVocab.builtin(config.name)

    def _valid_documents(
        self, documents: list[dict], split: str, vocab: Optional[RelationVocab], source: str
    ) -> list[dict]:
        """Validate and convert documents to rows; skip invalid ones (each named in one warning) if asked to.

        Raises:
            ValueError: For an invalid document (unless `skip_invalid`), naming the file, the document's position
                and title and the field; for two documents with one title (scores are keyed by title); and when
                every document was skipped.
        """
        relation_ids = vocab.rel2id if vocab is not None else None
        relation_names = vocab.names if vocab is not None else None
        rows, skipped, first_position = [], [], {}
        for position, document in enumerate(documents):
            try:
                validate_document(document, relation_ids=relation_ids)
            except ValueError as error:
                if not self.config.skip_invalid:
                    raise ValueError(f"{source}, document {position}: {error}") from None
                skipped.append(f"document {position}: {error}")
                continue
            title = document["title"]
            if title in first_position:
                raise ValueError(
                    f"{source}: documents {first_position[title]} and {position} have the same title {title!r}; "
                    "titles identify documents in predictions and scores, so each must be unique in a split."
                )
            first_position[title] = position
            rows.append(document_to_row(document, relation_names))
        if skipped:
            logger.warning(
                f"Skipped {len(skipped)} invalid document(s) of {len(documents)} in {source} (split '{split}', "
                "skip_invalid=True):\n  " + "\n  ".join(skipped)
            )
        if not rows:
            raise ValueError(f"{source}: every one of its {len(documents)} document(s) is invalid and was skipped "
                             f"(split '{split}'); the first problem: {skipped[0]}")
        unlabelled = [(position, row["title"]) for position, row in zip(first_position.values(), rows) if row["labels"] is None]
        if unlabelled and len(unlabelled) < len(rows):
            position, title = unlabelled[0]
            raise ValueError(
                f"{source}: {len(unlabelled)} of {len(rows)} documents have no `labels` while the others have, e.g. "
                f"document {position} {title!r}; a file must be all labelled (`labels: []` for a document without "
                "relations) or all unlabelled."
            )
        return rows

    def _replace_train_labels(self, rows: list[dict], vocab: Optional[RelationVocab]) -> list[dict]:
        path = self.config.train_labels_file
        sources: dict[str, list[dict]] = {}
        for source in self._valid_documents(_read_documents(path), "train", vocab, path):
            sources.setdefault(source["title"], []).append(source)
        replaced, unmatched, lost = [], [], 0
        for row in rows:
            candidates = sources.get(row["title"])
            if not candidates:
                unmatched.append(row["title"])
                continue
            source = candidates.pop(0)  # titles repeated in both files are matched in order
            if source["labels"] is None:
                raise ValueError(f"{path}: document {row['title']!r} has no `labels` to train on.")
            mapping = _match_entities(source["vertexSet"], row["vertexSet"])
            labels = []
            for label in source["labels"]:
                head, tail = mapping.get(label["head"]), mapping.get(label["tail"])
                if head is None or tail is None or head == tail:
                    lost += 1
                else:
                    labels.append({**label, "head": head, "tail": tail})
            replaced.append({**row, "labels": labels})
        if unmatched and not self.config.skip_invalid:
            raise ValueError(
                f"{len(unmatched)} training document(s) have no document with the same `title` in "
                f"train_labels_file {path}, e.g. {unmatched[:3]}; pass skip_invalid=True to leave them out."
            )
        if unmatched:
            logger.warning(
                f"Skipped {len(unmatched)} training document(s) without a `title` match in {path} (skip_invalid=True)."
            )
        if lost:
            logger.warning(
                f"{lost} triple(s) of {path} name entities that match no entity of the training documents "
                "(by mentions) and were left out."
            )
        return replaced

    def _drop_train_labels(self, rows: list[dict]) -> list[dict]:
        rate, seed = self.config.label_drop_rate, self.config.label_drop_seed
        triples = [(d, k) for d, row in enumerate(rows) for k in range(len(row["labels"] or ()))]
        num_dropped = round(rate * len(triples))
        dropped = {triples[i] for i in random.Random(seed).sample(range(len(triples)), num_dropped)}
        logger.info(
            f"label_drop_rate={rate}: dropping {num_dropped} of {len(triples)} training triples (seed {seed})."
        )
        return [
            row
            if row["labels"] is None
            else {**row, "labels": [label for k, label in enumerate(row["labels"]) if (d, k) not in dropped]}
            for d, row in enumerate(rows)
        ]

    def _generate_examples(
        self, paths: list[str], split: str, vocab: Optional[RelationVocab]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        rows = []
        for path in paths:
            rows += self._valid_documents(_read_documents(path), split, vocab, path)
        if split == "train":
            if self.config.train_labels_file:
                rows = self._replace_train_labels(rows, vocab)
            if self.config.label_drop_rate:
                rows = self._drop_train_labels(rows)
        yield from enumerate(rows)


def load_docred(
    name: str = "re-docred",
    data_dir: Optional[str] = None,
    data_files: Optional[Any] = None,
    cache_dir: Optional[str] = None,
    download_mode: Optional[str] = None,
    **config_kwargs,
) -> datasets.DatasetDict:
    """Build (or reuse from the cache) and return the splits of a DocRED-format dataset.

    Args:
        name: Configuration, `"re-docred"` or `"docred"` (decides the file names looked up in `data_dir` and
            the download locations).
        data_dir: Folder with the files as shipped (see the module docstring); relative `data_files` are
            resolved in it.
        data_files: Files per split, e.g. `{"train": "dev_revised.json", "test": "test_revised.json"}`.
        cache_dir: `datasets` cache folder (default `~/.cache/huggingface/datasets`).
        download_mode: `datasets.DownloadMode` value, e.g. `"force_redownload"` to rebuild the cache.
        **config_kwargs: Options of `DocREDConfig`: `train_labels_file`, `label_drop_rate`, `label_drop_seed`,
            `skip_invalid`, `rel2id_file`, `rel_info_file` (a custom vocabulary; default: the one beside the data,
            else the built-in DocRED one), `hub_revision` (the Re-DocRED Hub commit, for the download mode).

    Raises:
        ValueError: If a document is invalid (message names its title and field) and `skip_invalid` is False,
            a training document has no match in `train_labels_file`, or an option is out of range.
        FileNotFoundError: If `data_dir` holds none of the expected files, a named file is missing, or (download
            mode) Re-DocRED's files are neither cached nor downloadable (offline): the message says what to pass.

    Returns:
        A `DatasetDict` with one split per source file present (`train`, `validation`, `test` for a folder).
    """
    builder = DocREDBuilder(
        config_name=name,
        data_dir=data_dir,
        data_files=data_files,
        base_path=data_dir,
        cache_dir=cache_dir,
        **config_kwargs,
    )
    try:
        builder.download_and_prepare(download_mode=download_mode)
    except DatasetGenerationError as error:
        # `datasets` wraps what `_generate_examples` raises; give the user the validation error itself.
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise
    return builder.as_dataset()
