"""ONNX export of a PEMSCL model's encoder, and a PEMSCL model that runs its encoder in ONNX Runtime.

    python -m modeling_pemscl.export_onnx --model pemscl-model --output pemscl-model/encoder.onnx [--quantize int8]

    model = PemsclModel.from_pretrained("pemscl-model")
    use_onnx_encoder(model, "pemscl-model/encoder.onnx", threads=2)
    with torch.inference_mode():
        output = model(**batch, return_predictions=True)  # same forward, same outputs

What is in ONNX: the encoder call the model makes, `(input_ids [N, W], attention_mask [N, W]) -> (last_hidden_state
[N, W, d], last-layer attention probabilities [N, H, W, W])`, with dynamic N (documents, or windows of long documents)
and W (tokens). What stays in PyTorch, unchanged: cutting documents to `max_document_length`, the windows of long
documents (`encoder_window_length`, `window_scheme`), mention pooling, localized context pooling, the grouped bilinear
classifier and decoding. The encoder holds most of the weights and most of the time; the rest is gathers whose sizes
depend on the data (entities, mentions, pairs, windows per document), which a static graph would pad or trace per
shape, for little time (docs/onnx.md has the numbers).

The ONNX file carries, in its metadata, where it was exported from and a fingerprint of the encoder (its config and
per-tensor checksums of its weights): `use_onnx_encoder` refuses a file exported from another encoder.

onnx, onnxruntime and onnxscript are optional (`pip install 'pemscl[onnx]'`): they are imported only inside the
functions that need them, so the model and the pipeline load without them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pemscl[onnx]'"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("last_hidden_state", "last_attention")
METADATA_KEY = "pemscl_encoder"
METADATA_FORMAT = 1
QUANTIZATIONS = ("int8",)
# ONNX keeps a model in one protobuf, which cannot exceed 2 GB.
MAX_INLINE_BYTES = 2**31 - 2**20
# An exported graph is checked against the PyTorch encoder on two batch shapes: largest difference allowed, relative
# to the largest hidden value (fp32 exports differ by about 1e-6 of it) and absolute on attention probabilities.
EXPORT_HIDDEN_TOLERANCE = 1e-4
EXPORT_ATTENTION_TOLERANCE = 1e-4
# Encoder config entries that do not change what the encoder computes at inference (bookkeeping, dropout, training).
_CONFIG_KEYS_IGNORED = frozenset({
    "transformers_version", "architectures", "dtype", "torch_dtype", "use_cache", "output_hidden_states",
    "output_attentions", "return_dict", "id2label", "label2id", "problem_type", "gradient_checkpointing",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "initializer_range",
    "tie_word_embeddings", "chunk_size_feed_forward", "bos_token_id", "eos_token_id",
})


def _import_onnx_packages(*names: str) -> list:
    """The modules `names` (onnx, onnxruntime, onnxscript), or ImportError saying how to install them."""
    import importlib

    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as error:
            raise ImportError(f"{name} is not installed; the ONNX export and ONNX Runtime inference of PEMSCL need "
                              f"onnx, onnxruntime and onnxscript: {INSTALL_HINT}") from error
    return modules


# ------------------------------------------------------------------------------------------ fingerprint
def encoder_fingerprint(encoder: nn.Module, name_or_path: str = "") -> dict:
    """What identifies an encoder's computation: `{"source", "config", "weights"}`.

    `config` is the encoder config without bookkeeping entries; `weights` maps every floating-point tensor of the
    state dict to `[shape, sum, sum of squares]` (float64), which tells apart any two trained encoders.
    """
    config = {key: value for key, value in encoder.config.to_dict().items()
              if key not in _CONFIG_KEYS_IGNORED and not key.startswith("_")}
    weights = {}
    with torch.no_grad():
        for name, tensor in encoder.state_dict().items():
            if tensor.is_floating_point():
                values = tensor.detach().to("cpu", torch.float64)
                weights[name] = [list(tensor.shape), float(values.sum()), float(values.square().sum())]
    return {"source": str(name_or_path), "config": config, "weights": weights}


def fingerprint_mismatch(expected: dict, actual: dict) -> str | None:
    """None when two fingerprints describe the same encoder, else what differs (for an error message)."""
    config_keys = sorted(key for key in set(expected["config"]) | set(actual["config"])
                         if expected["config"].get(key) != actual["config"].get(key))
    if config_keys:
        return "encoder config differs in " + ", ".join(
            f"{key} ({expected['config'].get(key)!r} in the file, {actual['config'].get(key)!r} in the model)"
            for key in config_keys[:5])
    names = list(expected["weights"])
    if set(names) != set(actual["weights"]):
        missing = sorted(set(names) ^ set(actual["weights"]))
        return f"encoder weights have other names ({', '.join(missing[:3])} ...)"
    differing = []
    for name in names:
        shape, total, squares = expected["weights"][name]
        other_shape, other_total, other_squares = actual["weights"][name]
        scale = math.sqrt(max(squares, other_squares) * max(math.prod(shape), 1)) + 1e-30
        if (shape != other_shape or abs(total - other_total) > 1e-7 * scale
                or not math.isclose(squares, other_squares, rel_tol=1e-7, abs_tol=1e-30)):
            differing.append(name)
    if differing:
        return f"{len(differing)} of {len(names)} encoder weight tensors differ (first: {differing[0]})"
    return None


# ------------------------------------------------------------------------------------------ export
class EncoderCall(nn.Module):
    """The encoder call of `PemsclModel.encode` as a module with tensor inputs and outputs, for `torch.onnx.export`.

    forward: `input_ids` and `attention_mask` `(N, W)` -> `(last_hidden_state (N, W, d), attention (N, H, W, W))`,
    the softmax attention probabilities of the encoder's last layer.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
        return outputs.last_hidden_state, outputs.attentions[-1]


