"""PEMSCL model configuration (ships to the Hub as remote code: imports transformers and its siblings only)."""

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .losses import CONTRASTIVE_ANCHORS, CONTRASTIVE_AVERAGES, GAMMA_KINDS, LOSS_KINDS, check_choice
from .processing_pemscl import NA_LABEL

HEAD_INITS = ("normal", "fan_in_uniform")
ENCODER_ATTENTIONS = ("sdpa", "eager")
WINDOW_SCHEMES = ("overlapping", "atlop")
# Encoders whose tokenizers end a sequence with two separators between segments (`</s></s>`): ATLOP's windows
# append two of them, and their position embeddings reserve `pad_token_id + 1` rows.
ROBERTA_LIKE_ENCODERS = ("roberta", "xlm-roberta", "camembert", "longformer")
# The settings that take one of a few values, and those values; validation and the command line read this.
SETTING_CHOICES = {
    "loss": LOSS_KINDS,
    "gamma_pos": GAMMA_KINDS,
    "gamma_neg": GAMMA_KINDS,
    "contrastive_average": CONTRASTIVE_AVERAGES,
    "contrastive_anchors": CONTRASTIVE_ANCHORS,
    "head_init": HEAD_INITS,
    "encoder_attention": ENCODER_ATTENTIONS,
    "window_scheme": WINDOW_SCHEMES,
}
# DocRED and Re-DocRED have 96 relations; index 0 is the NA / threshold class.
DEFAULT_NUM_RELATIONS = 96


