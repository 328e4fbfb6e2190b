"""Relation vocabulary of DocRED-format data: Wikidata relation ids, their names and label indices.

DocRED ships `rel_info.json` (Wikidata id -> relation name, 96 entries) and ATLOP-family code ships
`rel2id.json` (label index of each relation, with the no-relation label `Na` at index 0). Both files of
DocRED's fixed, public vocabulary (which Re-DocRED keeps) ship with this package under `vocabularies/`
(`RelationVocab.builtin`); other DocRED-format datasets pass their own files (`RelationVocab.from_files`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

from modeling_pemscl.processing_pemscl import NA_LABEL, check_rel2id  # noqa: F401  (Na = index 0; the check)

REL_INFO_FILENAME = "rel_info.json"
REL2ID_FILENAME = "rel2id.json"

BUILTIN_VOCABULARIES = {"docred": "docred", "re-docred": "docred"}
"""Dataset name -> folder of `vocabularies/` holding its `rel2id.json` and `rel_info.json`."""


def read_rel_info(path: PathLike) -> dict[str, str]:
    """Read a DocRED `rel_info.json` file.

    Args:
        path: Path of the JSON object mapping Wikidata relation ids (`"P17"`) to relation names (`"country"`).

    Raises:
        ValueError: If the file is not a JSON object of strings to strings, or it lists `Na`.

    Returns:
        The mapping Wikidata id -> relation name, in file order.
    """
    with open(path, encoding="utf-8") as f:
        rel_info = json.load(f)
    if not isinstance(rel_info, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in rel_info.items()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping relation ids to relation names.")
    if NA_LABEL in rel_info:
        raise ValueError(f"{path}: `{NA_LABEL}` is the no-relation label and must not be listed in rel_info.")
    return rel_info


def read_rel2id(path: PathLike) -> dict[str, int]:
    """Read a `rel2id.json` file (relation id -> label index, `Na` = 0).

    Args:
        path: Path of the JSON object mapping `Na` and the Wikidata relation ids to label indices.

    Raises:
        ValueError: If `Na` is not index 0 or the indices are not exactly 0 .. n-1.

    Returns:
        The mapping relation id -> label index, sorted by index.
    """
    with open(path, encoding="utf-8") as f:
        rel2id = json.load(f)
    if not isinstance(rel2id, dict):
        raise ValueError(f"{path}: expected a JSON object mapping relation ids to label indices.")
    check_rel2id(rel2id, source=str(path))
    return dict(sorted(rel2id.items(), key=lambda item: item[1]))


def _wikidata_sort_key(relation_id: str) -> tuple[int, str]:
    match = re.fullmatch(r"P(\d+)", relation_id)
    return (int(match.group(1)) if match else 1 << 62, relation_id)


def rel2id_from_rel_info(rel_info: Mapping[str, str]) -> dict[str, int]:
    """Build a deterministic relation -> index mapping when only `rel_info.json` is at hand.

    `Na` gets index 0, then the relations follow in numeric Wikidata order (P6, P17, P19, ...). This is
    NOT the order of the `rel2id.json` shipped with ATLOP-family code; pass that file wherever label
    indices must match a checkpoint trained with it.

    Args:
        rel_info: Wikidata id -> relation name.

    Returns:
        The mapping relation id -> label index.
    """
    ordered = sorted(rel_info, key=_wikidata_sort_key)
    return {NA_LABEL: 0, **{relation: index for index, relation in enumerate(ordered, start=1)}}


@dataclass(frozen=True)
class RelationVocab:
    """The label vocabulary of a DocRED-format dataset.

    Args:
        rel2id: Relation id -> label index, `Na` at 0 (97 entries for DocRED).
        names: Wikidata id -> relation name (`"P17"` -> `"country"`); may be empty when no `rel_info.json`
            was given.
    """

    rel2id: dict[str, int]
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_rel2id(self.rel2id)
        unknown = sorted(set(self.names) - set(self.rel2id))
        if unknown:
            raise ValueError(f"rel_info lists relations that rel2id lacks: {unknown}")

    @classmethod
    def from_files(
        cls, rel2id_file: Optional[PathLike] = None, rel_info_file: Optional[PathLike] = None
    ) -> "RelationVocab":
        """Read the vocabulary from `rel2id.json` and/or `rel_info.json`.

        Args:
            rel2id_file: Label indices; when absent they are built from `rel_info_file` with
                `rel2id_from_rel_info`.
            rel_info_file: Relation names.

        Raises:
            ValueError: If neither file is given, or the two files list different relations.

        Returns:
            The vocabulary.
        """
        if rel2id_file is None and rel_info_file is None:
            raise ValueError("Pass rel2id_file and/or rel_info_file to read a relation vocabulary.")
        names = read_rel_info(rel_info_file) if rel_info_file is not None else {}
        if rel2id_file is None:
            return cls(rel2id_from_rel_info(names), names)
        rel2id = read_rel2id(rel2id_file)
        if names and set(names) != set(rel2id) - {NA_LABEL}:
            raise ValueError(
                f"{rel2id_file} and {rel_info_file} list different relations: "
                f"{sorted(set(names) ^ (set(rel2id) - {NA_LABEL}))}"
            )
        return cls(rel2id, names)

    @classmethod
    def builtin(cls, dataset: str) -> "RelationVocab":
        """The vocabulary shipped with this package for a named dataset (`"docred"`, `"re-docred"`: the same
        96 DocRED relations, `Na` at 0, in the label order of ATLOP-family `rel2id.json`).

        Raises:
            ValueError: For a dataset without a built-in vocabulary (pass its files to `from_files`).
        """
        if dataset not in BUILTIN_VOCABULARIES:
            raise ValueError(
                f"No built-in relation vocabulary for dataset {dataset!r} (built in: {sorted(BUILTIN_VOCABULARIES)}); "
                "pass its rel2id.json / rel_info.json instead."
            )
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabularies", BUILTIN_VOCABULARIES[dataset])
        return cls.from_dir(folder)

    @classmethod
    def from_dir(cls, directory: PathLike) -> "RelationVocab":
        """Read `rel2id.json` and/or `rel_info.json` from a folder (e.g. the Re-DocRED data folder).

        Args:
            directory: The folder.

        Raises:
            FileNotFoundError: If the folder holds neither file.

        Returns:
            The vocabulary.
        """
        rel2id_file = os.path.join(directory, REL2ID_FILENAME)
        rel_info_file = os.path.join(directory, REL_INFO_FILENAME)
        have_rel2id, have_rel_info = os.path.isfile(rel2id_file), os.path.isfile(rel_info_file)
        if not (have_rel2id or have_rel_info):
            raise FileNotFoundError(f"{directory} holds neither {REL2ID_FILENAME} nor {REL_INFO_FILENAME}.")
        return cls.from_files(rel2id_file if have_rel2id else None, rel_info_file if have_rel_info else None)

    @property
    def num_labels(self) -> int:
        """Number of label columns, `Na` included (R + 1)."""
        return len(self.rel2id)

    @property
    def relation_ids(self) -> tuple[str, ...]:
        """The Wikidata relation ids in label order, `Na` excluded."""
        return tuple(relation for relation in self.rel2id if relation != NA_LABEL)

    @property
    def id2label(self) -> dict[int, str]:
        """Label index -> label (`0` -> `"Na"`, others Wikidata ids like `"P17"`), for a model config."""
        return {index: relation for relation, index in self.rel2id.items()}

    @property
    def label2id(self) -> dict[str, int]:
        """Label -> label index, for a model config (the inverse of `id2label`)."""
        return dict(self.rel2id)

    @property
    def relation_names(self) -> dict[str, str]:
        """Wikidata id -> relation name (`"P17"` -> `"country"`), empty when no `rel_info.json` was read."""
        return dict(self.names)
