"""Speed sections on the bench batches: the eager encoder alone against the full model (training and inference) per
batch and precision, with other head settings, and the peak memory of each step."""

from __future__ import annotations

import copy
import math
import statistics

import torch

from bench.harness import (
    PRECISIONS, PeakRSS, Step, autocast, encoder_alone, encoder_inputs, encoder_loss, fmt_s, interleaved, load_model,
    log, summary,
)

STEP_KINDS = ("encoder_train", "full_train", "eager_full_train", "encoder_infer", "full_infer", "eager_full_infer")
MODES = ("train", "infer")
# Head settings whose step cost differs: the defaults, the released code's d1 (the bilinear's fan-in d1 * k grows
# with it), and Eq. 10's positive anchors (the default all-pair anchors make the contrastive similarity [pairs, pairs]).
HEAD_SETTINGS = {"default": {}, "pair_embedding_size=1024": {"pair_embedding_size": 1024},
                 "contrastive_anchors=positive": {"contrastive_anchors": "positive"}}


def eager_twin(model):
    """The same weights with every encoder layer on eager attention: its encoder is the baseline of every ratio."""
    twin = copy.deepcopy(model)
    twin.set_encoder_attention("eager")
    return twin


def step_kinds(model, eager_model, batch: dict, precision: str, with_eager_full: bool = False) -> dict[str, Step]:
    """The eager encoder alone and the full model, training (forward + backward) and inference (no gradients); with
    `with_eager_full`, also the full model on the all-eager encoder (`eager_full_*`)."""
    windows = encoder_inputs(model, batch)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}

    def train_mode():
        for module in (model, eager_model):
            module.train()
            module.zero_grad(set_to_none=True)

    def eval_mode():
        model.eval(), eager_model.eval()

    def train(forward):
        def run():
            with autocast(precision):
                loss = forward()
            loss.backward()
            return float(loss.detach())
        return Step(run, train_mode)

    def infer(forward):
        def run():
            with torch.no_grad(), autocast(precision):
                forward()
        return Step(run, eval_mode)

    kinds = {"encoder_train": train(lambda: encoder_loss(encoder_alone(eager_model.encoder, *windows))),
             "full_train": train(lambda: model(**batch).loss),
             "encoder_infer": infer(lambda: encoder_alone(eager_model.encoder, *windows)),
             "full_infer": infer(lambda: model(**unlabelled))}
    if with_eager_full:
        kinds.update(eager_full_train=train(lambda: eager_model(**batch).loss),
                     eager_full_infer=infer(lambda: eager_model(**unlabelled)))
    return kinds


def section_batches(model, eager_model, batches: list[dict], repeats: int, results) -> None:
    """Every step kind per batch, fp32 and bf16 interleaved; the result file is updated after each batch."""
    log(f"\n== batches: encoder-only vs full step, fp32 and bf16 interleaved, median of {repeats} ==")
    per_batch = []
    for index, batch in enumerate(batches):
        windowed = batch["input_ids"].shape[1] > model.config.encoder_window_length
        shape = {"docs": batch["input_ids"].shape[0], "tokens": int(batch["attention_mask"].sum()),
                 "max_len": batch["input_ids"].shape[1],
                 "entities": int((batch["mention_positions"] >= 0).any(-1).sum()), "pairs": batch["hts"].shape[0],
                 "windows": encoder_inputs(model, batch)[0].shape[0] if windowed else 0}
        entry = {"shape": shape}
        log(f"batch {index + 1}/{len(batches)}: " + ", ".join(f"{value} {key}" for key, value in shape.items()))
        steps = {f"{precision}/{kind}": step for precision in PRECISIONS
                 for kind, step in step_kinds(model, eager_model, batch, precision, with_eager_full=True).items()}
        seconds, values = interleaved(steps, repeats)
        for precision in PRECISIONS:
            times = {kind: seconds[f"{precision}/{kind}"] for kind in STEP_KINDS}
            stats, losses = {kind: summary(times[kind]) for kind in STEP_KINDS}, values[f"{precision}/full_train"]
            entry[precision] = {
                **stats,
                **{f"{mode}_ratio": stats[f"full_{mode}"]["median_s"] / stats[f"encoder_{mode}"]["median_s"]
                   for mode in MODES},
                **{f"{mode}_ratio_paired": statistics.median(
                    full / encoder for full, encoder in zip(times[f"full_{mode}"], times[f"encoder_{mode}"]))
                   for mode in MODES},
                "train_losses": losses, "loss_finite": all(math.isfinite(loss) for loss in losses)}
            log(f"  {precision}: " + " | ".join(
                f"{mode} enc {fmt_s(stats[f'encoder_{mode}']['median_s'])} "
                f"full {fmt_s(stats[f'full_{mode}']['median_s'])}"
                f" (x{entry[precision][f'{mode}_ratio']:.2f})" for mode in MODES) + f" | loss {losses[-1]:.3f}")
        per_batch.append(entry)
        totals = aggregate_batches(per_batch)
        results.section("batches_per_batch", per_batch, batches=len(per_batch), **totals["fp32"], bf16=totals["bf16"])


