"""PEMSCL: an ATLOP pair head on a pretrained encoder, trained with the PEMSCL loss.

This file ships to the Hub as remote code: it imports torch, transformers and its own siblings only.
Shapes: B documents, L tokens, E entities, M mentions per entity, P entity pairs (all documents of the
batch, flattened), H attention heads, d encoder width, d1 = `pair_embedding_size`, G groups of k =
`bilinear_block_size` (d1 = G * k), R + 1 labels with NA / threshold at index 0.
"""

import functools
import importlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AutoModel, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import ModelOutput

from .configuration_pemscl import PemsclConfig

logger = logging.getLogger(__name__)
from .losses import (
    GroupedPairEmbeddings,
    contrastive_loss,
    decision_threshold,
    decode_evidence,
    decode_relations,
    evidence_loss,
    pemscl_objective,
    sample_negative_mask,
    sentence_evidence,
)


# ------------------------------------------------------------------- encoder attention
# Under `encoder_attention="sdpa"` every attention layer of the encoder dispatches here: the fused SDPA kernel for all
# but the one flagged `_pemscl_explicit_attention` (the last layer), which computes its probabilities as transformers'
# eager attention does, because the head reads them. Registered by name, like any attention implementation.
SDPA_EXPLICIT_LAST_LAYER = "pemscl_sdpa_explicit_last_layer"


