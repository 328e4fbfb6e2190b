"""The Hub folder of a PEMSCL run: what `DocRETrainer` pushes, and what `--hub_dry_run` writes instead.

Pushes go through the Trainer's own machinery (`DocRETrainer.push_to_hub`, and checkpoint pushes during training
as `--hub_strategy` asks); this module says what the pushed folder holds and checks it. The repository root is the
run's `output_dir` as uploaded, filtered by `HUB_IGNORE_PATTERNS`:

| file | from |
|---|---|
| `model.safetensors` | the weights (safetensors only, never a pickle) |
| `config.json` | `PemsclConfig` with `auto_map`, `custom_pipelines`, relation vocabulary and loss settings |
| `configuration_pemscl.py`, `modeling_pemscl.py`, `losses.py` | the model's remote code (`trust_remote_code=True`) |
| `pipeline_pemscl.py`, `processing_pemscl.py` | the `document-relation-extraction` pipeline's remote code |
| `tokenizer.json`, `tokenizer_config.json`, ... | the tokenizer |
| `README.md` | the model card (`DocRETrainer.create_model_card` -> `model_cards.generate_model_card`) |
| `*_results.json`, `trainer_state.json` | the run's metrics and log history, as the Trainer writes them |

Left out: the run's own records (`run_arguments.json`, which a resume is checked against; `train_reference.json`,
the training facts a later evaluation's Ign F1 reads), checkpoints (`--hub_strategy checkpoint` pushes the newest to `last-checkpoint/` with its optimizer
state, which is what resuming needs), pickles (`training_args.bin`), predictions files, the skipped-documents
report, and hidden or `_`-prefixed files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub.utils import filter_repo_objects

HUB_IGNORE_PATTERNS = ("_*", ".*", "*/.*", "checkpoint-*", "*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle",
                       "predictions_*.json", "skipped_documents.json", "run_arguments.json",
                       "train_reference.json")
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


def hub_files(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` a push uploads (relative POSIX paths, sorted): everything but `HUB_IGNORE_PATTERNS`,
    matched as `HfApi.upload_folder(ignore_patterns=...)` matches them."""
    folder = Path(folder)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=list(HUB_IGNORE_PATTERNS)))


def check_hub_folder(folder: str | os.PathLike) -> list[str]:
    """The files a push of `folder` uploads, after checking that they make a loadable model repository.

    Raises:
        ValueError: If a required file is missing (e.g. the remote code, when the model class was not registered
            with `register_for_auto_class`, or the card).

    Returns:
        `hub_files(folder)`.
    """
    files = hub_files(folder)
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ValueError(f"The Hub folder {folder} lacks {missing}; is `modeling_pemscl` imported (it registers the "
                         "remote code)?")
    return files


def copy_hub_folder(folder: str | os.PathLike, destination: str | os.PathLike) -> list[str]:
    """Copy exactly the files a push of `folder` would upload into the empty folder `destination` (the dry run).

    Returns:
        The files copied (relative paths, sorted).
    """
    check_dry_run_dir(destination)
    files = check_hub_folder(folder)
    for name in files:
        target = Path(destination, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder, name), target)
    return files


__all__ = ["HUB_IGNORE_PATTERNS", "REQUIRED_FILES", "check_dry_run_dir", "check_hub_folder", "copy_hub_folder",
           "default_model_id", "hub_files"]