def aggregate_batches(per_batch: list[dict]) -> dict:
    """Over batches: ratios of summed medians (and of summed minima), docs/s = documents / summed median time."""
    docs = sum(entry["shape"]["docs"] for entry in per_batch)
    out = {}
    for precision in PRECISIONS:
        total, minima = ({kind: sum(entry[precision][kind][statistic] for entry in per_batch) for kind in STEP_KINDS}
                         for statistic in ("median_s", "min_s"))
        out[precision] = {
            "train_step_ratio_vs_encoder": total["full_train"] / total["encoder_train"],
            "infer_ratio_vs_encoder": total["full_infer"] / total["encoder_infer"],
            "train_step_ratio_vs_encoder_of_minima": minima["full_train"] / minima["encoder_train"],
            "infer_ratio_vs_encoder_of_minima": minima["full_infer"] / minima["encoder_infer"],
            **{f"{who}{mode}_docs_per_s": docs / total[f"{kind}_{mode}"] for mode in MODES
               for who, kind in (("", "full"), ("encoder_", "encoder"))},
            "train_step_s_per_batch": total["full_train"] / len(per_batch),
            "infer_s_per_batch": total["full_infer"] / len(per_batch),
            "loss_finite": all(entry[precision]["loss_finite"] for entry in per_batch),
        }
    return out


def section_settings(vocab, eager_model, batches: list[dict], repeats: int) -> dict:
    """The step ratios of each of `HEAD_SETTINGS`, fp32, against the same eager encoder, every step interleaved."""
    log(f"\n== settings: full / encoder-only step with {', '.join(HEAD_SETTINGS)}, fp32 ==")
    models = {name: load_model(vocab, **overrides) for name, overrides in HEAD_SETTINGS.items()}
    totals, per_batch = {}, []
    for batch in batches:
        steps = {}
        for name, model in models.items():
            kinds = step_kinds(model, eager_model, batch, "fp32")
            steps.update({f"full_{mode}/{name}": kinds[f"full_{mode}"] for mode in MODES})
        steps.update({f"encoder_{mode}": kinds[f"encoder_{mode}"] for mode in MODES})
        medians = {step: statistics.median(values) for step, values in interleaved(steps, repeats)[0].items()}
        totals = {step: totals.get(step, 0.0) + median for step, median in medians.items()}
        per_batch.append({"pairs": int(batch["hts"].shape[0]), **{name: {
            f"{mode}_ratio": medians[f"full_{mode}/{name}"] / medians[f"encoder_{mode}"] for mode in MODES}
            for name in HEAD_SETTINGS}})
    out = {"flags": HEAD_SETTINGS, "batches": per_batch}
    for name in HEAD_SETTINGS:
        out[name] = {**{f"{mode}_ratio": totals[f"full_{mode}/{name}"] / totals[f"encoder_{mode}"] for mode in MODES},
                     **{f"max_batch_{mode}_ratio": max(entry[name][f"{mode}_ratio"] for entry in per_batch)
                        for mode in MODES}}
        log(f"  {name}: training x{out[name]['train_ratio']:.2f} "
            f"(worst batch x{out[name]['max_batch_train_ratio']:.2f}), inference x{out[name]['infer_ratio']:.2f} "
            f"(worst x{out[name]['max_batch_infer_ratio']:.2f})")
    return out


def section_memory(model, eager_model, batches: list[dict]) -> dict:
    """Peak RSS of each step kind on the batch with the most pairs (each step once, after the timed runs)."""
    index = max(range(len(batches)), key=lambda i: batches[i]["hts"].shape[0])
    batch = batches[index]
    log(f"\n== memory: peak RSS of one step, batch {index + 1} ({batch['hts'].shape[0]} pairs) ==")
    out = {"batch": index + 1, "pairs": batch["hts"].shape[0], "method": PeakRSS.method,
           "parameters_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}
    for precision in PRECISIONS:
        out[precision] = {}
        for kind, step in step_kinds(model, eager_model, batch, precision, with_eager_full=True).items():
            step.prepare()
            with PeakRSS() as peak:
                step.run()
            out[precision][f"{kind}_mib"] = peak.mib
        log(f"  {precision}: " + ", ".join(f"{kind} {mib:.0f} MiB" for kind, mib in out[precision].items()))
    model.zero_grad(set_to_none=True)
    return out
