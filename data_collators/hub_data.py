"""Re-DocRED's files from the Hugging Face Hub dataset `tonytan48/Re-DocRED` (the authors' own upload, MIT).

`huggingface_hub` downloads each file once into its cache (`HF_HUB_CACHE`, default
`~/.cache/huggingface/hub`) and reuses it afterwards; with `HF_HUB_OFFLINE=1` only the cache is read.
The revision defaults to the commit this project was tested against, so every run reads the same bytes.
"""

from __future__ import annotations

from typing import Optional, Sequence

REDOCRED_HUB_REPO = "tonytan48/Re-DocRED"
REDOCRED_HUB_REVISION = "e0ab3489edfe72c968261bffed5243b6fefddd22"
"""The commit of `tonytan48/Re-DocRED` with `train_revised.json`, `dev_revised.json` and `test_revised.json`."""
REDOCRED_FILES = {"train": "train_revised.json", "validation": "dev_revised.json", "test": "test_revised.json"}
"""Split -> file name in the Hub dataset (the names of the Re-DocRED repository's `data/` folder)."""
REDOCRED_GITHUB = "https://github.com/tonytan48/Re-DocRED (folder data/)"


def download_redocred(
    filenames: Sequence[str] = tuple(REDOCRED_FILES.values()),
    revision: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> dict[str, str]:
    """Local paths of Re-DocRED files, downloaded from the Hub dataset (or found in the cache).

    Args:
        filenames: Files of the Hub dataset, e.g. `["dev_revised.json", "test_revised.json"]`.
        revision: Branch, tag or commit of the Hub dataset (default: `REDOCRED_HUB_REVISION`).
        cache_dir: The `huggingface_hub` cache folder (default: its own, `HF_HUB_CACHE`).

    Raises:
        FileNotFoundError: If a file is neither cached nor downloadable (offline, no network, unknown
            revision); the message names the files, where they come from and `--data_dir`.

    Returns:
        File name -> local path.
    """
    from huggingface_hub import constants, hf_hub_download

    revision = revision or REDOCRED_HUB_REVISION
    paths = {}
    for filename in filenames:
        try:
            paths[filename] = hf_hub_download(
                REDOCRED_HUB_REPO, filename, repo_type="dataset", revision=revision, cache_dir=cache_dir
            )
        # Offline without the file cached, no network, an unknown revision: whatever the transport raised, the
        # user needs the same advice (the message keeps the original error's type and text).
        except Exception as error:  # noqa: BLE001
            why = ("HF_HUB_OFFLINE is set and the file is not in the cache" if constants.is_offline_mode()
                   else f"{type(error).__name__}: {error}")
            raise FileNotFoundError(
                f"Re-DocRED's {', '.join(filenames)} are not available here: they come from the Hugging Face Hub "
                f"dataset {REDOCRED_HUB_REPO} (revision {revision}) or from {REDOCRED_GITHUB}, and {filename} could "
                f"not be fetched ({why}). Download them once with network access (they are then cached), or put "
                "them in a folder and pass --data_dir FOLDER (`make demo DATA_DIR=FOLDER`; or --train_file / "
                "--validation_file / --test_file)."
            ) from None
    return paths
