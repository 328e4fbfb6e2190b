"""`DataCollatorForDocRE`: featurized documents -> the one batch format of the project."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch


@dataclass
class DataCollatorForDocRE:
    """Collate featurized documents (`featurize_document` / `featurize_dataset`) into a batch of tensors.

    The batch format (this is the only place that builds it; `modeling_pemscl.PemsclModel.forward` reads it).
    B documents, L = longest tokenized document in the batch (NOT truncated: the model encodes documents
    longer than the encoder's window with overlapping windows), E = most entities of a document in the batch,
    M = most mentions of an entity in the batch, P = total number of entity pairs in the batch, R = number of
    relations (96 for DocRED), R+1 label columns with NA at 0.

    | field | shape | dtype | padding | meaning |
    |---|---|---|---|---|
    | `input_ids` | [B, L] | int64 | tokenizer.pad_token_id | `[CLS] doc-with-markers [SEP]` (exactly one special token at each end) |
    | `attention_mask` | [B, L] | int64 | 0 | 1 on real tokens |
    | `mention_positions` | [B, E, M] | int64 | -1 | subword position (in `input_ids`) of each mention's start entity marker |
    | `hts` | [P, 2] | int64 | - | (head, tail) entity indices within their document; every ordered pair h != t |
    | `pair_document_index` | [P] | int64 | - | batch row of each pair; non-decreasing (document 0's pairs first, each in featurized order) |
    | `labels` | [P, R+1] | float32 | - | multi-hot; column 0 = NA (1 iff the pair has no relation); only when the features carry labels |
    | `document_index` | [B] | int64 | - | the row of each document in its dataset; only when the features carry `document_index` (evaluation) |

    A batch where no document has 2 entities has P = 0 (`hts` of shape [0, 2], `labels` [0, R+1]);
    E and M are at least 1 so that index tensors keep their rank (an all -1 slot is "absent").

    Args:
        tokenizer: Gives the padding id (`tokenizer.pad_token_id`) when `pad_token_id` is not given.
        pad_token_id: The id `input_ids` are padded with; overrides the tokenizer's.
        num_labels: Number of label columns R+1 (`Na` included, i.e. `len(rel2id)`). Taken from the examples'
            label rows when there are any; needed when a labelled batch has no pair at all.
        pad_to_multiple_of: Round L up to a multiple of this (e.g. 8 for tensor cores).

    Raises:
        ValueError: At construction, if no padding id can be found or `pad_to_multiple_of` is not positive.
    """

    tokenizer: Any = None
    pad_token_id: Optional[int] = None
    num_labels: Optional[int] = None
    pad_to_multiple_of: Optional[int] = None

    def __post_init__(self):
        if self.pad_token_id is None and self.tokenizer is not None:
            self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("DataCollatorForDocRE needs a padding id: pass pad_token_id or a tokenizer with one.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}.")

    def _label_tensor(self, features: Sequence[Mapping[str, Any]], pair_counts: list[int]) -> Optional[torch.Tensor]:
        has_labels = [feature.get("labels") is not None for feature in features]
        if not any(has_labels):
            return None
        if not all(has_labels):
            raise ValueError(
                f"{has_labels.count(False)} of {len(features)} documents in the batch have no labels: a batch "
                "must be all labelled or all unlabelled."
            )
        blocks = [torch.as_tensor(feature["labels"], dtype=torch.float32) for feature in features]
        widths = {block.shape[1] for block in blocks if block.numel()}
        if self.num_labels is not None:
            widths.add(self.num_labels)
        if len(widths) > 1:
            raise ValueError(f"Label rows have different widths {sorted(widths)} (num_labels={self.num_labels}).")
        if not widths:
            raise ValueError(
                "No document of this labelled batch has an entity pair, so the number of label columns is "
                "unknown: pass num_labels=len(rel2id) to DataCollatorForDocRE."
            )
        width = widths.pop()
        for block, count in zip(blocks, pair_counts):
            if block.shape[0] != count:
                raise ValueError(f"A document has {count} entity pairs but {block.shape[0]} label rows.")
        return torch.cat([block.reshape(-1, width) for block in blocks])

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate a list of featurized documents.

        Args:
            features: Dicts with `input_ids`, `mention_positions`, `hts` and optionally `labels` (lists,
                NumPy arrays or tensors); other keys are ignored.

        Raises:
            ValueError: If the list is empty, labelled and unlabelled documents are mixed, label rows disagree
                with the pairs or with each other, or the label width cannot be known (see `num_labels`).

        Returns:
            The tensors of the table above.
        """
        if not features:
            raise ValueError("DataCollatorForDocRE got an empty list of features.")
        batch_size = len(features)
        lengths = [len(feature["input_ids"]) for feature in features]
        max_length = max(lengths)
        if self.pad_to_multiple_of:
            max_length = -(-max_length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((batch_size, max_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, max_length), dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths)):
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1

        mentions = [feature["mention_positions"] for feature in features]
        max_entities = max([1] + [len(entities) for entities in mentions])
        max_mentions = max([1] + [len(entity) for entities in mentions for entity in entities])
        mention_positions = torch.full((batch_size, max_entities, max_mentions), -1, dtype=torch.long)
        for row, entities in enumerate(mentions):
            for e, entity in enumerate(entities):
                mention_positions[row, e, : len(entity)] = torch.as_tensor(entity, dtype=torch.long)

        hts_blocks = [torch.as_tensor(feature["hts"], dtype=torch.long).reshape(-1, 2) for feature in features]
        pair_counts = [block.shape[0] for block in hts_blocks]
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mention_positions": mention_positions,
            "hts": torch.cat(hts_blocks),
            "pair_document_index": torch.repeat_interleave(
                torch.arange(batch_size), torch.tensor(pair_counts, dtype=torch.long)
            ),
        }
        labels = self._label_tensor(features, pair_counts)
        if labels is not None:
            batch["labels"] = labels
        if all("document_index" in feature for feature in features):
            batch["document_index"] = torch.tensor([int(f["document_index"]) for f in features], dtype=torch.long)
        return batch
