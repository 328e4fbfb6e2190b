#!/usr/bin/env python
"""What `encoder_attention="sdpa"` saves in training memory, counted exactly on CPU and scaled to RoBERTa-large.

    python bench/attention_memory.py            # about a minute; writes bench/results/attention_memory.json

Counts the bytes of the distinct storages autograd saves for backward during the forward of a full PEMSCL training
step (`model(**batch).loss`, random weights of the encoder's shape) with eager attention, with SDPA as it runs on
this CPU and with SDPA as CUDA's fused kernels keep it (`VARIANTS`), at two depths; their difference is the saving
per layer, scaled to the encoder's real depth. No time is measured, so the count does not depend on the machine's
load, and a GPU saves the same tensors. Shapes: 4 documents of 512 tokens (the windowed encoder's largest input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import BertConfig, RobertaConfig  # noqa: E402

from bench.harness import write_json  # noqa: E402
from modeling_pemscl import PemsclConfig, PemsclModel  # noqa: E402

ENCODERS = {
    "roberta-large": dict(config=RobertaConfig, hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
                          num_hidden_layers=24, pad_token_id=1, max_position_embeddings=514),
    "all-MiniLM-L6-v2": dict(config=BertConfig, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                             num_hidden_layers=6, max_position_embeddings=512),
}


def synthetic_batch(num_docs: int, length: int, entities: int, mentions: int, vocab: int, generator) -> dict:
    """Documents of `length` tokens, each with `entities` entities of `mentions` mentions, every ordered pair,
    one relation per tenth pair (the rest NA)."""
    input_ids = torch.randint(5, vocab, (num_docs, length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    positions = torch.stack([torch.randperm(length - 2, generator=generator)[: entities * mentions] + 1
                             for _ in range(num_docs)]).view(num_docs, entities, mentions)
    pairs = [(h, t) for h in range(entities) for t in range(entities) if h != t]
    hts = torch.tensor(pairs * num_docs)
    pair_document_index = torch.arange(num_docs).repeat_interleave(len(pairs))
    labels = torch.zeros(hts.shape[0], 97)
    labels[:, 0] = 1
    labels[::10, 0], labels[::10, 17] = 0, 1
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "mention_positions": positions,
            "hts": hts, "pair_document_index": pair_document_index, "labels": labels}


def saved_bytes(model, batch) -> int:
    """Bytes of the distinct storages autograd saves for backward during the forward of `model(**batch).loss`."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    del loss
    return sum(storages.values())


# (encoder_attention, attention dropout as configured?) of each variant counted.
VARIANTS = {
    "eager": ("eager", True),
    # On CPU, PyTorch's SDPA runs its math fallback when training with attention dropout: it keeps what eager keeps.
    "sdpa_cpu": ("sdpa", True),
    # CUDA's fused SDPA kernels (flash, memory-efficient) apply dropout inside the kernel and keep O(L) statistics
    # per row, never the [L, L] probabilities or a mask: counted here with attention dropout off, which keeps the
    # same (the explicit last layer's own dropout mask, 1 byte per probability, is then left out).
    "sdpa_fused": ("sdpa", False),
}


def measure(name: str, spec: dict, depths: tuple[int, int], batch_args: dict) -> dict:
    spec = dict(spec)
    config_class, real_depth = spec.pop("config"), spec.pop("num_hidden_layers")
    out = {"encoder": name, "real_depth": real_depth, "measured_depths": list(depths), "batch": batch_args}
    for variant, (attention, with_dropout) in VARIANTS.items():
        counts = []
        for depth in depths:
            torch.manual_seed(0)
            encoder = config_class(vocab_size=1000, num_hidden_layers=depth, **spec,
                                   **({} if with_dropout else {"attention_probs_dropout_prob": 0.0}))
            model = PemsclModel(PemsclConfig(encoder=encoder.to_dict(), encoder_attention=attention))
            batch = synthetic_batch(vocab=1000, generator=torch.Generator().manual_seed(0), **batch_args)
            counts.append(saved_bytes(model, batch))
            del model
        per_layer = (counts[1] - counts[0]) / (depths[1] - depths[0])
        out[variant] = {
            "saved_mib": dict(zip(map(str, depths), [c / 2**20 for c in counts])),
            "per_layer_mib": per_layer / 2**20,
            "estimated_saved_mib_at_real_depth": (counts[0] + per_layer * (real_depth - depths[0])) / 2**20,
        }
    eager = out["eager"]["estimated_saved_mib_at_real_depth"]
    for variant in ("sdpa_cpu", "sdpa_fused"):
        out[variant]["saving_mib"] = eager - out[variant]["estimated_saved_mib_at_real_depth"]
        out[variant]["saving_share"] = out[variant]["saving_mib"] / eager
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--entities", type=int, default=20, help="entities per document (Re-DocRED: 19.4 on average)")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "attention_memory.json"))
    args = parser.parse_args(argv)
    batch_args = dict(num_docs=args.docs, length=args.length, entities=args.entities, mentions=2)
    results = {"method": __doc__.split("\n\n")[2].replace("\n", " "), "dtype": "float32 (bf16 halves every figure)"}
    for name, spec in ENCODERS.items():
        row = measure(name, spec, depths=(2, 3), batch_args=batch_args)
        results[name] = row
        print(f"{name} ({row['real_depth']} layers, {args.docs} x {args.length} tokens, fp32), saved for backward: "
              f"eager {row['eager']['estimated_saved_mib_at_real_depth']:.0f} MiB; SDPA on CPU "
              f"{row['sdpa_cpu']['estimated_saved_mib_at_real_depth']:.0f} MiB ({row['sdpa_cpu']['saving_share']:.0%} "
              f"less); SDPA with fused kernels (CUDA) {row['sdpa_fused']['estimated_saved_mib_at_real_depth']:.0f} MiB "
              f"({row['sdpa_fused']['saving_mib']:.0f} MiB, {row['sdpa_fused']['saving_share']:.0%} less)", flush=True)
    write_json(Path(args.output), results, indent=2)
    return results


if __name__ == "__main__":
    main()