class PemsclConfig(PreTrainedConfig):
    r"""
    Configuration of a [`PemsclModel`]: a pretrained encoder (nested config, like `EncoderDecoderConfig`),
    the ATLOP pair head (Zhou et al., 2021; paper appendix D) and the PEMSCL loss (Guo et al., EACL 2023).

    Args:
        encoder (`PreTrainedConfig` or `dict`, *optional*):
            Configuration of the encoder (any `AutoModel` encoder with self-attention, e.g. BERT, RoBERTa).
            Defaults to a `bert` configuration.
        id2label (`dict[int, str]`, *optional*):
            Relation vocabulary: index 0 is the NA / threshold class (`"Na"`), the others Wikidata ids such as
            `"P17"`. Defaults to 96 relations named `R1` ... `R96` (DocRED's size).
        relation_names (`dict[str, str]`, *optional*):
            Human-readable relation names keyed by label (`{"P17": "country"}`), used by decoding outputs.
        pair_embedding_size (`int`, defaults to 768):
            Size d1 of the head / tail representations z_h, z_t (Eq. 14). The paper does not print it; ATLOP
            uses 768; the released PEMSCL code uses 1024 (its `DocREModel` default, never overridden).
        head_init (`str`, defaults to `"fan_in_uniform"`):
            Initialization of the new head layers (the two extractors of Eq. 14 and the bilinear W_o of
            Eq. 15). `"fan_in_uniform"`: what `torch.nn.Linear` does by default, weights and biases
            uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the released code (plain `nn.Linear` layers); at fan-in
            d1 * k = 49,152 the bilinear starts about 8x smaller than with `"normal"` (std 1/sqrt(3 * fan_in) =
            0.0026). `"normal"`: weights from normal(0, `encoder.initializer_range`), biases 0, as transformers
            initializes new layers (the paper does not say). The default was chosen on a held-out split
            (docs/paper-vs-release.md).
        relation_bias_init (`float` or `"auto"`, defaults to `"auto"`):
            How far below the threshold logit relations start: subtracted from the initial bias of every
            relation column (1..R) of the bilinear layer W_o (Eq. 15) (for `loss="bce"`, below 0). A prior that
            every pair is NA, as detectors initialize rare classes (Lin et al., 2017). `"auto"` = log(R)
            (4.56 for DocRED's 96 relations) makes a NA pair's initial loss over its R negatives about
            R * exp(-log R) = 1 instead of R log 2 = 66.5. Only the start of training depends on it. The paper
            and the released code leave it at 0; without it a run first predicts NA for every pair, for an epoch or
            longer. The other defaults were chosen with the prior on and rely on it (docs/paper-vs-release.md).
        bilinear_block_size (`int`, defaults to 64):
            Group size k of the grouped bilinear layer; the pair vector x_{h,t} has d1 * k dimensions
            (49,152 with the defaults). Must divide `pair_embedding_size`.
        entity_marker (`str`, defaults to `"*"`):
            Token inserted before and after every entity mention (ATLOP). Used by the featurizer.
        max_relations_per_pair (`int`, defaults to 4):
            Decoding keeps at most this many relations per entity pair (top-k above the threshold); 0 = no limit.
        loss (`str`, defaults to `"pemscl"`):
            `"pemscl"`: Eq. 4 + Eq. 5-6 + lambda * Eq. 8-10; `"atlop"`: ATLOP adaptive-thresholding loss;
            `"bce"`: binary cross-entropy on the relation logits (decoded with a global threshold of 0).
        contrastive_temperature (`float`, defaults to 0.2):
            Temperature tau of Eq. 8-9 (Re-DocRED: 0.2; DocRED: 2.0). Not named `temperature`, which
            transformers reserves for generation.
        contrastive_weight (`float`, defaults to 0.1):
            lambda of Eq. 11 (Re-DocRED: 0.1; DocRED: 2.0).
        gamma_pos (`str`, defaults to `"count"`):
            gamma_1 of Eq. 6: `"count"` = |P_{h,t}|, `"one"` = 1.
        gamma_neg (`str`, defaults to `"count"`):
            gamma_2 of Eq. 6: `"count"` = |N_{h,t}| (the full negative set, also when sampling), `"one"` = 1.
        use_entropy (`bool`, defaults to `True`):
            Whether the entropy-minimization term L_em (Eq. 6) is used (ablation of Table 3).
        use_contrastive (`bool`, defaults to `True`):
            Whether the supervised contrastive term L_2 (Eq. 10) is used (ablation of Table 3).
        contrastive_average (`str`, defaults to `"inside"`):
            `"inside"`: Eq. 8 as printed (log of the mean over positives); `"outside"`: mean of the logs, as in
            supervised contrastive learning (Khosla et al., 2020) and the released code.
        contrastive_anchors (`str`, defaults to `"all"`):
            Which pairs are anchors of the contrastive loss. `"positive"`: the pairs with a relation (B_P of
            Eq. 10, as printed); `"all"`: every pair, NA pairs through Eq. 9 (pushed away from every other pair),
            which is what the released code computes (it zeroes the NA label column before the loss). `"all"` is
            the default, chosen on a held-out split (docs/paper-vs-release.md).
        evidence_weight (`float`, defaults to 0.0):
            Weight of the evidence term added to the objective of any `loss`: for each pair with gold evidence
            sentences, the KL divergence from their even distribution to the pair's evidence distribution (its
            localized-context attention summed per sentence), as DREEAM (Ma et al., 2023) supervises it. 0 = off;
            needs training data with `evidence`.
        evidence_threshold (`float`, defaults to 0.2):
            Least share of a pair's evidence distribution decoded as evidence. A predicted relation's evidence is
            the sentences holding at least this share, so at most 1 / evidence_threshold of them.
        negative_sample_ratio (`float`, defaults to 1.0):
            Fraction of negative relations kept per NA pair (Eq. 12-13). Drawn in training; 1.0 = sampling off.
        contrastive_global_batch (`bool`, defaults to `True`):
            Gather every process's pair embeddings for the contrastive loss. Under torch.distributed the loss then
            equals the single-process loss on the concatenated batch.
        window_length (`int`, *optional*):
            Tokens per encoder window, special tokens included. Longer documents are encoded in overlapping
            windows. Defaults to the encoder's position limit (at most 512).
        window_stride (`int`, *optional*):
            Distance between the starts of consecutive windows. Defaults to half a window's content.
        window_scheme (`str`, defaults to `"overlapping"`):
            How documents longer than one window are encoded. `"overlapping"`: windows `[CLS] chunk [SEP]` every
            `window_stride` tokens, as many as the document needs; every window contributes all its positions, its
            own [CLS] and [SEP] included, to the document's hidden states and attention (averaged where windows
            overlap). `"atlop"`: what ATLOP's `process_long_input`, and with it the released PEMSCL code, computes:
            at most two windows, the first `tokens[:W - e] + e separators`, the second `[CLS] + tokens[-(W - 1):]`
            (e = 2 for RoBERTa-like encoders, else 1); the appended separators and the second window's [CLS] are
            dropped (from the hidden states, and as attention rows and columns), hidden states are averaged where
            the windows overlap, attention rows summed there and renormalized, and positions that neither window
            covers (between W - e and len - W + 1, only for documents of more than 2W - e - 1 tokens) get zero
            vectors. Documents longer than 2W tokens cannot be encoded this way: `"atlop"` needs
            `max_document_length` <= 2W. Converted research checkpoints use it; new models use `"overlapping"`,
            which sees every token with context from both sides.
        max_document_length (`int`, *optional*):
            Subwords kept per document, special tokens included; longer documents are cut to their first
            `max_document_length - 1` tokens plus their final special token, and mentions whose start marker falls
            past the cut are dropped (an entity left without mentions is represented by zero vectors). This is the
            research code's `max_seq_length` (1024; its truncation keeps a mention whose start marker lands exactly
            on the re-added final token, which then reads that token). `None` (the default): no limit.
        word_prefix_space (`bool`, defaults to `True`):
            For byte-level BPE tokenizers (RoBERTa): whether each word is tokenized with a leading space, as it
            appears in running text (tokenizer loaded with `add_prefix_space=True`). The research code tokenizes
            every word on its own without one, so its checkpoints are converted with `False` and their tokenizer
            saved with `add_prefix_space=False`. Featurization checks that the tokenizer agrees. WordPiece
            tokenizers (BERT) are not affected.
        bilinear_block_elements (`int`, defaults to 2**21):
            Largest slice of the [num_pairs, d1 * k] pair matrix the grouped bilinear layer builds at once (it
            never stores the whole matrix); only speed and memory depend on it.
        encoder_attention (`str`, defaults to `"sdpa"`):
            How the encoder computes attention. The head reads only the last layer's attention probabilities
            (localized context pooling). `"sdpa"`: every other layer runs `torch.nn.functional.
            scaled_dot_product_attention` (fused, keeps no [L, L] probabilities for backward), the last layer
            computes its probabilities explicitly, exactly as eager attention does; the outputs equal eager's up to
            float rounding. Encoders whose attention does not go through transformers' `AttentionInterface` stay
            eager. `"eager"`: every layer eager (transformers' reference implementation). Only speed and memory
            depend on it (and, in training, which dropout mask each layer draws).
    """

    model_type = "pemscl"
    # Shorter names the command line (`run_docre.py`) also accepts for a setting.
    command_line_aliases = {"contrastive_temperature": "temperature"}
    # Settings a trained model's weights fix: its shapes, how they were initialized, the marker it reads.
    fixed_after_training = ("pair_embedding_size", "bilinear_block_size", "head_init", "relation_bias_init",
                            "entity_marker")
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    relation_names: dict | None = None
    pair_embedding_size: int = 768
    head_init: str = "fan_in_uniform"
    relation_bias_init: float | str = "auto"
    bilinear_block_size: int = 64
    entity_marker: str = "*"
    max_relations_per_pair: int = 4
    loss: str = "pemscl"
    contrastive_temperature: float = 0.2
    contrastive_weight: float = 0.1
    gamma_pos: str = "count"
    gamma_neg: str = "count"
    use_entropy: bool = True
    use_contrastive: bool = True
    contrastive_average: str = "inside"
    contrastive_anchors: str = "all"
    evidence_weight: float = 0.0
    evidence_threshold: float = 0.2
    negative_sample_ratio: float = 1.0
    contrastive_global_batch: bool = True
    window_length: int | None = None
    window_stride: int | None = None
    window_scheme: str = "overlapping"
    max_document_length: int | None = None
    word_prefix_space: bool = True
    bilinear_block_elements: int = 2**21
    encoder_attention: str = "sdpa"

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = {0: NA_LABEL, **{i: f"R{i}" for i in range(1, DEFAULT_NUM_RELATIONS + 1)}}
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {label: index for index, label in self.id2label.items()}
        self.validate_pemscl_settings()

    def validate_pemscl_settings(self):
        """Raise a `ValueError` naming the setting that is out of range."""
        for name, allowed in SETTING_CHOICES.items():
            check_choice(f"PemsclConfig.{name}", getattr(self, name), allowed)
        if self.num_labels < 2:
            raise ValueError(f"PemsclConfig needs NA plus at least one relation in id2label, got {self.num_labels}.")
        if self.pair_embedding_size % self.bilinear_block_size != 0:
            raise ValueError(
                f"pair_embedding_size={self.pair_embedding_size} must be a multiple of "
                f"bilinear_block_size={self.bilinear_block_size}."
            )
        if not 0.0 < self.negative_sample_ratio <= 1.0:  # NaN fails too
            raise ValueError(f"negative_sample_ratio={self.negative_sample_ratio} must be in (0, 1].")
        if not math.isfinite(self.contrastive_temperature) or self.contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature={self.contrastive_temperature} must be a positive finite number.")
        if not math.isfinite(self.contrastive_weight) or self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight={self.contrastive_weight} must be a non-negative finite number.")
        if isinstance(self.evidence_weight, bool) or not (
                isinstance(self.evidence_weight, (int, float)) and math.isfinite(self.evidence_weight)
                and self.evidence_weight >= 0):
            raise ValueError(f"evidence_weight={self.evidence_weight!r} must be a non-negative finite number (0 = off).")
        if isinstance(self.evidence_threshold, bool) or not (
                isinstance(self.evidence_threshold, (int, float)) and 0.0 < self.evidence_threshold <= 1.0):
            raise ValueError(f"evidence_threshold={self.evidence_threshold!r} must be a share of a pair's evidence "
                             "distribution, in (0, 1].")
        if self.relation_bias_init != "auto" and (
            isinstance(self.relation_bias_init, (str, bool)) or not math.isfinite(self.relation_bias_init)
        ):
            raise ValueError(f"relation_bias_init={self.relation_bias_init!r} must be a finite number or 'auto'.")
        if self.window_length is not None and self.window_length < 8:
            raise ValueError(f"window_length={self.window_length} is too small (at least 8 tokens).")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"window_stride={self.window_stride} must be at least 1.")
        content = self.encoder_window_length - 2
        if self.window_stride is not None and self.window_stride > content:
            raise ValueError(f"window_stride={self.window_stride} is longer than a window's content ({content} tokens "
                             f"of window_length {self.encoder_window_length}): the tokens between windows would not "
                             "be encoded. Use a stride of at most the content.")
        if self.max_document_length is not None and (
            isinstance(self.max_document_length, bool) or not isinstance(self.max_document_length, int)
            or self.max_document_length < 3
        ):
            raise ValueError(f"max_document_length={self.max_document_length!r} must be an integer of at least 3 "
                             "(a special token at each end and one token between), or None for no limit.")
        if self.window_scheme == "atlop":
            most = 2 * self.encoder_window_length
            if self.max_document_length is None or self.max_document_length > most:
                raise ValueError(
                    f"window_scheme='atlop' encodes at most two windows of {self.encoder_window_length} tokens: set "
                    f"max_document_length to at most {most} (the research code uses 1024), got "
                    f"{self.max_document_length}."
                )
        if not isinstance(self.word_prefix_space, bool):
            raise ValueError(f"word_prefix_space={self.word_prefix_space!r} must be True or False.")

    def relation_bias_offset(self) -> float:
        """The initial offset of the relation biases: `relation_bias_init`, with `"auto"` = log(R)."""
        if self.relation_bias_init == "auto":
            return math.log(self.num_labels - 1)
        return float(self.relation_bias_init)

    def objective_kwargs(self) -> dict:
        """The settings `losses.pemscl_objective` takes, from this configuration."""
        return dict(
            loss=self.loss,
            temperature=self.contrastive_temperature,
            contrastive_weight=self.contrastive_weight,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            use_entropy=self.use_entropy,
            use_contrastive=self.use_contrastive,
            contrastive_average=self.contrastive_average,
            contrastive_anchors=self.contrastive_anchors,
        )

    @property
    def num_relations(self) -> int:
        """Number of relations R, NA excluded (`num_labels - 1`)."""
        return self.num_labels - 1

    @property
    def encoder_window_length(self) -> int:
        """Tokens per encoder window, special tokens included."""
        if self.window_length is not None:
            return self.window_length
        limit = getattr(self.encoder, "max_position_embeddings", 512) or 512
        # RoBERTa-style encoders reserve `pad_token_id + 1` positions (514 -> 512 usable).
        if self.roberta_like_encoder:
            limit -= (self.encoder.pad_token_id or 0) + 1
        return min(limit, 512)

    @property
    def roberta_like_encoder(self) -> bool:
        """Whether the encoder is RoBERTa-like (see `ROBERTA_LIKE_ENCODERS`)."""
        return getattr(self.encoder, "model_type", "") in ROBERTA_LIKE_ENCODERS


__all__ = ["PemsclConfig"]
