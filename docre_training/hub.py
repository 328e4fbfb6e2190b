"""Publishing a trained PEMSCL model to the Hugging Face Hub with a model card generated from its run.

The repository gets exactly one folder, written by `prepare_hub_folder`:

| file | from |
|---|---|
| `model.safetensors` | the weights (safetensors only, never a pickle) |
| `config.json` | `PemsclConfig` with `auto_map`, relation vocabulary and loss settings |
| `configuration_pemscl.py`, `modeling_pemscl.py`, `losses.py` | the remote code (`trust_remote_code=True`) |
| `tokenizer.json`, `tokenizer_config.json`, ... | the tokenizer |
| `README.md` | the model card (`model_cards.generate_model_card`) |

`run_docre.py --push_to_hub --hub_model_id org/name` calls `publish_to_hub` once, at the end of the run (the
Trainer's own Hub pushes are turned off, so every upload carries the card); `--hub_dry_run DIR` writes the folder to
DIR and uploads nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from model_cards import generate_model_card

logger = logging.getLogger(__name__)

REMOTE_CODE_FILES = ("configuration_pemscl.py", "modeling_pemscl.py", "losses.py", "pipeline_pemscl.py", "processing_pemscl.py")
REQUIRED_FILES = ("config.json", "model.safetensors", "README.md", *REMOTE_CODE_FILES)


def default_model_id(training_args: Any) -> str:
    """`--hub_model_id`, else the output folder's name (the Hub puts it under the token's user)."""
    model_id = getattr(training_args, "hub_model_id", None)
    return model_id or os.path.basename(os.path.normpath(training_args.output_dir))


def check_dry_run_dir(folder: str | os.PathLike | None) -> None:
    """Fail before training, not after, when the `--hub_dry_run` folder cannot be written.

    Raises:
        ValueError: If the folder exists and is not an empty folder.
    """
    if folder is None:
        return
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} is not an empty folder: the Hub folder (--hub_dry_run) is written into a new "
                         "or empty folder.")


def prepare_hub_folder(model, tokenizer, folder: str | os.PathLike, card: str) -> list[str]:
    """Write the files of a Hub repository (see the module docstring) into an empty folder.

    Args:
        model: The trained `PemsclModel` (its class registered for the auto classes, so that `save_pretrained`
            writes `auto_map` and the remote code).
        tokenizer: Its tokenizer.
        folder: A folder that does not exist yet or is empty.
        card: The README.md text.

    Raises:
        ValueError: If the folder is not empty, or the saved model lacks a required file (e.g. the remote code,
            when the model class was not registered with `register_for_auto_class`).

    Returns:
        The file names written, sorted.
    """
    check_dry_run_dir(folder)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    model.save_pipeline_code(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(card, encoding="utf-8")
    files = sorted(path.name for path in folder.iterdir())
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ValueError(f"The Hub folder {folder} lacks {missing}; is `modeling_pemscl` imported (it registers the "
                         "remote code)?")
    pickles = [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    if pickles:
        raise ValueError(f"The Hub folder {folder} holds pickle files {pickles}; only safetensors weights are published.")
    return files


def upload_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool | None = None,
                  commit_message: str = "Upload PEMSCL model") -> str:
    """Create the model repository if needed (`HfApi.create_repo`) and upload the folder (`HfApi.upload_folder`).

    Returns:
        The URL of the commit.
    """
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_url.repo_id, repo_type="model", folder_path=str(folder),
                               commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


def publish_to_hub(
    model,
    tokenizer,
    training_args: Any,
    data_args: Any = None,
    model_args: Any = None,
    dry_run_dir: str | os.PathLike | None = None,
) -> str:
    """Write the Hub folder of a finished run with its model card, and upload it unless `dry_run_dir` is given.

    Args:
        model, tokenizer: The trained model and its tokenizer.
        training_args: The run's `TrainingArguments`: `output_dir` (its `all_results.json` fills the card),
            `hub_model_id`, `hub_token`, `hub_private_repo`.
        data_args, model_args: The run's other arguments, for the card.
        dry_run_dir: Write the folder here and upload nothing.

    Returns:
        `dry_run_dir`, or the URL of the uploaded commit.
    """
    model_id = default_model_id(training_args)
    card = generate_model_card(training_args.output_dir, model_id, training_args=training_args, data_args=data_args,
                               model_args=model_args, model_config=model.config)
    if dry_run_dir is not None:
        files = prepare_hub_folder(model, tokenizer, dry_run_dir, card)
        logger.info("Hub dry run: wrote %s to %s (nothing uploaded).", ", ".join(files), dry_run_dir)
        return str(dry_run_dir)
    with tempfile.TemporaryDirectory(prefix="pemscl-hub-") as folder:
        prepare_hub_folder(model, tokenizer, folder, card)
        url = upload_to_hub(folder, model_id, token=getattr(training_args, "hub_token", None),
                            private=getattr(training_args, "hub_private_repo", None))
    logger.info("Uploaded the model and its card to %s", url)
    return url


__all__ = ["REQUIRED_FILES", "check_dry_run_dir", "default_model_id", "prepare_hub_folder", "publish_to_hub", "upload_to_hub"]