def sdpa_with_explicit_last_layer(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for one layer: `(output [B, L, H, d_head], probabilities [B, H, L, L] or None)`.

    `query`, `key`, `value` are `[B, H, L, d_head]`; `attention_mask` is SDPA's boolean mask `[B, 1, L, L]`
    (True = attend) or None (no padding). The explicit path is `eager_attention_forward` with that mask: masked
    scores set to the dtype's minimum, where eager adds it, so the probabilities are the same.
    """
    if not getattr(module, "_pemscl_explicit_attention", False):
        kwargs.pop("output_attentions", None)  # asked of the last layer only; the others return None, as recorded
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=module.training)
    output = torch.matmul(probabilities, value).transpose(1, 2).contiguous()
    return output, probabilities


AttentionInterface.register(SDPA_EXPLICIT_LAST_LAYER, sdpa_with_explicit_last_layer)
AttentionMaskInterface.register(SDPA_EXPLICIT_LAST_LAYER, sdpa_mask)


def _attention_modules(encoder) -> list:
    """The encoder's self-attention modules in layer order, when they run through `AttentionInterface` (those
    whose outputs transformers records as `attentions`); empty when the encoder cannot switch implementations."""
    can_switch = getattr(encoder, "_can_set_attn_implementation", None)
    if not getattr(encoder, "_supports_sdpa", False) or can_switch is None or not can_switch():
        return []
    spec = (getattr(encoder, "_can_record_outputs", None) or {}).get("attentions")
    target = getattr(spec, "target_class", spec)
    if not isinstance(target, type):
        return []
    return [module for module in encoder.modules() if isinstance(module, target)]


def configure_encoder_attention(encoder, kind: str) -> str:
    """Set the encoder's attention to `kind` (`PemsclConfig.encoder_attention`); returns the implementation
    in use (`"eager"` where the encoder cannot run SDPA with an explicit last layer)."""
    modules = _attention_modules(encoder) if kind == "sdpa" else []
    for module in modules:
        module._pemscl_explicit_attention = module is modules[-1]
    implementation = SDPA_EXPLICIT_LAST_LAYER if modules else "eager"
    if encoder.config._attn_implementation != implementation:
        encoder.set_attn_implementation(implementation)
    return implementation


@dataclass
class PemsclModelOutput(ModelOutput):
    """
    Output of [`PemsclModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            The training objective selected by `config.loss` (Eq. 11 / Eq. 13 for `"pemscl"`).
        logits (`torch.FloatTensor` of shape `(num_pairs, num_labels)`):
            f_{h,t} (Eq. 15) for every entity pair of the batch, in the order of `hts`; column 0 is the threshold.
        pair_embeddings (`GroupedPairEmbeddings`, fields `head` and `tail` of shape `(num_pairs, G, k)`):
            z_h and z_t (Eq. 14), which define x_{h,t} = concat_g z_h^g (x) z_t^g without storing its d1 * k
            dimensions; `pair_embeddings.materialize()` gives x of shape `(num_pairs, d1 * k)`.
        pmt_loss, entropy_loss, contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The separate loss terms (batch means of Eq. 4, Eq. 6, Eq. 10), for logging. `None` when unused.
        predictions (`torch.BoolTensor` of shape `(num_pairs, num_labels)`, *optional*):
            Decoded relations (see [`PemsclModel.decode`]), returned when `return_predictions=True`.
        evidence (`torch.FloatTensor` of shape `(num_pairs, num_sentences)`, *optional*):
            Each pair's evidence distribution over its document's sentences (`losses.sentence_evidence`; 0 on a
            shorter document's padding sentences), returned when the batch has `sentence_ids`.
        evidence_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The evidence term (mean of `losses.evidence_loss` over pairs with gold evidence) before its weight,
            when `config.evidence_weight > 0` and the batch has `evidence_labels`.
        evidence_predictions (`torch.BoolTensor` of shape `(num_pairs, num_sentences)`, *optional*):
            Decoded evidence sentences of every pair (see [`PemsclModel.decode_evidence`]), returned with
            `predictions` when there is `evidence`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pair_embeddings: GroupedPairEmbeddings | None = None
    pmt_loss: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    predictions: torch.BoolTensor | None = None
    evidence: torch.FloatTensor | None = None
    evidence_loss: torch.FloatTensor | None = None
    evidence_predictions: torch.BoolTensor | None = None


class _GroupedBilinearFunction(torch.autograd.Function):
    """f = W_o x + b_o with x = concat_g z_h^g (x) z_t^g (Eq. 14-15), computed one column block at a time.

    A block is (part of) one group: the columns of x that z_h^g[i0:i1] (x) z_t^g fill. It is built, used
    and dropped, and rebuilt in backward instead of being stored, so the [P, d1 * k] pair matrix never
    exists as a whole. Blocking over columns (not pairs) keeps every matmul's inner dimension large
    (d1 * k / blocks forward, P for the weight gradient) and writes each weight-gradient block once.
    """

    @staticmethod
    def forward(ctx, head, tail, weight, bias, block_elements):
        num_pairs, groups, block = head.shape
        head_units = head.reshape(num_pairs, groups * block)  # unit u = (g, i) -> z_h^g[i]
        logits = bias.expand(num_pairs, -1).clone()
        buffers = _BlockBuffers(head)
        for group, start, end in _column_blocks(num_pairs, groups, block, block_elements):
            pair_block = _pair_block(head_units, tail, group, start, end, buffers.get("pairs", end - start))
            logits.addmm_(pair_block, weight[:, start * block : end * block].t())
        ctx.save_for_backward(head, tail, weight)
        ctx.block_elements = block_elements
        return logits

    @staticmethod
    def backward(ctx, grad_logits):
        head, tail, weight = ctx.saved_tensors
        num_pairs, groups, block = head.shape
        grad_logits = grad_logits.to(weight.dtype).contiguous()
        head_units = head.reshape(num_pairs, groups * block)
        grad_head = torch.empty_like(head_units)
        grad_tail = torch.zeros_like(tail)
        grad_weight = torch.empty_like(weight)
        buffers = _BlockBuffers(head)
        for group, start, end in _column_blocks(num_pairs, groups, block, ctx.block_elements):
            columns = slice(start * block, end * block)
            pair_block = _pair_block(head_units, tail, group, start, end, buffers.get("pairs", end - start))
            torch.mm(grad_logits.t(), pair_block, out=grad_weight[:, columns])
            grad_pairs = buffers.get("grad", end - start)
            torch.mm(grad_logits, weight[:, columns], out=grad_pairs)
            grad_pairs = grad_pairs.view(num_pairs, end - start, block)
            # Batched matrix-vector products (bmm is about twice as fast as einsum's route here).
            grad_head[:, start:end] = torch.bmm(grad_pairs, tail[:, group, :, None]).squeeze(-1)
            grad_tail[:, group] += torch.bmm(head_units[:, None, start:end], grad_pairs).squeeze(1)
        return grad_head.view_as(head), grad_tail, grad_weight, grad_logits.sum(0), None


class _BlockBuffers:
    """Scratch [P, units * k] matrices reused across column blocks: a fresh large allocation per block is
    returned to the OS and page-faulted in again each time, which costs as much as the matmuls."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.storage: dict[str, torch.Tensor] = {}

    def get(self, name: str, units: int) -> torch.Tensor:
        num_pairs, _, block = self.like.shape
        size = num_pairs * units * block
        if name not in self.storage or self.storage[name].numel() < size:
            self.storage[name] = self.like.new_empty(size)
        return self.storage[name][:size].view(num_pairs, units * block)


def _column_blocks(num_pairs, groups, block, block_elements):
    """(group, first unit, end unit) of each column block; units u = g * k + i, at most `block_elements`
    entries of the pair matrix per block, never crossing a group."""
    units_per_block = max(1, min(block, block_elements // max(num_pairs * block, 1)))
    for group in range(groups):
        for first in range(0, block, units_per_block):
            yield group, group * block + first, group * block + min(first + units_per_block, block)


def _pair_block(head_units, tail, group, start, end, out):
    """Columns [start * k, end * k) of x, written into `out` [P, (end - start) * k]:
    z_h^g[i] * z_t^g[j] for units i in [start, end), j < k."""
    num_pairs, block = tail.shape[0], tail.shape[-1]
    torch.mul(head_units[:, start:end, None], tail[:, group, None, :], out=out.view(num_pairs, end - start, block))
    return out


class GroupedBilinear(nn.Module):
    """The grouped bilinear classifier of ATLOP (Eq. 14-15): logits from z_h and z_t.

    Args:
        pair_embedding_size: d1, the size of z_h and z_t.
        block_size: k, the group size (d1 / k groups).
        num_labels: R + 1 outputs.
        block_elements: largest slice of the pair matrix built at once (speed and memory only).
    """

    def __init__(self, pair_embedding_size: int, block_size: int, num_labels: int, block_elements: int = 2**21):
        super().__init__()
        self.block_size = block_size
        self.num_groups = pair_embedding_size // block_size
        self.block_elements = block_elements
        self.weight = nn.Parameter(torch.empty(num_labels, pair_embedding_size * block_size))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.int8_groups: list | None = None  # packed int8 weights of each group (`quantize_int8`), not saved

    def quantize_int8(self, activation_bits: int = 8) -> None:
        """Compute the logits with int8 GEMMs from now on (inference only): per group, the pair products
        z_h^g (x) z_t^g [P, k * k] times W_o^g [R + 1, k * k] (int8, one scale per relation) by PyTorch's dynamic int8
        linear kernel (fbgemm / oneDNN), which quantizes the products per call to `activation_bits` (8 where the CPU
        has int8 dot products, else 7: products would saturate)."""
        from torch.ao.quantization import per_channel_dynamic_qconfig

        groups = []
        weights = self.weight.detach().float().split(self.block_size**2, dim=1)  # W_o^g [R + 1, k * k] per group
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
            for weight in weights:
                observer = per_channel_dynamic_qconfig.weight()  # as `quantize_dynamic` quantizes a linear layer
                observer(weight)
                scales, zero_points = observer.calculate_qparams()
                quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
                groups.append(torch.ops.quantized.linear_prepack(quantized, None))
        self.int8_groups, self.int8_reduce_range = groups, activation_bits < 8

    def _int8_logits(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        num_pairs, groups, block = head.shape
        logits = self.bias.detach().float().expand(num_pairs, -1).clone()
        rows = max(1, self.block_elements // block**2)  # pairs whose products of one group are built at once
        # The kernel quantizes its input with one scale per call; scaling each pair's z_h^g and z_t^g to a largest
        # entry of 1 first (and its logits back) gives every pair's products the whole int8 range.
        floor = torch.finfo(torch.float32).tiny
        head, tail = head.float(), tail.float()
        head_scale = head.abs().amax(-1, keepdim=True).clamp(min=floor)  # [P, G, 1]
        tail_scale = tail.abs().amax(-1, keepdim=True).clamp(min=floor)
        head, tail, pair_scale = head / head_scale, tail / tail_scale, (head_scale * tail_scale)[..., 0]
        for start in range(0, num_pairs, rows):
            end = min(start + rows, num_pairs)
            for group, packed in enumerate(self.int8_groups):
                pairs = (head[start:end, group, :, None] * tail[start:end, group, None, :]).reshape(end - start, -1)
                group_logits = torch.ops.quantized.linear_dynamic(pairs, packed, self.int8_reduce_range)
                logits[start:end] += group_logits * pair_scale[start:end, group, None]
        return logits

    def split_groups(self, representation: torch.Tensor) -> torch.Tensor:
        """[P, d1] -> [P, G, k]."""
        return representation.view(-1, self.num_groups, self.block_size)

    def forward(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """
        Args:
            head, tail: z_h and z_t of shape `(num_pairs, G, k)`.

        Returns:
            Logits of shape `(num_pairs, num_labels)`.
        """
        if self.int8_groups is not None:
            return self._int8_logits(head, tail)
        weight, bias = self.weight, self.bias
        device_type = head.device.type
        if torch.is_autocast_enabled(device_type):
            # Autocast does not reach inside autograd Functions: cast once here, as F.linear would.
            compute_dtype = torch.get_autocast_dtype(device_type)
            head, tail, weight, bias = (t.to(compute_dtype) for t in (head, tail, weight, bias))
        with torch.autocast(device_type=device_type, enabled=False):
            return _GroupedBilinearFunction.apply(
                head.contiguous(), tail.contiguous(), weight, bias, self.block_elements
            )


class PemsclPreTrainedModel(PreTrainedModel):
    config_class = PemsclConfig
    base_model_prefix = "pemscl"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained` from safetensors weights only (`use_safetensors=True` by default);
        unreadable weights (a save or download cut short) end in a `ValueError` that names the folder and says
        what to do, not a safetensors parsing error."""
        # Safetensors only, unless the caller says otherwise: a pickled checkpoint can run code when loaded.
        kwargs.setdefault("use_safetensors", True)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError:
            folder = str(pretrained_model_name_or_path)
            pickled = [name for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
                       if os.path.isfile(os.path.join(folder, name))]
            if not kwargs["use_safetensors"] or not pickled:
                raise
            raise ValueError(
                f"{folder} holds only pickled weights ({pickled[0]}), and only safetensors weights are loaded (a "
                "pickle can run code when loaded). If you trust the file, convert it once: "
                f"PemsclModel.from_pretrained({folder!r}, use_safetensors=False).save_pretrained({folder!r})."
            ) from None
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(
                f"The weights of {pretrained_model_name_or_path} do not have the shapes its config.json describes "
                "(see the report above): config.json was edited (num_labels / id2label, pair_embedding_size, "
                "bilinear_block_size) or belongs to other weights. Restore the config.json saved with the weights."
            ) from None
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            raise ValueError(
                f"The weights of {pretrained_model_name_or_path} cannot be read ({error}): the file is incomplete, "
                "as a save or a download stopped halfway leaves it. Save the model again (or use a complete "
                "checkpoint), or download it again with force_download=True."
            ) from None

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, then the model card (`README.md`) rendered from `model_card_data` and
        the results in the folder, where this project's `model_cards` is installed (remote code alone skips it)."""
        if getattr(self, "inference_precision", "fp32") == "int8":
            raise ValueError("This model was quantized to int8 for inference (optimize_for_inference); its int8 "
                             "weights are not a checkpoint. Save the model before quantizing it, and quantize it "
                             "again after loading.")
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        try:
            from model_cards import write_model_card
        except ImportError:
            return
        write_model_card(save_directory, self)

    # The remote code of the `document-relation-extraction` pipeline, written next to the model's own.
    pipeline_files = ("pipeline_pemscl.py", "processing_pemscl.py")
    pipeline_class = "pipeline_pemscl.DocumentRelationExtractionPipeline"

    def save_pipeline_code(self, save_directory) -> None:
        """Add the pipeline's remote code and its `custom_pipelines` entry to a folder `save_pretrained` wrote, so
        `pipeline("document-relation-extraction", model=folder, trust_remote_code=True)` works where this project
        is not installed (the Hub folder of `--hub_dry_run` / `--push_to_hub` does this).

        Not part of every `save_pretrained`: with the entry, transformers insists on `trust_remote_code=True` for
        the folder even where the task is registered locally.
        """
        here = os.path.dirname(os.path.abspath(__file__))
        missing = [name for name in self.pipeline_files if not os.path.isfile(os.path.join(here, name))]
        if missing:
            raise FileNotFoundError(f"{missing} are not beside {__file__}: this copy of the model code cannot ship "
                                    "the pipeline.")
        for name in self.pipeline_files:
            shutil.copyfile(os.path.join(here, name), os.path.join(save_directory, name))
        config_path = os.path.join(save_directory, "config.json")
        with open(config_path, encoding="utf-8") as file:
            config = json.load(file)
        config["custom_pipelines"] = {
            "document-relation-extraction": {"impl": self.pipeline_class, "pt": ["AutoModel"], "tf": [], "type": "text"}
        }
        with open(config_path, "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2, sort_keys=True)
            file.write("\n")

    def _init_weights(self, module):
        std = getattr(self.config.encoder, "initializer_range", 0.02)
        if getattr(module, "_is_pemscl_head", False) and self.config.head_init == "fan_in_uniform":
            # torch.nn.Linear's own default (kaiming_uniform with a=sqrt(5) is uniform(+-1/sqrt(fan_in))).
            bound = 1.0 / module.weight.shape[1] ** 0.5
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.Linear, GroupedBilinear)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        offset = self.config.relation_bias_offset() if isinstance(module, GroupedBilinear) else 0.0
        if offset:
            # Both branches above have just drawn the bias, so this offset is applied once per initialization.
            with torch.no_grad():
                module.bias[1:] -= offset


class PemsclModel(PemsclPreTrainedModel):
    """
    Document-level relation extraction with PEMSCL (Guo et al., EACL 2023): an encoder with the ATLOP pair
    head (entity markers, logsumexp mention pooling, localized context pooling, grouped bilinear classifier)
    and the pairwise moving-threshold + entropy + supervised contrastive objective.

    The batch format is the one `data_collators.DataCollatorForDocRE` builds (docs/batch_format.md).
    Documents longer than `config.encoder_window_length` tokens are encoded in windows (`config.window_scheme`);
    `config.max_document_length` cuts longer documents first.
    """

    # New layers, trained with the larger learning rate (ATLOP: 1e-4 vs 2e-5 for the encoder).
    head_parameter_prefixes = ("head_extractor.", "tail_extractor.", "bilinear.")

    def __init__(self, config: PemsclConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        # What the model card says beyond the config (the run's arguments, a Hub id); rendered on every save.
        self.model_card_data: dict = {}
        # The arithmetic of inference (`optimize_for_inference`); not saved: a loaded model starts in fp32.
        self.inference_precision = "fp32"
        if encoder is None:
            encoder = _encoder_from_config(config.encoder)
        self.encoder = encoder
        self.config.encoder = encoder.config
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):  # the tokenizer's, as the Trainer expects them
            if getattr(self.config, name, None) is None and getattr(encoder.config, name, None) is not None:
                setattr(self.config, name, getattr(encoder.config, name))
        configure_encoder_attention(encoder, config.encoder_attention)
        hidden_size = encoder.config.hidden_size
        self.head_extractor = nn.Linear(2 * hidden_size, config.pair_embedding_size)
        self.tail_extractor = nn.Linear(2 * hidden_size, config.pair_embedding_size)
        self.bilinear = GroupedBilinear(
            config.pair_embedding_size, config.bilinear_block_size, config.num_labels, config.bilinear_block_elements
        )
        for layer in (self.head_extractor, self.tail_extractor, self.bilinear):
            layer._is_pemscl_head = True  # initialized by `config.head_init`
        self.post_init()

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path: str, **config_kwargs) -> "PemsclModel":
        """Start a PEMSCL model from a pretrained encoder (local folder or Hub id); the head is new.

        Args:
            encoder_name_or_path: anything `AutoModel.from_pretrained` takes.
            **config_kwargs: [`PemsclConfig`] settings (`id2label`, `loss`, ...). `encoder_kwargs` (a dict) is
                passed to `AutoModel.from_pretrained` (e.g. `{"revision": ...}`).
        """
        encoder_kwargs = config_kwargs.pop("encoder_kwargs", {})
        encoder = _encoder_from_pretrained(encoder_name_or_path, **encoder_kwargs)
        config = PemsclConfig(encoder=encoder.config.to_dict(), **config_kwargs)
        model = cls(config, encoder=encoder)
        return model

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_encoder_attention(self, kind: str) -> str:
        """Switch `config.encoder_attention` (`"sdpa"` or `"eager"`) on this model; returns the implementation in
        use (see `configure_encoder_attention`)."""
        self.config.encoder_attention = kind
        self.config.validate_pemscl_settings()
        return configure_encoder_attention(self.encoder, kind)

    def head_parameter_names(self) -> list[str]:
        """Names of the parameters that are new (not from the pretrained encoder)."""
        return [name for name, _ in self.named_parameters() if name.startswith(self.head_parameter_prefixes)]

    # ---------------------------------------------------------------- encoding
    def encode(self, input_ids, attention_mask, mention_positions):
        """Encode documents of any length and gather last-layer attention rows of the mentions.

        Args:
            input_ids, attention_mask: `(B, L)`; each row `[CLS] tokens [SEP]` then padding.
            mention_positions: `(B, E, M)`, -1 where absent.

        Returns:
            hidden `(B, L, d)` and mention attention `(B, E * M, H, L)` (absent mentions: arbitrary rows).
        """
        window = self.config.encoder_window_length
        flat_positions = mention_positions.flatten(1)  # [B, E*M], -1 = absent
        if input_ids.shape[1] <= window:
            flat_positions = flat_positions.clamp(min=0)
            outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
            attention = outputs.attentions[-1]  # [B, H, L, L]
            rows = torch.gather(
                attention, 2, flat_positions[:, None, :, None].expand(-1, attention.shape[1], -1, attention.shape[3])
            )  # [B, H, E*M, L]
            return outputs.last_hidden_state, rows.transpose(1, 2)
        return self._encode_windows(input_ids, attention_mask, flat_positions, window)

    def _encode_windows(self, input_ids, attention_mask, flat_positions, window):
        """Encode documents as windows (`config.window_scheme`); hidden states averaged over the windows that
        cover each token, mention attention rows summed over them and renormalized."""
        device = input_ids.device
        batch_size, length = input_ids.shape
        lengths = attention_mask.sum(1).tolist()
        if self.config.window_scheme == "atlop":
            end_tokens = 2 if self.config.roberta_like_encoder else 1
            layout = _atlop_windows(lengths, window, end_tokens)
        else:
            layout = _overlapping_windows(lengths, window, self.config.window_stride)
        window_docs = torch.tensor([doc for doc, _, _ in layout], device=device)
        pad = [-1] * window
        # sources: the document position each window token is read from; targets: the document position its
        # outputs go to (-1: the token is the window's own and contributes nothing); -1 past the window's end.
        window_sources = torch.tensor([(s + pad)[:window] for _, s, _ in layout], device=device)  # [NW, W]
        window_targets = torch.tensor([(t + pad)[:window] for _, _, t in layout], device=device)  # [NW, W]
        valid = window_sources >= 0
        pad_id = self.config.encoder.pad_token_id if self.config.encoder.pad_token_id is not None else 0
        window_ids = input_ids[window_docs[:, None], window_sources.clamp(min=0)].masked_fill(~valid, pad_id)
        outputs = self.encoder(input_ids=window_ids, attention_mask=valid.long(), output_attentions=True)
        window_hidden, window_attention = outputs.last_hidden_state, outputs.attentions[-1]  # [NW,W,d], [NW,H,W,W]
        kept = window_targets >= 0

        # Hidden states: average over the windows that cover each token.
        hidden_size = window_hidden.shape[-1]
        flat_index = (window_docs[:, None] * length + window_targets.clamp(min=0))[kept]  # [V]
        hidden = window_hidden.new_zeros(batch_size * length, hidden_size).index_add(0, flat_index, window_hidden[kept])
        coverage = window_hidden.new_zeros(batch_size * length).index_add(
            0, flat_index, torch.ones_like(flat_index, dtype=window_hidden.dtype)
        )
        hidden = (hidden / coverage.clamp(min=1).unsqueeze(-1)).view(batch_size, length, hidden_size)

        # Attention rows of the mentions: every window that covers a mention contributes its row, spread onto
        # document positions; rows are summed over those windows and renormalized.
        heads = window_attention.shape[1]
        num_mentions = flat_positions.shape[1]
        local_of = window_targets.new_full((len(layout), length), -1)  # [NW, L]: window row of each position
        window_of_kept, local_of_kept = kept.nonzero(as_tuple=True)
        local_of[window_of_kept, window_targets[kept]] = local_of_kept
        mention_pos = flat_positions[window_docs]  # [NW, EM], -1 = absent
        mention_local = torch.gather(local_of, 1, mention_pos.clamp(min=0)).masked_fill(mention_pos < 0, -1)
        window_index, mention_index = (mention_local >= 0).nonzero(as_tuple=True)  # [V2]
        local_row = mention_local[window_index, mention_index]
        rows = window_attention[window_index, :, local_row, :]  # [V2, H, W]
        target_row = window_docs[window_index] * num_mentions + mention_index  # [V2]
        columns = window_targets[window_index].masked_fill(~kept[window_index], length)  # [V2, W]; dropped -> dummy
        spread = rows.new_zeros(batch_size * num_mentions, heads, length + 1)
        spread.index_put_(
            (target_row[:, None, None].expand_as(rows), torch.arange(heads, device=device)[None, :, None].expand_as(rows),
             columns[:, None, :].expand_as(rows)),
            rows,
            accumulate=True,
        )
        spread = spread[..., :length]
        spread = spread / spread.sum(-1, keepdim=True).clamp(min=torch.finfo(spread.dtype).tiny)  # 1e-12 is 0 in fp16
        return hidden, spread.view(batch_size, num_mentions, heads, length)

    # ---------------------------------------------------------------- pair head
    def pair_representations(self, hidden, mention_attention, mention_positions, hts, pair_document_index):
        """z_h and z_t (Eq. 14) for every pair.

        Args:
            hidden: `(B, L, d)`; mention_attention: `(B, E * M, H, L)`; mention_positions: `(B, E, M)`;
            hts: `(P, 2)`; pair_document_index: `(P,)`.

        Returns:
            head and tail representations, each `(P, d1)`, and each pair's context attention over its document's
            tokens `(P, L)` (the localized context pooling weights).
        """
        batch_size, num_entities, num_mentions = mention_positions.shape
        hidden_size = hidden.shape[-1]
        mention_mask = mention_positions >= 0  # [B, E, M]
        entity_has_mention = mention_mask.any(-1)  # [B, E]
        # Absent entities get their first slot (position 0) so logsumexp stays finite; zeroed below.
        pool_mask = mention_mask.clone()
        pool_mask[..., 0] |= ~entity_has_mention
        positions = mention_positions.clamp(min=0).flatten(1)  # [B, E*M]

        # Logsumexp pooling of the start-marker embeddings (appendix D).
        mention_embeddings = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden_size))
        mention_embeddings = mention_embeddings.view(batch_size, num_entities, num_mentions, hidden_size).float()
        mention_embeddings = mention_embeddings.masked_fill(~pool_mask.unsqueeze(-1), float("-inf"))
        entity_embeddings = torch.logsumexp(mention_embeddings, dim=2)  # [B, E, d]
        # An entity whose mentions were all cut (`max_document_length`) is a zero vector, as in the research code.
        entity_embeddings = entity_embeddings.masked_fill(~entity_has_mention.unsqueeze(-1), 0.0)

        # Entity attention: mean of its mentions' attention rows.
        heads, length = mention_attention.shape[-2:]
        weights = mention_mask.to(mention_attention.dtype).view(batch_size, num_entities, num_mentions, 1, 1)
        entity_attention = (mention_attention.view(batch_size, num_entities, num_mentions, heads, length) * weights).sum(2)
        entity_attention = entity_attention / weights.sum(2).clamp(min=1)  # [B, E, H, L]

        head_index = pair_document_index * num_entities + hts[:, 0]
        tail_index = pair_document_index * num_entities + hts[:, 1]
        entity_embeddings = entity_embeddings.view(batch_size * num_entities, hidden_size)

        # Localized context pooling: attention shared by both entities, averaged over heads,
        # mean_k A_h[k, l] * A_t[k, l]. At each position l the sums over heads for every entity pair of a
        # document form one small Gram matrix [E, E]: one batched matmul, then a gather of the pairs. This
        # never builds the two gathered [P, H, L] tensors (9x faster forward + backward on 2,494 pairs).
        per_position = entity_attention.permute(0, 3, 1, 2)  # [B, L, E, H]
        shared = torch.matmul(per_position, per_position.transpose(-1, -2))  # [B, L, E, E]
        pair_attention = shared[pair_document_index, :, hts[:, 0], hts[:, 1]] / heads  # [P, L]
        pair_attention = pair_attention / (pair_attention.sum(-1, keepdim=True) + 1e-5)
        context = _per_document_matmul(pair_attention, hidden, pair_document_index)  # [P, d]

        # W [h_e; c] = W_e h_e + W_c c (Eq. 14): the entity half runs once per entity, not once per pair.
        entity_embeddings = entity_embeddings.to(context.dtype)
        z_h = _split_linear(self.head_extractor, entity_embeddings, head_index, context)
        z_t = _split_linear(self.tail_extractor, entity_embeddings, tail_index, context)
        return torch.tanh(z_h), torch.tanh(z_t), pair_attention

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        mention_positions: torch.LongTensor,
        hts: torch.LongTensor,
        pair_document_index: torch.LongTensor,
        labels: torch.FloatTensor | None = None,
        negative_mask: torch.BoolTensor | None = None,
        sentence_ids: torch.LongTensor | None = None,
        evidence_labels: torch.FloatTensor | None = None,
        return_predictions: bool = False,
        **unused,
    ) -> PemsclModelOutput:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): documents with entity markers, any length.
            attention_mask (`torch.LongTensor` of shape `(B, L)`): 1 on tokens, 0 on padding.
            mention_positions (`torch.LongTensor` of shape `(B, E, M)`): start-marker position of each mention,
                -1 where absent.
            hts (`torch.LongTensor` of shape `(P, 2)`): head and tail entity index of every pair in its document.
            pair_document_index (`torch.LongTensor` of shape `(P,)`): the batch row of each pair (non-decreasing).
            labels (`torch.FloatTensor` of shape `(P, R + 1)`, *optional*): multi-hot relations, NA at column 0.
            negative_mask (`torch.BoolTensor` of shape `(P, R + 1)`, *optional*): negative labels kept for NA
                pairs (Eq. 12). Drawn per pair in training when `config.negative_sample_ratio < 1` and not given.
            sentence_ids (`torch.LongTensor` of shape `(B, L)`, *optional*): sentence of each token, -1 outside
                sentences; gives `evidence`.
            evidence_labels (`torch.FloatTensor` of shape `(P, S)`, *optional*): multi-hot gold evidence sentences
                of each pair, for the evidence term (`config.evidence_weight`).
            return_predictions (`bool`): also decode relations (`predictions`, `(P, R + 1)` bool) and, with
                `sentence_ids`, evidence (`evidence_predictions`).

        Returns:
            [`PemsclModelOutput`].
        """
        unknown = set(unused) - {"num_items_in_batch", "return_dict", "output_attentions", "output_hidden_states"}
        if unknown:
            raise TypeError(f"PemsclModel.forward got unexpected inputs {sorted(unknown)}")
        _check_batch(input_ids, attention_mask, mention_positions, hts, pair_document_index, labels, self.config,
                     sentence_ids, evidence_labels)
        if self.config.max_document_length is not None:
            if sentence_ids is not None:
                sentence_ids = truncate_sentence_ids(sentence_ids, attention_mask, self.config.max_document_length)
            input_ids, attention_mask, mention_positions = truncate_documents(
                input_ids, attention_mask, mention_positions, self.config.max_document_length
            )
        train_evidence = labels is not None and evidence_labels is not None and self.config.evidence_weight > 0
        with self.inference_autocast(input_ids.device):
            hidden, mention_attention = self.encode(input_ids, attention_mask, mention_positions)
            head, tail, pair_attention = self.pair_representations(hidden, mention_attention, mention_positions, hts,
                                                                   pair_document_index)
            head, tail = self.bilinear.split_groups(head), self.bilinear.split_groups(tail)
            logits = self.bilinear(head, tail).float()
        embeddings = GroupedPairEmbeddings(head, tail)

        output = PemsclModelOutput(logits=logits, pair_embeddings=embeddings)
        if sentence_ids is not None and (train_evidence or not self.training):
            num_sentences = (evidence_labels.shape[1] if evidence_labels is not None
                             else int(sentence_ids.max()) + 1 if sentence_ids.numel() else 0)
            output.evidence = sentence_evidence(pair_attention, sentence_ids[pair_document_index], num_sentences)
        if labels is not None:
            labels = labels.to(logits.device)
            if negative_mask is None and self.training and self.config.negative_sample_ratio < 1.0:
                negative_mask = sample_negative_mask(labels, self.config.negative_sample_ratio)
            terms = self._objective(logits, labels, embeddings, negative_mask)
            output.loss = terms["loss"]
            output.pmt_loss = terms.get("pmt_loss")
            output.entropy_loss = terms.get("entropy_loss")
            output.contrastive_loss = terms.get("contrastive_loss")
            if train_evidence:
                per_pair = evidence_loss(output.evidence, evidence_labels.to(logits.device))
                output.evidence_loss = per_pair.sum() / max(per_pair.numel(), 1)
                output.loss = output.loss + self.config.evidence_weight * output.evidence_loss
        if return_predictions:
            output.predictions = self.decode(logits)
            if output.evidence is not None:
                output.evidence_predictions = self.decode_evidence(output.evidence)
        return output

    def inference_autocast(self, device: torch.device):
        """The autocast of `inference_precision` (bf16 / fp16) for an inference forward; a no-op otherwise."""
        if self.inference_precision == "int8" and self.training:
            raise RuntimeError("This model was quantized to int8 for inference (optimize_for_inference) and cannot "
                               "train; load it again from its folder to train it.")
        dtype = AUTOCAST_DTYPES.get(self.inference_precision)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and not self.training)

    def _objective(self, logits, labels, embeddings, negative_mask):
        config = self.config
        kwargs = dict(config.objective_kwargs(), negative_mask=negative_mask)
        needs_contrastive = config.loss == "pemscl" and config.use_contrastive and config.contrastive_weight > 0
        if needs_contrastive and self.training and config.contrastive_global_batch and _world_size() > 1:
            return _distributed_objective(logits, labels, embeddings, kwargs)
        return pemscl_objective(logits, labels, embeddings if needs_contrastive else None, **kwargs)

    def decode(self, logits: torch.Tensor) -> torch.BoolTensor:
        """Relations whose logit beats the threshold logit (a global 0 for `"bce"`), at most
        `config.max_relations_per_pair`; NA (column 0) when none. Returns a bool tensor like `logits`."""
        return decode_relations(logits, max_relations=self.config.max_relations_per_pair,
                                threshold=decision_threshold(self.config.loss))

    def decode_evidence(self, evidence: torch.Tensor) -> torch.BoolTensor:
        """Evidence sentences of each pair (`PemsclModelOutput.evidence`): those holding at least
        `config.evidence_threshold` of its distribution. Returns a bool tensor like `evidence`."""
        return decode_evidence(evidence, self.config.evidence_threshold)


# ------------------------------------------------------------------- inference precision
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Beside an ONNX encoder, whose outputs are float32, the PyTorch head runs in one of these (no autocast).
ONNX_HEAD_PRECISIONS = ("fp32", "int8")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Encoder linear layers that int8 leaves in float, as regular expressions on their names in the encoder: chosen by
# the agreement of int8 with fp32 decisions on held-out documents (docs/speed.md).
INT8_KEEP_FLOAT = (r"layer\.\d+\.output\.dense$",)


def cpu_computes_bf16_natively() -> bool | None:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX) that oneDNN uses; None if PyTorch cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def optimize_for_inference(model: "PemsclModel", precision: str = "fp32",
                           int8_keep_float: tuple[str, ...] = INT8_KEEP_FLOAT) -> "PemsclModel":
    """Prepare a [`PemsclModel`] for inference in `precision`, in place; returns it, in eval mode, with the same
    `forward` and outputs.

    - `"fp32"`: as trained.
    - `"bf16"` / `"fp16"`: the forward runs under autocast (as a `--bf16` run evaluates); logits come back in fp32.
      The whole forward, not the encoder alone: the pair head is about half of the inference time, and on held-out
      documents the whole forward in bf16 kept 99.3% of fp32's decisions (docs/speed.md).
      bf16 on CPUs with bf16 instructions (AVX512-BF16, AMX) and on GPUs; fp16 on GPUs only.
    - `"int8"` (CPU): the encoder's linear layers become dynamic int8 layers (int8 weights per output channel,
      activations quantized per batch), except those matching `int8_keep_float`, and so does the grouped bilinear
      classifier, group by group (`GroupedBilinear.quantize_int8`); the localized context pooling and the
      extractors stay in fp32.

    Raises:
        ValueError: For an unknown precision, fp16 or int8 on a device that cannot run it, or a model already
            prepared for another precision (load it again).
    """
    _check_precision(precision)
    current = getattr(model, "inference_precision", None)
    if current is None:
        raise TypeError(f"optimize_for_inference takes a PemsclModel, got {type(model).__name__}.")
    if current == precision:
        return model.eval()
    if current != "fp32":
        raise ValueError(f"The model is already prepared for {current} inference; load it again to use {precision}.")
    device = next(model.parameters()).device
    if precision not in ONNX_HEAD_PRECISIONS and getattr(model.encoder, "onnx_file", None) is not None:
        raise ValueError(f"precision={precision!r}: this model runs its encoder in ONNX Runtime, whose outputs stay "
                         "in float32; its head runs in fp32 or int8 (load the model again for bf16 / fp16).")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' runs on GPUs; on a CPU use 'bf16' (with bf16 instructions) or 'int8'.")
    if precision == "bf16" and device.type == "cpu" and cpu_computes_bf16_natively() is False:
        logger.warning("precision='bf16' on a CPU without bf16 instructions (no AVX512-BF16 or AMX): PyTorch "
                       "emulates bf16 and inference runs slower than fp32. Use 'int8' or 'fp32' on this machine.")
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError(f"precision='int8' runs on CPUs (the model is on {device}); on a GPU use 'bf16' or "
                             "'fp16'.")
        _quantize_encoder_linears(model.encoder, int8_keep_float)
        model.bilinear.quantize_int8(activation_bits=8 if cpu_has_int8_dot_products() else 7)
        model.requires_grad_(False)
    model.inference_precision = precision
    return model.eval()


def _check_precision(precision: str) -> None:
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {list(INFERENCE_PRECISIONS)}.")


def prepare_for_inference(model: "PemsclModel", precision: str | None = None, onnx_file: str | None = None,
                          onnx_threads: int | None = None) -> "PemsclModel":
    """What a user's `precision=` and `onnx_file=` ask of a model, the one rule every place that predicts follows
    (the pipeline, the spaCy component, `run_docre.py`); in place, returns the model.

    - No `onnx_file`: `optimize_for_inference(model, precision)` (nothing for None).
    - An `onnx_file` (written by `python -m modeling_pemscl.export_onnx`): the encoder runs in ONNX Runtime in the
      file's own precision (`use_onnx_encoder`); `precision` is then that of the pair head, which stays in
      PyTorch: None / "fp32", or "int8" (the grouped bilinear in int8; the fastest CPU path with an int8 file).

    Raises:
        ValueError: For an unknown precision, bf16 / fp16 with an `onnx_file`, what `optimize_for_inference` and
            `use_onnx_encoder` refuse, or where the project's ONNX code is not installed (not part of the remote code).
    """
    if onnx_file is None:
        return model if precision is None else optimize_for_inference(model, precision)
    if precision is not None:
        _check_precision(precision)  # before the ONNX branch, so an unknown one is named as such
    if precision not in (None, *ONNX_HEAD_PRECISIONS):
        raise ValueError(f"An ONNX file runs the encoder in its own precision and the pair head in fp32 or int8; "
                         f"precision {precision!r} cannot go with it (use {precision} without the file).")
    try:
        export_onnx = importlib.import_module("modeling_pemscl.export_onnx")
    except ImportError as error:
        raise ValueError(f"onnx_file= needs the pemscl project installed with its onnx extra "
                         f"(pip install 'pemscl[onnx]' in the clone): {error}") from None
    export_onnx.use_onnx_encoder(model, onnx_file, threads=onnx_threads)  # before int8: it checks the float weights
    return optimize_for_inference(model, precision or "fp32")


def cpu_has_int8_dot_products() -> bool:
    """Whether this CPU multiplies int8 with int32 accumulation (AVX512-VNNI, AVX-VNNI or AMX; read from
    /proc/cpuinfo, so False where that cannot be read): there int8 kernels need not keep activations to 7 bits."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def _quantize_encoder_linears(encoder: nn.Module, keep_float: tuple[str, ...]) -> None:
    """Dynamic int8 linear layers in place of the encoder's `nn.Linear`s whose names match none of `keep_float`.

    PyTorch's dynamic quantization (`torch.ao.quantization.quantize_dynamic`, fbgemm / oneDNN int8 kernels) is
    used: torchao's int8 configs, its successor, run no faster than fp32 on a CPU without `torch.compile`. Its
    layers quantize activations to 7 bits, because int8 products saturate on CPUs without int8 dot products; on
    CPUs with them the full 8 bits are used (on held-out documents: 95.6% of fp32's decisions kept instead of 89.4%).
    """
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:
        raise ValueError(f"precision='int8' needs PyTorch's dynamic quantization, which this PyTorch "
                         f"({torch.__version__}) lacks: {error}") from None
    names = [name for name, module in encoder.named_modules()
             if type(module) is nn.Linear and not any(re.search(pattern, name) for pattern in keep_float)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        quantize_dynamic(encoder, {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8,
                         inplace=True)
    if cpu_has_int8_dot_products():
        full_range = _full_range_class(DynamicInt8Linear)
        for module in encoder.modules():
            if type(module) is DynamicInt8Linear:
                module.__class__ = full_range


@functools.lru_cache(maxsize=None)
def _full_range_class(dynamic_linear: type) -> type:
    """A dynamic int8 linear layer that quantizes its activations to 8 bits, not 7."""

    class FullRangeDynamicInt8Linear(dynamic_linear):
        def forward(self, x):
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    return FullRangeDynamicInt8Linear


# ------------------------------------------------------------------- helpers
def _encoder_from_config(encoder_config):
    """The encoder with eager attention (the head reads last-layer attention) and no pooler."""
    try:
        return AutoModel.from_config(encoder_config, attn_implementation="eager", add_pooling_layer=False)
    except TypeError:  # encoders without a pooler argument
        return AutoModel.from_config(encoder_config, attn_implementation="eager")


class _DropPoolerOnlyLoadReport(logging.Filter):
    """Drops transformers' load report when the only keys it lists are the pooler's: the encoder is built without
    its pooler, which the head never reads, so those keys are expected to be left unused."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        keys = [line.split("|")[0].strip() for line in message.splitlines() if line.count("|") >= 2]
        keys = [key for key in keys if key and key != "Key" and not key.startswith("-")]
        return not keys or not all(key.startswith("pooler.") for key in keys)


def _encoder_from_pretrained(name_or_path, **kwargs):
    """The pretrained encoder, from safetensors weights only (a pickled `pytorch_model.bin` can run code)."""
    kwargs.setdefault("use_safetensors", True)
    report_logger = logging.getLogger("transformers.modeling_utils")
    pooler_filter = _DropPoolerOnlyLoadReport()
    report_logger.addFilter(pooler_filter)
    try:
        try:
            return AutoModel.from_pretrained(name_or_path, attn_implementation="eager", add_pooling_layer=False, **kwargs)
        except TypeError:
            return AutoModel.from_pretrained(name_or_path, attn_implementation="eager", **kwargs)
    except OSError as error:
        if kwargs["use_safetensors"] and "safetensors" in str(error).lower():
            raise FileNotFoundError(
                f"{name_or_path} has no safetensors weights (model.safetensors), and only those are loaded: convert "
                "the checkpoint once (load it with AutoModel.from_pretrained and save_pretrained it), or pass "
                "encoder_kwargs={'use_safetensors': False} if you trust its pickled weights."
            ) from error
        raise
    finally:
        report_logger.removeFilter(pooler_filter)


def _overlapping_windows(lengths, window, stride=None):
    """`window_scheme="overlapping"`: `[CLS] chunk [SEP]` windows every `stride` tokens (default: half a window's
    content) covering each document; every token, the window's [CLS] and [SEP] included, maps to the document
    position it was read from. Returns `(document, sources, targets)` per window (see `_encode_windows`)."""
    content = window - 2
    stride = stride or max(content // 2, 1)
    layout = []
    for doc, doc_length in enumerate(lengths):
        n_content = doc_length - 2
        starts = [0] if n_content <= content else list(range(0, n_content - content, stride)) + [n_content - content]
        for start in starts:
            positions = [0, *range(1 + start, 1 + start + min(content, n_content)), doc_length - 1]
            layout.append((doc, positions, positions))
    return layout


def _atlop_windows(lengths, window, end_tokens):
    """`window_scheme="atlop"`, ATLOP's `process_long_input`: a document that fits one window is that window; a
    longer one is read as `tokens[:W - e] + e separators` and `[CLS] + tokens[len - W + 1:]`, and the appended
    separators and the second window's [CLS] map to no document position (target -1). The separators are read
    from the document's final token, the [CLS] from its first. Returns `(document, sources, targets)` per window."""
    layout = []
    for doc, doc_length in enumerate(lengths):
        if doc_length <= window:
            positions = list(range(doc_length))
            layout.append((doc, positions, positions))
            continue
        if doc_length > 2 * window:
            raise ValueError(
                f"Document {doc} of the batch has {doc_length} tokens; window_scheme='atlop' encodes at most "
                f"{2 * window} (two windows of {window}). Set config.max_document_length to at most {2 * window}."
            )
        first = list(range(window - end_tokens))
        layout.append((doc, first + [doc_length - 1] * end_tokens, first + [-1] * end_tokens))
        last = list(range(doc_length - window + 1, doc_length))
        layout.append((doc, [0] + last, [-1] + last))
    return layout


def truncate_documents(input_ids, attention_mask, mention_positions, max_length):
    """Cut documents to `max_length` tokens the way the research code's featurization does: the first
    `max_length - 1` tokens, then the document's final special token; mentions whose start marker lies at or past
    `max_length` are dropped (-1). A mention whose marker was cut but lands on position `max_length - 1` is kept and
    reads the final token there, as in the research code.

    Args:
        input_ids, attention_mask: `(B, L)`; mention_positions: `(B, E, M)`.

    Returns:
        The three tensors, `(B, min(L, max_length))` and `(B, E, M)`.
    """
    if input_ids.shape[1] <= max_length:
        return input_ids, attention_mask, mention_positions
    lengths = attention_mask.sum(1)
    long_rows = (lengths > max_length).nonzero(as_tuple=True)[0]
    final_tokens = input_ids[long_rows, lengths[long_rows] - 1]
    input_ids = input_ids[:, :max_length].clone()
    input_ids[long_rows, max_length - 1] = final_tokens
    mention_positions = mention_positions.masked_fill(mention_positions >= max_length, -1)
    return input_ids, attention_mask[:, :max_length], mention_positions


def truncate_sentence_ids(sentence_ids, attention_mask, max_length):
    """`sentence_ids` `(B, L)` cut as `truncate_documents` cuts the documents: a cut document's last position holds
    its final special token, which belongs to no sentence (-1)."""
    if sentence_ids.shape[1] <= max_length:
        return sentence_ids
    long_rows = (attention_mask.sum(1) > max_length).nonzero(as_tuple=True)[0]
    sentence_ids = sentence_ids[:, :max_length].clone()
    sentence_ids[long_rows, max_length - 1] = -1
    return sentence_ids


def _split_linear(linear: nn.Linear, entity_embeddings, entity_index, context):
    """`linear(cat([entity_embeddings[entity_index], context], -1))` with the entity half computed per entity."""
    hidden_size = entity_embeddings.shape[-1]
    per_entity = F.linear(entity_embeddings, linear.weight[:, :hidden_size])
    return per_entity[entity_index] + F.linear(context, linear.weight[:, hidden_size:], linear.bias)


def _per_document_matmul(pair_weights, hidden, pair_document_index):
    """`pair_weights[p] @ hidden[pair_document_index[p]]` for every pair, as one padded batched matmul.

    Args:
        pair_weights: `(P, L)`; hidden: `(B, L, d)`; pair_document_index: `(P,)`, non-decreasing.

    Returns:
        `(P, d)`.
    """
    batch_size = hidden.shape[0]
    num_pairs = pair_weights.shape[0]
    if num_pairs == 0:
        return hidden.new_zeros(0, hidden.shape[-1])
    counts = torch.bincount(pair_document_index, minlength=batch_size)
    offsets = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_pairs, device=hidden.device) - offsets[pair_document_index]
    padded = pair_weights.new_zeros(batch_size, int(counts.max()), pair_weights.shape[-1])
    padded[pair_document_index, rank] = pair_weights
    context = torch.bmm(padded.to(hidden.dtype), hidden)
    return context[pair_document_index, rank]


def _check_batch(input_ids, attention_mask, mention_positions, hts, pair_document_index, labels, config,
                 sentence_ids=None, evidence_labels=None):
    """Shape checks that turn a wrong batch into a readable error instead of an indexing failure."""
    if sentence_ids is not None and sentence_ids.shape != input_ids.shape:
        raise ValueError(f"sentence_ids must be (B, L) like input_ids {tuple(input_ids.shape)}; got "
                         f"{tuple(sentence_ids.shape)}.")
    if evidence_labels is not None and (
            sentence_ids is None or evidence_labels.dim() != 2 or evidence_labels.shape[0] != hts.shape[0]
            or (sentence_ids.numel() and evidence_labels.shape[1] <= int(sentence_ids.max()))):
        raise ValueError(f"evidence_labels must be (P, S) with P={hts.shape[0]} pairs and S above every sentence index "
                         f"of sentence_ids (which it needs); got {tuple(evidence_labels.shape)}.")
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, L); got {tuple(input_ids.shape)} and "
            f"{tuple(attention_mask.shape)}."
        )
    if mention_positions.dim() != 3 or mention_positions.shape[0] != input_ids.shape[0]:
        raise ValueError(f"mention_positions must be (B, E, M) with B={input_ids.shape[0]}; got {tuple(mention_positions.shape)}.")
    if hts.dim() != 2 or hts.shape[1] != 2 or pair_document_index.shape != (hts.shape[0],):
        raise ValueError(
            f"hts must be (P, 2) and pair_document_index (P,); got {tuple(hts.shape)} and {tuple(pair_document_index.shape)}."
        )
    if labels is not None and labels.shape != (hts.shape[0], config.num_labels):
        raise ValueError(
            f"labels must be (P, num_labels) = ({hts.shape[0]}, {config.num_labels}); got {tuple(labels.shape)}. "
            "Does the relation vocabulary of the data match config.id2label?"
        )
    if hts.numel() and (int(hts.max()) >= mention_positions.shape[1] or int(hts.min()) < 0):
        raise ValueError(f"hts holds entity index {int(hts.max())} but mention_positions has {mention_positions.shape[1]} entities.")


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _distributed_objective(logits, labels, embeddings, kwargs):
    """The objective of the global batch under torch.distributed.

    Every process gathers the pair embeddings and labels of all processes (autograd-aware all-gather), so each
    local anchor's contrastive term (Eq. 8-10) runs over the global batch. Per-pair terms are weighted by
    world_size / global pair count: after DDP averages gradients over processes, the update equals the
    single-process one on the concatenated batch.
    """
    from torch.distributed.nn.functional import all_gather

    world_size = torch.distributed.get_world_size()
    rank = torch.distributed.get_rank()
    local_count = torch.tensor([labels.shape[0]], device=labels.device)
    counts = [torch.zeros_like(local_count) for _ in range(world_size)]
    torch.distributed.all_gather(counts, local_count)
    counts = [int(c) for c in counts]
    largest = max(counts)

    def gather(tensor):
        padded = F.pad(tensor, (0,) * (2 * (tensor.dim() - 1)) + (0, largest - tensor.shape[0]))
        parts = all_gather(padded.contiguous())
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    global_embeddings = GroupedPairEmbeddings(gather(embeddings.head), gather(embeddings.tail))
    global_labels = gather(labels)
    per_pair = contrastive_loss(
        global_embeddings, global_labels, kwargs["temperature"], average=kwargs["contrastive_average"],
        anchors=kwargs["contrastive_anchors"],
    )
    start = sum(counts[:rank])
    local_contrastive = per_pair[start : start + counts[rank]]
    terms = pemscl_objective(logits, labels, None, contrastive_per_pair=local_contrastive, **kwargs)
    # pemscl_objective averaged over the local pairs; rescale so that the mean over processes of the local
    # losses is the global-batch loss.
    total = max(sum(counts), 1)
    scale = world_size * labels.shape[0] / total
    return {name: (value * scale if value is not None else None) for name, value in terms.items()}


__all__ = ["PemsclModel", "PemsclPreTrainedModel", "PemsclModelOutput", "GroupedBilinear"]