def _example_batch(encoder: nn.Module, batch_size: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids `(batch_size, length)` and a mask that pads the last row's second half."""
    generator = torch.Generator().manual_seed(seed)
    vocab_size = encoder.get_input_embeddings().num_embeddings
    input_ids = torch.randint(min(5, vocab_size - 1), vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, (length + 1) // 2:] = 0
    return input_ids, attention_mask


@contextlib.contextmanager
def _quiet_exporter():
    """Silences the exporter's progress prints and known harmless warnings (this module logs its own progress)."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)


def _export_graph(call: EncoderCall, example: tuple, path: Path, opset: int | None) -> str:
    """Write the ONNX graph of `call` to `path` with dynamic batch and sequence axes; returns the exporter used:
    `torch.export` (dynamo=True), or TorchScript tracing when torch.export cannot capture the encoder."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with _quiet_exporter():
        try:
            torch.onnx.export(
                call, example, str(path), dynamo=True, opset_version=opset, external_data=False,
                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            )
            return "torch.onnx.export(dynamo=True)"
        except Exception as error:  # the TorchScript exporter below is the fallback for any capture failure
            dynamo_error = error
    logger.warning("torch.export could not capture the encoder (%s: %s); exporting with the TorchScript exporter.",
                   type(dynamo_error).__name__, str(dynamo_error).splitlines()[0] if str(dynamo_error) else "")
    with _quiet_exporter():
        torch.onnx.export(
            call, example, str(path), dynamo=False, opset_version=opset or 17,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
                          OUTPUT_NAMES[0]: {0: "batch", 1: "sequence"},
                          OUTPUT_NAMES[1]: {0: "batch", 2: "sequence", 3: "sequence"}},
        )
    return "torch.onnx.export(dynamo=False), TorchScript"


def _largest_differences(session, call: EncoderCall, batches) -> tuple[float, float]:
    """Largest |ONNX - PyTorch| over `batches`: hidden states relative to their largest value, attention absolute."""
    hidden_difference = attention_difference = 0.0
    for input_ids, attention_mask in batches:
        with torch.no_grad():
            hidden, attention = call(input_ids, attention_mask)
        onnx_hidden, onnx_attention = session.run(
            list(OUTPUT_NAMES), {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        scale = float(hidden.abs().max()) or 1.0
        hidden_difference = max(hidden_difference, float((torch.from_numpy(onnx_hidden) - hidden).abs().max()) / scale)
        attention_difference = max(attention_difference,
                                   float((torch.from_numpy(onnx_attention) - attention).abs().max()))
    return hidden_difference, attention_difference


def _float_cpu_encoder(model: nn.Module) -> nn.Module:
    """The model's encoder in float32 on the CPU, in eval mode: the encoder itself when it already is, else a copy."""
    encoder = model.encoder
    parameter = next(encoder.parameters())
    if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
        import copy

        encoder = copy.deepcopy(encoder).to("cpu", torch.float32)
    return encoder


def export_onnx(model, output_file: str | os.PathLike, quantize: str | None = None, opset: int | None = None) -> Path:
    """Export the encoder call of a `PemsclModel` to an ONNX file that `use_onnx_encoder` runs.

    The graph maps `input_ids` and `attention_mask` `(batch, sequence)` (int64) to `last_hidden_state`
    `(batch, sequence, d)` and `last_attention` `(batch, H, sequence, sequence)` (float32), both axes dynamic. It is
    exported from a float32 copy of the encoder with `torch.onnx.export(dynamo=True)` (TorchScript tracing where
    `torch.export` fails), then checked against the PyTorch encoder on two other batch shapes.

    Args:
        model: A `PemsclModel` (any dtype or device; the file holds float32 weights, or int8 with `quantize`).
        output_file: The `.onnx` file to write (its folder is created).
        quantize: None for float32, or `"int8"`: dynamic int8 quantization of the weight matrix products (weights
            per output channel, activations per tensor at run time; embeddings stay float32): smaller and faster on
            CPUs with VNNI; the relation decisions of a trained MiniLM model agree with float32 on about 99% of the
            entity pairs (docs/onnx.md).
        opset: The ONNX opset; default: the exporter's.

    Raises:
        ImportError: If onnx, onnxruntime or onnxscript is missing (`pip install 'pemscl[onnx]'`).
        ValueError: If `quantize` is unknown, the model has no encoder, or its weights exceed ONNX's 2 GB.
        RuntimeError: If the exported graph does not compute what the PyTorch encoder computes.

    Returns:
        The path of the written file.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r}; choose None (float32) or one of {QUANTIZATIONS}.")
    if isinstance(getattr(model, "encoder", None), OnnxEncoder):
        raise ValueError("This model already runs its encoder in ONNX Runtime; export the PyTorch model (load it "
                         "again).")
    if not isinstance(getattr(model, "encoder", None), nn.Module):
        raise ValueError(f"Expected a PemsclModel (with an `encoder`), got {type(model).__name__}.")
    onnx, onnxruntime, _ = _import_onnx_packages("onnx", "onnxruntime", "onnxscript")
    output_file = Path(output_file)
    encoder = _float_cpu_encoder(model)
    weight_bytes = sum(p.numel() * 4 for p in encoder.parameters())
    if weight_bytes > MAX_INLINE_BYTES:
        raise ValueError(f"The encoder has {weight_bytes / 2**30:.1f} GiB of float32 weights; an ONNX file holds at "
                         "most 2 GB, and this export writes one file.")
    name_or_path = getattr(model, "name_or_path", "") or ""
    started = time.perf_counter()
    logger.info("Exporting the %s encoder of %s (%d layers, %.0f MB) to %s%s ...", encoder.config.model_type,
                name_or_path or "the model", getattr(encoder.config, "num_hidden_layers", 0), weight_bytes / 1e6,
                output_file, " (int8)" if quantize else "")
    was_training = encoder.training
    encoder.eval()
    call = EncoderCall(encoder).eval()  # exporters restore the mode they found, recursively
    output_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=output_file.parent, prefix=".onnx-export-") as folder:
            graph_file = Path(folder) / "encoder.onnx"
            exporter = _export_graph(call, _example_batch(encoder, 2, 16, seed=0), graph_file, opset)
            session = onnxruntime.InferenceSession(str(graph_file), providers=["CPUExecutionProvider"])
            checks = [_example_batch(encoder, 3, 23, seed=1), _example_batch(encoder, 1, 7, seed=2)]
            hidden_difference, attention_difference = _largest_differences(session, call, checks)
            if hidden_difference > EXPORT_HIDDEN_TOLERANCE or attention_difference > EXPORT_ATTENTION_TOLERANCE:
                raise RuntimeError(
                    f"The exported graph ({exporter}) does not reproduce the PyTorch encoder: largest difference "
                    f"{hidden_difference:.2e} of the hidden states' scale, {attention_difference:.2e} in attention "
                    "probabilities. This encoder cannot be exported faithfully with this torch version.")
            if quantize == "int8":
                graph_file = _quantize_int8(graph_file, Path(folder) / "encoder-int8.onnx")
                session = onnxruntime.InferenceSession(str(graph_file), providers=["CPUExecutionProvider"])
                hidden_difference, attention_difference = _largest_differences(session, call, checks)
            graph = onnx.load(str(graph_file))
            metadata = {
                "format": METADATA_FORMAT,
                "exporter": exporter,
                "opset": next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")),
                "quantization": quantize,
                "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": onnxruntime.__version__},
                **encoder_fingerprint(encoder, name_or_path),
            }
            entry = graph.metadata_props.add()
            entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
            graph.producer_name = "pemscl"
            partial_file = Path(folder) / "written.onnx"
            onnx.save(graph, str(partial_file))
            os.replace(partial_file, output_file)
    finally:
        encoder.train(was_training)
    logger.info("Wrote %s (%.1f MB, %s, opset %d) in %.0f s; largest difference from PyTorch: %.1e of the hidden "
                "states' scale, %.1e in last-layer attention.", output_file, output_file.stat().st_size / 1e6,
                exporter, metadata["opset"], time.perf_counter() - started, hidden_difference, attention_difference)
    return output_file


def _quantize_int8(graph_file: Path, quantized_file: Path) -> Path:
    """Dynamic int8 quantization of the matrix products with weights (`onnxruntime.quantization.quantize_dynamic`):
    weights per output channel, the activations entering them per tensor at run time; the embeddings and the
    products of activations (attention scores) stay float32. Per channel changes half as many relation decisions of
    a trained MiniLM model as per tensor; int8 embeddings (one scale per table) move a small encoder's logits 40 times
    further for a smaller file only (docs/onnx.md)."""
    (quantization,) = _import_onnx_packages("onnxruntime.quantization")
    # quantize_dynamic warns through `logging.warning` about an optional pre-processing step, which would also give
    # the root logger a console handler for good when it has none: a handler of its own for the call prevents both.
    root, handler = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    try:
        quantization.quantize_dynamic(str(graph_file), str(quantized_file), op_types_to_quantize=["MatMul"],
                                      per_channel=True, weight_type=quantization.QuantType.QInt8)
    finally:
        root.setLevel(level)
        root.removeHandler(handler)
    return quantized_file


# ------------------------------------------------------------------------------------------ inference
def read_metadata(onnx_file: str | os.PathLike) -> dict:
    """The metadata `export_onnx` wrote into an ONNX file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not an ONNX file written by `export_onnx`.
    """
    (onnxruntime,) = _import_onnx_packages("onnxruntime")
    session = _inference_session(onnxruntime, onnx_file, threads=None)
    return _session_metadata(session, onnx_file)


def _inference_session(onnxruntime, onnx_file, threads: int | None):
    path = Path(onnx_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file (write one with `python -m modeling_pemscl.export_onnx`).")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Threads that spin after a run compete with PyTorch's, which run the pair head right after.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ValueError(f"{path} cannot be loaded by ONNX Runtime ({type(error).__name__}: {error}).") from error


def _session_metadata(session, onnx_file) -> dict:
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    names = ([entry.name for entry in session.get_inputs()], [entry.name for entry in session.get_outputs()])
    if text is None or names != (list(INPUT_NAMES), list(OUTPUT_NAMES)):
        raise ValueError(f"{onnx_file} was not written by modeling_pemscl.export_onnx (no {METADATA_KEY!r} metadata "
                         f"or other inputs/outputs: {names}); export the model with it.")
    metadata = json.loads(text)
    if metadata.get("format") != METADATA_FORMAT:
        raise ValueError(f"{onnx_file} has export format {metadata.get('format')!r}; this code reads format "
                         f"{METADATA_FORMAT}. Export the model again.")
    return metadata


class _EmbeddingSize:
    """Stands in for the encoder's input embedding where only its size is read (`num_embeddings`, `embedding_dim`)."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim


class OnnxEncoder(nn.Module):
    """The encoder of a `PemsclModel`, run by ONNX Runtime from a file `export_onnx` wrote; inference only.

    Answers the call `PemsclModel.encode` makes, `encoder(input_ids=..., attention_mask=..., output_attentions=True)`,
    with a `BaseModelOutput` whose `last_hidden_state` is `(N, W, d)` and whose `attentions` holds one tensor, the last
    layer's probabilities `(N, H, W, W)`, in `dtype` on the device of `input_ids`.

    Args:
        onnx_file: The ONNX file.
        config: The encoder's config (`PemsclModel.config.encoder`).
        metadata: The file's metadata (`read_metadata`).
        input_embeddings: `(num_embeddings, embedding_dim)` of the PyTorch encoder's input embedding.
        dtype: The dtype the PyTorch encoder computed in (outputs are cast to it).
        threads: ONNX Runtime's intra-op threads; None: its default (one per physical core).
    """

    def __init__(self, onnx_file, config, metadata: dict, input_embeddings: tuple[int, int],
                 dtype: torch.dtype = torch.float32, threads: int | None = None):
        super().__init__()
        self.onnx_file, self.config, self.metadata, self.threads = str(onnx_file), config, metadata, threads
        self.input_embeddings, self.dtype = input_embeddings, dtype
        self.session = self._load_session()
        # The weights live in the ONNX file: a state dict of this model would lack the encoder's.
        self.register_state_dict_pre_hook(_refuse_state_dict)

    def _load_session(self):
        (onnxruntime,) = _import_onnx_packages("onnxruntime")
        return _inference_session(onnxruntime, self.onnx_file, self.threads)

    def get_input_embeddings(self) -> _EmbeddingSize:
        return _EmbeddingSize(*self.input_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused) -> BaseModelOutput:
        """`input_ids`, `attention_mask` `(N, W)` -> `last_hidden_state (N, W, d)`, `attentions = (last layer's
        probabilities (N, H, W, W),)`."""
        if self.training:
            raise RuntimeError("This PEMSCL model runs its encoder in ONNX Runtime, for inference only: call "
                               "model.eval() (training needs the PyTorch model; load it again).")
        if torch.is_grad_enabled():
            raise RuntimeError("This PEMSCL model runs its encoder in ONNX Runtime, which computes no gradients: call "
                               "it under torch.inference_mode() or torch.no_grad() (the pipeline does).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feeds = {"input_ids": input_ids.to("cpu", torch.int64).contiguous().numpy(),
                 "attention_mask": attention_mask.to("cpu", torch.int64).contiguous().numpy()}
        hidden, attention = self.session.run(list(OUTPUT_NAMES), feeds)
        device = input_ids.device
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden).to(device, self.dtype),
                               attentions=(torch.from_numpy(attention).to(device, self.dtype),))

    def extra_repr(self) -> str:
        quantization = self.metadata.get("quantization") or "float32"
        return f"onnx_file={self.onnx_file!r}, {quantization}, threads={self.threads}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["session"] = None  # an InferenceSession cannot be copied or pickled; it is loaded again from the file
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.session = self._load_session()


def _refuse_state_dict(module, prefix, keep_vars):
    raise RuntimeError(f"This PEMSCL model runs its encoder in ONNX Runtime ({module.onnx_file}); it has no PyTorch "
                       "encoder weights to save. Save the PyTorch model (before use_onnx_encoder) instead.")


def use_onnx_encoder(model, onnx_file: str | os.PathLike, threads: int | None = None):
    """Run a `PemsclModel`'s encoder in ONNX Runtime from `onnx_file` (written by `export_onnx` from this model).

    The PyTorch encoder is replaced by an `OnnxEncoder` (its weights are freed); `forward` takes the same batches and
    returns the same outputs, and everything but the encoder call (windows, pooling, the pair head, decoding) still
    runs in PyTorch. The model is put in eval mode; afterwards it serves inference only: a call in training mode or
    with gradients enabled raises RuntimeError, and so does `state_dict` / `save_pretrained`.

    Args:
        model: A `PemsclModel` with its PyTorch encoder.
        onnx_file: The file `export_onnx` wrote from this model (float32 or int8).
        threads: ONNX Runtime's intra-op threads; None: its default (one per physical core).

    Raises:
        ImportError: If onnxruntime is missing (`pip install 'pemscl[onnx]'`).
        FileNotFoundError: If `onnx_file` does not exist.
        ValueError: If the file was not written by `export_onnx`, or was exported from another encoder (other config
            or weights), or the model already runs another ONNX file or was prepared for another precision.

    Returns:
        The model (changed in place).
    """
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, OnnxEncoder):
        if Path(encoder.onnx_file).resolve() == Path(onnx_file).resolve():
            return model.eval()  # already so: a pipeline given this model and its file
        raise ValueError(f"The model already runs its encoder in ONNX Runtime from {encoder.onnx_file}, not "
                         f"{onnx_file}; load it again to use another file.")
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"Expected a PemsclModel (with an `encoder`), got {type(model).__name__}.")
    precision = getattr(model, "inference_precision", "fp32")
    if precision != "fp32":  # an int8 encoder no longer matches the file's fingerprint; bf16 cannot go with a file
        raise ValueError(f"The model is already prepared for {precision} inference; load it again and call "
                         f"prepare_for_inference(model, precision, onnx_file), which runs the ONNX encoder first "
                         f"(precision None or 'int8').")
    (onnxruntime,) = _import_onnx_packages("onnxruntime")
    session = _inference_session(onnxruntime, onnx_file, threads)
    metadata = _session_metadata(session, onnx_file)
    name_or_path = getattr(model, "name_or_path", "") or "the model"
    mismatch = fingerprint_mismatch(metadata, encoder_fingerprint(encoder))
    if mismatch:
        raise ValueError(f"{onnx_file} was exported from another encoder ({metadata.get('source') or 'unnamed'}) than "
                         f"the one of {name_or_path}: {mismatch}. Export this model: python -m "
                         "modeling_pemscl.export_onnx --model DIR --output FILE.")
    embeddings = encoder.get_input_embeddings()
    dtype = next(encoder.parameters()).dtype
    onnx_encoder = OnnxEncoder(onnx_file, encoder.config, metadata,
                               (embeddings.num_embeddings, embeddings.embedding_dim), dtype=dtype, threads=threads)
    model.encoder = onnx_encoder
    return model.eval()


# ------------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_pemscl.export_onnx",
        description="Export the encoder of a PEMSCL model to ONNX, for CPU inference with ONNX Runtime "
                    "(modeling_pemscl.export_onnx.use_onnx_encoder); the pair head stays in PyTorch.",
        epilog="Example: python -m modeling_pemscl.export_onnx --model pemscl-model --output pemscl-model/encoder.onnx "
               "--quantize int8",
    )
    parser.add_argument("--model", required=True, help="folder of a saved PEMSCL model (save_pretrained)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="int8: dynamic int8 quantization (smaller, faster)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.model) or not os.path.isfile(os.path.join(args.model, "config.json")):
        print(f"error: {args.model} is not a saved PEMSCL model folder (no config.json).", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        from .modeling_pemscl import PemsclModel

        model = PemsclModel.from_pretrained(args.model).eval()
        export_onnx(model, args.output, quantize=args.quantize, opset=args.opset)
    except (ImportError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
