"""PEMSCL for document-level relation extraction as a Hugging Face Transformers model.

Importing this package registers the model with the Auto classes (`AutoConfig`, `AutoModel`) and marks it
for `save_pretrained` to write `auto_map` and the code, so a saved folder also loads with
`trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel

from .configuration_pemscl import PemsclConfig
from .losses import (
    GroupedPairEmbeddings,
    atlop_loss,
    bce_loss,
    contrastive_loss,
    decision_threshold,
    decode_relations,
    relation_margins,
    entropy_loss,
    pemscl_objective,
    pmt_loss,
    sample_negative_mask,
)
from .modeling_pemscl import (
    INFERENCE_PRECISIONS,
    GroupedBilinear,
    PemsclModel,
    PemsclModelOutput,
    PemsclPreTrainedModel,
    optimize_for_inference,
    prepare_for_inference,
)

AutoConfig.register(PemsclConfig.model_type, PemsclConfig, exist_ok=True)
AutoModel.register(PemsclConfig, PemsclModel, exist_ok=True)
PemsclConfig.register_for_auto_class()
PemsclModel.register_for_auto_class("AutoModel")

__all__ = [
    "PemsclConfig",
    "PemsclModel",
    "PemsclModelOutput",
    "PemsclPreTrainedModel",
    "GroupedBilinear",
    "GroupedPairEmbeddings",
    "pmt_loss",
    "entropy_loss",
    "contrastive_loss",
    "sample_negative_mask",
    "atlop_loss",
    "bce_loss",
    "pemscl_objective",
    "decode_relations",
    "decision_threshold",
    "relation_margins",
    "INFERENCE_PRECISIONS",
    "optimize_for_inference",
    "prepare_for_inference",
]
