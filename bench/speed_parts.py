"""Speed section `breakdown`: where the full step's time goes (each part timed alone, from detached leaves of its real
inputs, interleaved with the others) and its forward FLOPs."""

from __future__ import annotations

import statistics

import torch

from bench.harness import (
    PRECISIONS, Step, autocast, counted_gflop, encoder_alone, encoder_inputs, interleaved, log, summary,
)
from bench.speed_batches import step_kinds
from modeling_pemscl import GroupedPairEmbeddings, contrastive_loss, entropy_loss, pemscl_objective, pmt_loss


def section_breakdown(model, eager_model, batch: dict, repeats: int) -> dict:
    log(f"\n== breakdown: where the full step's time goes ({batch['hts'].shape[0]} pairs), median of {repeats} ==")
    config, labels = model.config, batch["labels"]
    pair_inputs = (batch["mention_positions"], batch["hts"], batch["pair_document_index"])

    def pairs(hidden, attention):
        z_h, z_t, _ = model.pair_representations(hidden, attention, *pair_inputs)
        return [model.bilinear.split_groups(z) for z in (z_h, z_t)]

    def objective(logits, head, tail):
        return pemscl_objective(logits, labels, GroupedPairEmbeddings(head, tail), **config.objective_kwargs())["loss"]

    def head_and_loss(hidden, attention):
        head, tail = pairs(hidden, attention)
        return objective(model.bilinear(head, tail), head, tail)

    parts = {  # part -> (the inputs it starts from, its scalar)
        "head+loss": (("hidden", "attention"), head_and_loss),
        "pair_representations": (("hidden", "attention"), lambda h, a: sum(
            z.float().sum() for z in model.pair_representations(h, a, *pair_inputs)[:2])),
        "bilinear": (("head", "tail"), lambda gh, gt: model.bilinear(gh, gt).float().sum()),
        "loss": (("logits", "head", "tail"), objective),
        "loss.pmt": (("logits",), lambda lg: pmt_loss(lg, labels).mean()),
        "loss.entropy": (("logits",), lambda lg: entropy_loss(
            lg, labels, gamma_pos=config.gamma_pos, gamma_neg=config.gamma_neg).mean()),
        "loss.contrastive": (("head", "tail"), lambda gh, gt: contrastive_loss(
            GroupedPairEmbeddings(gh, gt), labels, config.contrastive_temperature, config.contrastive_average,
            config.contrastive_anchors).mean()),
    }

    def train_mode():
        model.train()
        model.zero_grad(set_to_none=True)

    def timed(precision, inputs, names, scalar):
        def run():
            leaves = [inputs[name].detach().clone().requires_grad_(True) for name in names]
            with autocast(precision):
                value = scalar(*leaves)
            value.backward()
        return run

    def head_infer(precision, inputs):
        def run():
            with torch.no_grad(), autocast(precision):
                model.bilinear(*pairs(inputs["hidden"], inputs["attention"]))
        return run

    steps = {}
    for precision in PRECISIONS:
        model.eval()
        with torch.no_grad(), autocast(precision):  # the detached intermediate tensors of a forward pass
            hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
            head, tail = pairs(hidden, attention)
            inputs = {"hidden": hidden, "attention": attention, "head": head, "tail": tail,
                      "logits": model.bilinear(head, tail)}
        kinds = step_kinds(model, eager_model, batch, precision)
        steps.update({f"{precision}/train/{who}": kinds[f"{who}_train"] for who in ("full", "encoder")})
        steps.update({f"{precision}/train/{name}": Step(timed(precision, inputs, names, scalar), train_mode)
                      for name, (names, scalar) in parts.items()})
        steps.update({f"{precision}/infer/{who}": kinds[f"{who}_infer"] for who in ("full", "encoder")})
        steps[f"{precision}/infer/head"] = Step(head_infer(precision, inputs), model.eval)
    seconds, _ = interleaved(steps, repeats)
    out = {"pairs": batch["hts"].shape[0]}
    for step in steps:
        precision, name = step.split("/", 1)
        stats = summary(seconds[step])
        full = statistics.median(seconds[f"{precision}/{name.split('/')[0]}/full"])
        out.setdefault(precision, {})[name] = {**stats, "share_of_full": stats["median_s"] / full}
        log(f"  {step}: {stats['median_s']:.3f} s ({stats['median_s'] / full:.0%} of the full step; parts are timed "
            "alone, so they do not add up exactly)")
    out["forward_gflop"] = flops = forward_gflop(model, eager_model, batch)
    log(f"forward GFLOP: encoder {flops['encoder']:.1f} ({flops['encoder_tokens']} padded tokens), full model "
        f"{flops['full']:.1f}")
    model.zero_grad(set_to_none=True)
    return out


def forward_gflop(model, eager_model, batch: dict) -> dict:
    """Forward GFLOP (eval mode, no gradients) of the eager encoder on the model's encoder inputs and of the full
    model, counted on the eager twin (the counter does not see inside every fused SDPA kernel)."""
    windows = encoder_inputs(model, batch)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}
    model.eval(), eager_model.eval()
    with torch.no_grad():
        return {"encoder": counted_gflop(lambda: encoder_alone(eager_model.encoder, *windows)),
                "full": counted_gflop(lambda: eager_model(**unlabelled)), "encoder_tokens": windows[0].numel()}
