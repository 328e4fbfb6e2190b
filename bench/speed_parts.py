"""Speed sections inside the full step: where its time goes (each part timed alone, from detached inputs), its
forward FLOPs, and the grouped bilinear against `F.linear` on the materialized pair vectors."""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F

from bench.harness import (
    PRECISIONS, PeakRSS, Step, autocast, counted_gflop, encoder_alone, encoder_inputs, interleaved, log, summary,
)
from bench.speed_batches import step_kinds
from modeling_pemscl import GroupedPairEmbeddings, contrastive_loss, entropy_loss, pemscl_objective, pmt_loss


def head_inputs(model, batch: dict, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The detached intermediate tensors of a forward pass: encoder outputs, head / tail groups and logits."""
    model.eval()
    with torch.no_grad(), autocast(precision):
        hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
        z_h, z_t, _ = model.pair_representations(hidden, attention, batch["mention_positions"], batch["hts"],
                                                 batch["pair_document_index"])
        head, tail = model.bilinear.split_groups(z_h), model.bilinear.split_groups(z_t)
        return {"hidden": hidden, "attention": attention, "head": head, "tail": tail, "logits": model.bilinear(head, tail)}


def section_breakdown(model, eager_model, batch: dict, repeats: int) -> dict:
    """The full step against its parts, each forward + backward from detached leaves of its real inputs, every part
    interleaved with the others."""
    log(f"\n== breakdown: where the full step's time goes ({batch['hts'].shape[0]} pairs), median of {repeats} ==")
    config, labels = model.config, batch["labels"]
    pair_inputs = (batch["mention_positions"], batch["hts"], batch["pair_document_index"])
    kwargs = config.objective_kwargs()

    def pairs(hidden, attention):
        z_h, z_t, _ = model.pair_representations(hidden, attention, *pair_inputs)
        return [model.bilinear.split_groups(z) for z in (z_h, z_t)]

    def objective(logits, head, tail):
        return pemscl_objective(logits, labels, GroupedPairEmbeddings(head, tail), **kwargs)["loss"]

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

    steps: dict[str, Step] = {}
    for precision in PRECISIONS:
        inputs, kinds = head_inputs(model, batch, precision), step_kinds(model, eager_model, batch, precision)
        steps.update({f"{precision}/train/full": kinds["full_train"], f"{precision}/train/encoder": kinds["encoder_train"]})
        steps.update({f"{precision}/train/{name}": Step(timed(precision, inputs, names, scalar), train_mode)
                      for name, (names, scalar) in parts.items()})
        steps.update({f"{precision}/infer/full": kinds["full_infer"], f"{precision}/infer/encoder": kinds["encoder_infer"],
                      f"{precision}/infer/head": Step(head_infer(precision, inputs), model.eval)})
    seconds, _ = interleaved(steps, repeats)
    out: dict[str, Any] = {"pairs": batch["hts"].shape[0]}
    for step in steps:
        precision, name = step.split("/", 1)
        stats = summary(seconds[step])
        full = statistics.median(seconds[f"{precision}/{name.split('/')[0]}/full"])
        out.setdefault(precision, {})[name] = {**stats, "share_of_full": stats["median_s"] / full}
        log(f"  {step}: {stats['median_s']:.3f} s ({stats['median_s'] / full:.0%} of the full step; parts are timed "
            "alone, so they do not add up exactly)")
    out["forward_gflop"] = flops = forward_gflop(model, eager_model, batch)
    log(f"forward GFLOP: encoder {flops['encoder']:.1f} ({flops['encoder_tokens']} padded tokens), full model "
        f"{flops['full']:.1f}, grouped bilinear {flops['bilinear']:.1f} ({flops['bilinear_per_pair_mflop']:.1f} MFLOP a pair)")
    model.zero_grad(set_to_none=True)
    return out


def forward_gflop(model, eager_model, batch: dict, with_bilinear: bool = True) -> dict:
    """Forward GFLOP (eval mode, no gradients) of the eager encoder on the model's encoder inputs, of the full model,
    and (`with_bilinear`) of the grouped bilinear layer alone."""
    windows = encoder_inputs(model, batch)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}
    model.eval(), eager_model.eval()
    with torch.no_grad():
        counts = {
            "encoder": counted_gflop(lambda: encoder_alone(eager_model.encoder, *windows)),
            # Counted on the eager twin (the same computation): the counter does not see inside every fused SDPA kernel.
            "full": counted_gflop(lambda: eager_model(**unlabelled)),
            "encoder_tokens": windows[0].numel(),
        }
        if with_bilinear:
            inputs = head_inputs(model, batch)
            counts["bilinear"] = counted_gflop(lambda: model.bilinear(inputs["head"], inputs["tail"]))
            counts["bilinear_per_pair_mflop"] = counts["bilinear"] * 1e3 / max(batch["hts"].shape[0], 1)
    return counts


def section_bilinear(model, batch: dict, repeats: int) -> dict:
    """`GroupedBilinear` (chunked, never stores the pair vectors) against `F.linear` on the materialized pair vectors,
    forward + backward and forward, same inputs: time, peak memory and agreement."""
    bilinear, inputs = model.bilinear, head_inputs(model, batch)
    log(f"\n== bilinear: grouped vs materialized F.linear, {batch['hts'].shape[0]} pairs x {bilinear.weight.shape[1]} "
        f"dims, median of {repeats} ==")
    head, tail = inputs["head"].contiguous(), inputs["tail"].contiguous()
    weight, bias = (p.detach().clone().requires_grad_(True) for p in (bilinear.weight, bilinear.bias))
    layers = {"grouped": bilinear, "materialized": lambda gh, gt: F.linear(GroupedPairEmbeddings(gh, gt).materialize(),
                                                                           weight, bias)}

    def step(layer, precision, train):
        def run():
            gh, gt = head.clone().requires_grad_(train), tail.clone().requires_grad_(train)
            with torch.set_grad_enabled(train), autocast(precision):
                logits = layer(gh, gt)
            if train:
                logits.float().sum().backward()
            return logits.detach(), (gh.grad, gt.grad) if train else None
        return run

    def clear():
        bilinear.zero_grad(set_to_none=True)
        weight.grad = bias.grad = None

    steps = {f"{precision}/{name}/{'fwd+bwd' if train else 'fwd'}": Step(step(layer, precision, train), clear)
             for precision in PRECISIONS for train in (True, False) for name, layer in layers.items()}
    seconds, values = interleaved(steps, repeats)
    out: dict[str, Any] = {"pairs": batch["hts"].shape[0], "pair_vector_dims": bilinear.weight.shape[1],
                           "block_elements": bilinear.block_elements, "method": PeakRSS.method}
    for precision in PRECISIONS:
        for mode in ("fwd+bwd", "fwd"):
            entry: dict[str, Any] = {}
            for name in layers:
                clear()
                with PeakRSS() as peak:
                    steps[f"{precision}/{name}/{mode}"].run()
                entry[name] = {**summary(seconds[f"{precision}/{name}/{mode}"]), "peak_rss_mib": peak.mib}
            clear()
            (a, grads_a), (b, grads_b) = (values[f"{precision}/{name}/{mode}"][-1] for name in layers)
            entry["speedup"] = entry["materialized"]["median_s"] / entry["grouped"]["median_s"]
            entry["logits_max_abs_diff"] = float((a.float() - b.float()).abs().max())
            if grads_a is not None:
                entry["grad_head_max_abs_diff"] = float((grads_a[0] - grads_b[0]).abs().max())
            out[f"{precision}/{mode}"] = entry
            log(f"  {precision} {mode}: grouped x{entry['speedup']:.2f} faster, peak RSS "
                f"{entry['grouped']['peak_rss_mib']:.0f} vs {entry['materialized']['peak_rss_mib']:.0f} MiB, "
                f"max abs logit difference {entry['logits_max_abs_diff']:.1e}")
    return out
