"""Convert a checkpoint of the released PEMSCL research code (or of ATLOP, whose format it shares) into a PEMSCL model
folder: weights as safetensors, config, tokenizer, remote code, the pipeline's code and a model card.

    python -m modeling_pemscl.convert_original_checkpoint --checkpoint pemscl-re-docred.pt --encoder roberta-large \\
        --output_dir pemscl-roberta-large [--dataset re-docred|docred] [--loss pemscl|atlop] [--push_to_hub ORG/NAME]

The research code saves `torch.save(model.state_dict(), path)` of its `DocREModel`: the encoder as `model.*`, then
`head_extractor`, `tail_extractor` [d1, 2h] and `bilinear` [R + 1, d1 * k]. The file is read with
`torch.load(weights_only=True)` only, so a file that holds anything but tensors is refused instead of run. The encoder's
config and tokenizer come from `--encoder` (the name the research code was given as `--model_name_or_path`); its
weights come from the checkpoint. d1 and the block size k are read off the shapes.

The converted model computes what the research code computes (`window_scheme="atlop"`, `max_document_length=1024`,
`word_prefix_space=False`, top-4 decoding, ATLOP's `rel2id.json`); see `PemsclConfig` for what each setting does.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shlex
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from .configuration_pemscl import PemsclConfig
from .modeling_pemscl import PemsclModel
from .pipeline_pemscl import check_model_and_tokenizer
from .processing_pemscl import byte_level_prefix_space

ENCODER_PREFIX = "model."
HEAD_KEYS = ("head_extractor.weight", "head_extractor.bias", "tail_extractor.weight", "tail_extractor.bias",
             "bilinear.weight", "bilinear.bias")
# Entries of the research code's state dict that this project's encoder does not have and does not need: the pooler
# (the research code loads the encoder with one and never uses it) and the position-id buffer older transformers
# versions saved.
DROPPED_ENCODER_KEYS = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
RESEARCH_MAX_LENGTH = 1024
RESEARCH_TOP_K = 4
PAPER = "Guo, Kok and Bing, Towards Integration of Discriminability and Robustness for Document-Level Relation " \
        "Extraction, EACL 2023"
PAPER_URL = "https://aclanthology.org/2023.eacl-main.170"
RELEASE_URL = "https://github.com/guojiapub/PEMSCL"

# What the released code trains with on each dataset (the paper's Table 5), kept so that continued training starts
# from the authors' settings, and the scores the paper reports for its RoBERTa-large models.
DATASET_SETTINGS = {
    "re-docred": dict(contrastive_temperature=0.2, contrastive_weight=0.1, gamma_pos="count", gamma_neg="count"),
    "docred": dict(contrastive_temperature=2.0, contrastive_weight=2.0, gamma_pos="one", gamma_neg="one"),
}
REPORTED_SCORES = {
    "re-docred": {
        "source": "Table 2 (RoBERTa-large; dev: mean ± std of 5 runs, test: the run best on dev)",
        "scores": {"eval": {"ign_f1": 79.02, "f1": 79.89}, "test": {"ign_f1": 79.01, "f1": 79.86}},
    },
    "docred": {
        "source": "Table 6 (RoBERTa-large; dev: mean ± std of 5 runs, test: the run best on dev)",
        "scores": {"eval": {"ign_f1": 62.31, "f1": 64.21}, "test": {"ign_f1": 62.17, "f1": 64.28}},
    },
}


class CheckpointError(ValueError):
    """A research checkpoint that cannot be converted; the message names the file and what to change."""


def load_original_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The research code's state dict, read with `torch.load(weights_only=True)` (never full unpickling).

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If it is not a PyTorch file, holds objects other than tensors, or is not a flat
            name -> tensor mapping.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file (the `--save_path` file of the research code).")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors, which torch.load(weights_only=True) refuses because loading "
            f"them would run code from the file ({str(error).splitlines()[0]}). Convert only `torch.save("
            "model.state_dict(), path)` files from a source you trust; a whole pickled model or a training state "
            "has to be turned into its state dict first, in the code that wrote it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint torch.load can read ({error}). Is the file "
                              "complete (compare its size with the download's)?") from None
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{path} holds a {type(state_dict).__name__}, not a state dict (a mapping of parameter "
                              "names to tensors, as `torch.save(model.state_dict(), path)` writes).")
    not_tensors = [name for name, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a state dict: {not_tensors[:5]} are not tensors. If it wraps one (e.g. under "
            "'state_dict' or 'model'), save that inner mapping with torch.save and convert the new file."
        )
    # torch.nn.DataParallel saves every name with a `module.` prefix.
    if all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module."):]: value for name, value in state_dict.items()}
    return state_dict


def head_sizes(state_dict: dict[str, torch.Tensor], checkpoint, hidden_size: int, num_labels: int) -> tuple[int, int]:
    """d1 and the block size k from the head's shapes, checked against the encoder and the relation vocabulary.

    Raises:
        CheckpointError: If a head entry is missing or its shape does not fit.
    """
    missing = [name for name in HEAD_KEYS if name not in state_dict]
    if missing:
        raise CheckpointError(f"{checkpoint} lacks {missing}: it is not a checkpoint of the PEMSCL / ATLOP research "
                              "code's DocREModel (whose head is head_extractor, tail_extractor and bilinear).")
    extractor = state_dict["head_extractor.weight"]
    if extractor.dim() != 2 or extractor.shape[1] != 2 * hidden_size:
        raise CheckpointError(
            f"{checkpoint}: head_extractor.weight has shape {tuple(extractor.shape)}, but an encoder of hidden size "
            f"{hidden_size} needs [d1, {2 * hidden_size}]: --encoder is not the encoder this checkpoint was trained "
            "on (the published PEMSCL checkpoints use roberta-large)."
        )
    d1 = extractor.shape[0]
    for name in HEAD_KEYS[1:4]:
        expected = (d1,) if name.endswith("bias") else (d1, 2 * hidden_size)
        if tuple(state_dict[name].shape) != expected:
            raise CheckpointError(f"{checkpoint}: {name} has shape {tuple(state_dict[name].shape)}, expected {expected}.")
    bilinear = state_dict["bilinear.weight"]
    if bilinear.dim() != 2 or bilinear.shape[1] % d1 or d1 % (bilinear.shape[1] // d1 or 1):
        raise CheckpointError(f"{checkpoint}: bilinear.weight has shape {tuple(bilinear.shape)}, which is not "
                              f"[R + 1, d1 * k] with d1 = {d1} and a block size k dividing d1.")
    if bilinear.shape[0] != num_labels or tuple(state_dict["bilinear.bias"].shape) != (num_labels,):
        raise CheckpointError(
            f"{checkpoint}: the bilinear layer scores {bilinear.shape[0]} labels, but the dataset's relation "
            f"vocabulary (ATLOP's rel2id.json) has {num_labels} (NA + {num_labels - 1} relations). The checkpoint was "
            "trained on another relation set; it cannot be converted with this vocabulary."
        )
    return d1, bilinear.shape[1] // d1


def _encoder_state_dict(state_dict, checkpoint, model: PemsclModel) -> dict[str, torch.Tensor]:
    """The checkpoint's `model.*` entries under this project's names (`encoder.*`), checked key by key."""
    encoder = {}
    unexpected = []
    for name, value in state_dict.items():
        if name in HEAD_KEYS:
            continue
        if not name.startswith(ENCODER_PREFIX):
            unexpected.append(name)
            continue
        inner = name[len(ENCODER_PREFIX):]
        if not inner.startswith(DROPPED_ENCODER_KEYS):
            encoder["encoder." + inner] = value
    expected = {name: tensor for name, tensor in model.state_dict().items() if name.startswith("encoder.")}
    unexpected += [ENCODER_PREFIX + name[len("encoder."):] for name in encoder if name not in expected]
    missing = [ENCODER_PREFIX + name[len("encoder."):] for name in expected if name not in encoder]
    if unexpected or missing:
        raise CheckpointError(
            f"{checkpoint} does not fit the encoder given with --encoder ({model.config.encoder.model_type}): "
            + (f"unexpected entries {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; " if unexpected else "")
            + (f"missing entries {missing[:5]}{' ...' if len(missing) > 5 else ''}; " if missing else "")
            + "pass the encoder the research code was run with (its --model_name_or_path)."
        )
    embeddings = model.get_input_embeddings()
    rows_name = next(name for name, tensor in expected.items() if tensor is embeddings.weight or
                     (tensor.shape == embeddings.weight.shape and name.endswith("word_embeddings.weight")))
    if encoder[rows_name].shape[0] != embeddings.weight.shape[0]:
        raise CheckpointError(
            f"{checkpoint}: its embedding matrix has {encoder[rows_name].shape[0]} rows, but the encoder given with "
            f"--encoder has a vocabulary of {embeddings.weight.shape[0]}: this is another encoder (or tokenizer) than "
            "the checkpoint's."
        )
    for name, value in encoder.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{checkpoint}: {ENCODER_PREFIX}{name[len('encoder.'):]} has shape "
                                  f"{tuple(value.shape)}, but the encoder given with --encoder has "
                                  f"{tuple(expected[name].shape)}.")
    return encoder


def conversion_command(checkpoint, encoder, output_dir, dataset, loss, push_to_hub=None) -> str:
    """The command line that performs this conversion, for the model card."""
    parts = ["python", "-m", "modeling_pemscl.convert_original_checkpoint", "--checkpoint", os.path.basename(checkpoint),
             "--encoder", str(encoder), "--output_dir", os.path.basename(os.path.normpath(output_dir)),
             "--dataset", dataset]
    if loss != "pemscl":
        parts += ["--loss", loss]
    if push_to_hub:
        parts += ["--push_to_hub", push_to_hub]
    return shlex.join(parts)


def convert_original_checkpoint(
    checkpoint: str | os.PathLike,
    encoder: str,
    output_dir: str | os.PathLike,
    dataset: str = "re-docred",
    loss: str = "pemscl",
    push_to_hub: str | None = None,
    overwrite: bool = False,
    token: str | None = None,
) -> PemsclModel:
    """Convert a research checkpoint into a PEMSCL model folder (and optionally push it to the Hub).

    Args:
        checkpoint: The research code's `torch.save(model.state_dict())` file.
        encoder: The encoder's Hub id or folder (config and tokenizer are read from it, not its weights).
        output_dir: The new model folder; must not exist or be empty unless `overwrite`.
        dataset: `"re-docred"` or `"docred"`: the relation vocabulary (both ATLOP's `rel2id.json`), the training
            settings kept for continued training (the paper's Table 5) and the scores the card quotes.
        loss: `"pemscl"` for PEMSCL checkpoints, `"atlop"` for ATLOP's (same format and decoding; the loss matters
            only when training continues).
        push_to_hub: A Hub repository id (`org/name`) to upload the folder to.
        overwrite: Replace the files of a non-empty `output_dir`.
        token: Hub token for the push (default: the logged-in user's).

    Raises:
        FileNotFoundError, CheckpointError: See `load_original_state_dict`, `head_sizes`; also when the encoder's
            embedding matrix or layers do not match the checkpoint, or `output_dir` holds files.

    Returns:
        The converted model (eval mode).
    """
    _check_conversion_arguments(dataset, loss, output_dir, overwrite)
    output_dir = Path(output_dir)
    state_dict = load_original_state_dict(checkpoint)
    encoder_config = AutoConfig.from_pretrained(encoder)
    # The converter is a command-line tool, not remote code: it may use the project's data and card packages.
    from data_collators import RelationVocab

    vocab = RelationVocab.builtin(dataset)  # ATLOP's rel2id.json, which DocRED and Re-DocRED share
    d1, block_size = head_sizes(state_dict, checkpoint, encoder_config.hidden_size, vocab.num_labels)
    config = _research_config(encoder_config, vocab, d1, block_size, dataset, loss)
    model = PemsclModel(config)
    weights = _encoder_state_dict(state_dict, checkpoint, model)
    weights.update({name: state_dict[name] for name in HEAD_KEYS})
    model.load_state_dict({name: value.float() for name, value in weights.items()}, strict=True)
    model.eval()

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    if byte_level_prefix_space(tokenizer):  # the research code tokenizes every word alone, without a space
        tokenizer = AutoTokenizer.from_pretrained(encoder, add_prefix_space=False)
    check_model_and_tokenizer(model, tokenizer)

    output_dir.mkdir(parents=True, exist_ok=True)
    model.model_card_data = _card_data(push_to_hub or output_dir.name, output_dir, config, checkpoint, encoder,
                                       dataset, loss, push_to_hub)
    model.save_pretrained(output_dir)  # weights, config, remote code and the card
    model.save_pipeline_code(output_dir)
    tokenizer.save_pretrained(output_dir)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(output_dir),
                          commit_message=f"Convert {os.path.basename(checkpoint)} (PEMSCL research code)")
    return model


def _check_conversion_arguments(dataset: str, loss: str, output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an unknown dataset or loss, and an output folder that holds files (unless `overwrite`)."""
    if dataset not in DATASET_SETTINGS:
        raise ValueError(f"dataset={dataset!r}; expected one of {tuple(DATASET_SETTINGS)}.")
    if loss not in ("pemscl", "atlop"):
        raise ValueError(f"loss={loss!r}; research checkpoints are PEMSCL ('pemscl') or ATLOP ('atlop') models.")
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or (any(output_dir.iterdir()) and not overwrite)):
        raise CheckpointError(f"{output_dir} exists and is not an empty folder; choose a new --output_dir (or pass "
                              "--overwrite to replace the files in it).")


def _research_config(encoder_config, vocab, pair_embedding_size: int, block_size: int, dataset: str,
                     loss: str) -> PemsclConfig:
    """The configuration under which the model computes what the research code computes (its windows, length cut,
    tokenization and top-4 decoding), with the authors' training settings for `dataset`."""
    return PemsclConfig(
        encoder=encoder_config.to_dict(),
        id2label=vocab.id2label,
        relation_names=vocab.relation_names,
        pair_embedding_size=pair_embedding_size,
        bilinear_block_size=block_size,
        loss=loss,
        max_relations_per_pair=RESEARCH_TOP_K,
        entity_marker="*",
        window_scheme="atlop",
        max_document_length=RESEARCH_MAX_LENGTH,
        word_prefix_space=False,
        contrastive_anchors="all",
        contrastive_average="outside",
        relation_bias_init=0.0,
        **DATASET_SETTINGS[dataset],
    )


def _card_data(model_id, output_dir, config, checkpoint, encoder, dataset, loss, push_to_hub) -> dict:
    """What the model card of a converted checkpoint says: its source, the conversion command and, for the
    authors' RoBERTa-large checkpoints only, the scores their paper reports."""
    published_shape = (config.encoder.model_type == "roberta" and config.encoder.num_hidden_layers == 24
                       and config.pair_embedding_size == 1024 and config.bilinear_block_size == 64)
    return {
        "model_id": model_id,
        "data_args": {"dataset": dataset},
        "conversion": {
            "source": os.path.basename(checkpoint),
            "encoder": encoder,
            "command": conversion_command(checkpoint, encoder, output_dir, dataset, loss, push_to_hub),
            "reported": REPORTED_SCORES[dataset] if loss == "pemscl" and published_shape else None,
            "paper": PAPER,
            "paper_url": PAPER_URL,
            "release_url": RELEASE_URL,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_pemscl.convert_original_checkpoint",
        description="Convert a checkpoint of the released PEMSCL (or ATLOP) research code into a PEMSCL model folder "
                    "that computes the same predictions.",
        epilog="Example: python -m modeling_pemscl.convert_original_checkpoint --checkpoint pemscl-re-docred.pt "
               "--encoder roberta-large --output_dir pemscl-roberta-large",
    )
    parser.add_argument("--checkpoint", required=True, help="the research code's state-dict file (its --save_path)")
    parser.add_argument("--encoder", required=True,
                        help="Hub id or folder of the encoder it was trained on (config and tokenizer), e.g. roberta-large")
    parser.add_argument("--output_dir", required=True, help="new folder for the converted model")
    parser.add_argument("--dataset", choices=tuple(DATASET_SETTINGS), default="re-docred",
                        help="the dataset the checkpoint was trained on (default: re-docred)")
    parser.add_argument("--loss", choices=("pemscl", "atlop"), default="pemscl",
                        help="atlop for ATLOP's checkpoints (same format)")
    parser.add_argument("--push_to_hub", metavar="ORG/NAME", help="also upload the folder to this Hub repository")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --output_dir")
    args = parser.parse_args(argv)
    try:
        convert_original_checkpoint(args.checkpoint, args.encoder, args.output_dir, dataset=args.dataset,
                                    loss=args.loss, push_to_hub=args.push_to_hub, overwrite=args.overwrite)
    except (FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Converted {args.checkpoint} into {args.output_dir}"
          + (f" and pushed it to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
