"""Re-DocRED from the Hub dataset `tonytan48/Re-DocRED` (data_collators.hub_data), without network: a
pre-filled `huggingface_hub` cache read in offline mode, and a patched downloader."""

import json
import shutil

import huggingface_hub
import pytest
from data_helpers import REDOCRED_DEV, REDOCRED_TEST

from data_collators import load_docred
from data_collators.hub_data import REDOCRED_HUB_REPO, REDOCRED_HUB_REVISION, download_redocred

FILES = {"train_revised.json": REDOCRED_DEV, "dev_revised.json": REDOCRED_DEV,
         "test_revised.json": REDOCRED_TEST}  # Hub file -> the fixture that stands in for it


def fill_hub_cache(cache, revision=REDOCRED_HUB_REVISION, names=tuple(FILES)):
    """The folder layout `huggingface_hub` itself writes: datasets--{owner}--{name}/snapshots/{commit}/{file}."""
    snapshot = cache / f"datasets--{REDOCRED_HUB_REPO.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in names:
        shutil.copy(FILES[name], snapshot / name)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hub cache in offline mode (what HF_HUB_OFFLINE=1 gives, set after import)."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_builder_reads_redocred_from_the_hub_cache(offline_hub, tmp_path):
    snapshot = fill_hub_cache(offline_hub)
    data = load_docred("re-docred", cache_dir=str(tmp_path / "datasets"))
    assert sorted(data) == ["test", "train", "validation"]
    assert data["test"]["title"] == [d["title"] for d in json.loads((snapshot / "test_revised.json").read_text())]
    assert data["validation"].num_rows == data["train"].num_rows == 12
    # The built-in vocabulary named the relations (no rel_info.json comes from the Hub).
    assert data["test"][0]["labels"][0]["relation_text"] != ""


def test_download_returns_cached_paths_and_pins_the_revision(offline_hub):
    snapshot = fill_hub_cache(offline_hub, names=("dev_revised.json",))
    paths = download_redocred(["dev_revised.json"])
    assert paths == {"dev_revised.json": str(snapshot / "dev_revised.json")}


def test_offline_without_the_files_says_what_to_do(offline_hub, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_docred("re-docred", cache_dir=str(tmp_path / "datasets"))
    message = str(error.value)
    for expected in ("train_revised.json", "dev_revised.json", "test_revised.json", REDOCRED_HUB_REPO,
                     "HF_HUB_OFFLINE", "--data_dir"):
        assert expected in message
    # Another revision is not served from the cache of this one.
    fill_hub_cache(offline_hub)
    with pytest.raises(FileNotFoundError, match="revision v0-unknown"):
        download_redocred(["dev_revised.json"], revision="v0-unknown")


def test_downloader_is_called_with_the_dataset_repo_and_revision(monkeypatch, tmp_path):
    calls = []

    def fake_download(repo_id, filename, *, repo_type=None, revision=None, cache_dir=None, **kwargs):
        calls.append((repo_id, filename, repo_type, revision))
        return str(FILES[filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    data = load_docred("re-docred", cache_dir=str(tmp_path / "datasets"), hub_revision="refs/pr/1")
    assert sorted(calls) == sorted((REDOCRED_HUB_REPO, name, "dataset", "refs/pr/1") for name in FILES)
    assert data["test"].num_rows == 12
