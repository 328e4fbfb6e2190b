#!/usr/bin/env python
"""Speed benchmark of PEMSCL on MiniLM-L6 (CPU): what the pair head and the PEMSCL losses cost on top of the encoder.

    python bench/speed.py                 # full run (about 50 minutes on 2 otherwise idle cores)
    python bench/speed.py --only epoch    # the end-to-end section alone (whole splits)
    python bench/speed.py --quick         # smoke run: 1 batch, 1 repetition, 1 document per length bucket

Sections (each one updates `bench/results/speed.json` when it finishes, so an interrupted run keeps what it
measured):

The baseline of every ratio is the encoder alone as transformers runs it when attention probabilities are asked
for: every layer on eager attention (a twin of the model with the same weights, `encoder_attention="eager"`). The
model itself runs `encoder_attention="sdpa"` (SDPA layers, the last layer's probabilities computed explicitly);
`eager_full_*` steps show the full model on the eager encoder.

1. batches: batches of 4 real Re-DocRED documents (the first batches of `--batch_file`). Per batch and per
   precision (fp32, bf16 autocast), interleaved in one loop: the encoder-only training step (the eager encoder's
   forward with last-layer attention + backward of a scalar on the last hidden
   state and the last attention) vs the full training step (`model(**batch)` with labels, all PEMSCL losses,
   + backward), and encoder-only inference vs full inference (`model(**batch)` without labels), both under
   `torch.no_grad()`. Documents longer than the encoder's window are encoded by the model in overlapping
   windows; the encoder-only baseline runs the encoder on the same windows.
2. bf16_check: fp32 vs bf16 logits and loss of the first batch (eval mode).
3. memory: peak resident memory of each step of the batch with the most pairs.
4. breakdown: where the full step's time goes: encoder, head + loss (everything but the encoder), pair
   representations, grouped bilinear, the loss alone and each loss term.
5. bilinear: `GroupedBilinear` (chunked, never stores the pair vectors) vs `F.linear` on the materialized
   49,152-dimensional pair vectors, for the pair count of the first batch.
   settings: the batches' step ratios with other head settings (`HEAD_SETTINGS`: the released code's d1 = 1024,
   Eq. 10's positive anchors), fp32, against the same encoder baseline.
6. unlabeled: end-to-end inference (collate + forward + decoding) on DocRED's unlabeled test documents.
7. scaling: single documents bucketed by token length (< 256, 256-512, 512-768, > 768; the last bucket is made of
   2 concatenated real documents, which exercises the sliding windows) and spread over their pair counts;
   table + `speed_scaling.png`.
8. epoch: what users feel. Every batch of one training epoch over `--epoch_train_file` (500 Re-DocRED documents,
   length-grouped as `run_docre.py` draws them) and the prediction of every document of `--epoch_test_file`
   (length-sorted batches of `--eval_batch_size`, collation and decoding included), each step next to the eager
   encoder alone on the same batch, fp32 and bf16 interleaved: documents/s, the step ratio averaged over every
   batch, forward FLOPs (`torch.utils.flop_counter`); then `DocRETrainer.predict` on the whole split with its peak
   memory. About 35 minutes on 2 idle cores; `--only epoch` reruns it alone and keeps the other sections.

The machine is assumed noisy: every comparison is measured side by side in the same loop (steps of each kind
alternate, the order rotates every repetition) and summarized by the median (the minimum is also kept). Ratios
are meaningful across machines; absolute times only with the machine description stored beside them. The share
of time other tasks waited for a CPU (Linux PSI) is printed and stored per section: above a few percent, absolute
times are inflated. Nothing is asserted on timings.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402  (first: it sets OMP_WAIT_POLICY before torch loads)
    PeakRSS,
    cpu_pressure_total,
    featurize,
    load_model,
    load_tokenizer,
    load_vocab,
    machine,
    machine_label,
    read_documents,
)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from data_collators import DataCollatorForDocRE  # noqa: E402
from modeling_pemscl import (  # noqa: E402
    GroupedPairEmbeddings,
    contrastive_loss,
    entropy_loss,
    pemscl_objective,
    pmt_loss,
)

PRECISIONS = ("fp32", "bf16")
STEP_KINDS = ("encoder_train", "full_train", "eager_full_train", "encoder_infer", "full_infer", "eager_full_infer")
TOKEN_BUCKETS = ((0, 256), (256, 512), (512, 768), (768, None))
TRAIN_TARGET = "<= 1.5-1.8"
INFER_TARGET = "<= 1.3-2.0"


# ------------------------------------------------------------------------------------------ timing
@dataclass
class Step:
    """A timed callable; `prepare` runs untimed before each call (mode switch, clearing gradients)."""

    run: Callable[[], Any]
    prepare: Optional[Callable[[], Any]] = None


def interleaved(steps: dict[str, Step], repeats: int, warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Run every step once per repetition, rotating the order each repetition; return seconds and return values.

    The first `warmup` repetitions are not recorded (first-call allocations, oneDNN primitive creation).
    """
    names = list(steps)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    values: dict[str, list] = {name: [] for name in names}
    for repetition in range(warmup + repeats):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            step = steps[name]
            if step.prepare is not None:
                step.prepare()
            gc.collect()
            start = time.perf_counter()
            value = step.run()
            elapsed = time.perf_counter() - start
            if repetition >= warmup:
                seconds[name].append(elapsed)
                values[name].append(value)
    return seconds, values


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# ----------------------------------------------------------------------------------------- batches
def encoder_inputs(batch: dict, config) -> tuple[torch.Tensor, torch.Tensor]:
    """What the encoder sees inside `PemsclModel.encode`: the batch itself when it fits in one window, else
    every document cut into the same overlapping windows `[CLS] chunk [SEP]` (window `config.encoder_window_length`,
    stride `config.window_stride` or half a window's content), all padded to the window length."""
    window = config.encoder_window_length
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if input_ids.shape[1] <= window:
        return input_ids, attention_mask
    content = window - 2
    stride = config.window_stride or max(content // 2, 1)
    rows = []
    for doc, length in enumerate(attention_mask.sum(1).tolist()):
        n_content = length - 2
        starts = [0] if n_content <= content else list(range(0, n_content - content, stride)) + [n_content - content]
        for start in starts:
            chunk = input_ids[doc, 1 + start : 1 + start + min(content, n_content)]
            rows.append(torch.cat([input_ids[doc, :1], chunk, input_ids[doc, length - 1 : length]]))
    pad_id = config.encoder.pad_token_id if config.encoder.pad_token_id is not None else 0
    window_ids = torch.full((len(rows), window), pad_id, dtype=torch.long)
    window_mask = torch.zeros((len(rows), window), dtype=torch.long)
    for i, row in enumerate(rows):
        window_ids[i, : len(row)] = row
        window_mask[i, : len(row)] = 1
    return window_ids, window_mask


def describe(batch: dict, config) -> dict[str, int]:
    encoder_ids, _ = encoder_inputs(batch, config)
    return {
        "docs": batch["input_ids"].shape[0],
        "tokens": int(batch["attention_mask"].sum()),
        "max_len": batch["input_ids"].shape[1],
        "entities": int((batch["mention_positions"] >= 0).any(-1).sum()),
        "pairs": batch["hts"].shape[0],
        "windows": encoder_ids.shape[0] if batch["input_ids"].shape[1] > config.encoder_window_length else 0,
    }


def eager_twin(model):
    """The same model (same weights) with every encoder layer on eager attention: its encoder is the baseline of
    every ratio (the encoder as transformers runs it when attention probabilities are asked for), and the model
    itself shows what `encoder_attention="sdpa"` saves."""
    twin = copy.deepcopy(model)
    twin.set_encoder_attention("eager")
    return twin


def step_kinds(model, eager_model, batch: dict, precision: str, with_eager_full: bool = False) -> dict[str, Step]:
    """The steps compared in every section: the eager encoder alone / the full model, training / inference; with
    `with_eager_full`, also the full model on an all-eager encoder (`eager_full_*`)."""
    encoder_ids, encoder_mask = encoder_inputs(batch, model.config)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}
    encoder = eager_model.encoder

    def train_mode():
        for module in (model, eager_model):
            module.train()
            module.zero_grad(set_to_none=True)

    def eval_mode():
        model.eval(), eager_model.eval()

    def encoder_train():
        with autocast(precision):
            out = encoder(input_ids=encoder_ids, attention_mask=encoder_mask, output_attentions=True)
            scalar = out.last_hidden_state.float().mean() + out.attentions[-1].float().mean()
        scalar.backward()
        return float(scalar.detach())

    def full_train(model=model):
        with autocast(precision):
            loss = model(**batch).loss
        loss.backward()
        return float(loss.detach())

    def encoder_infer():
        with torch.no_grad(), autocast(precision):
            encoder(input_ids=encoder_ids, attention_mask=encoder_mask, output_attentions=True)

    def full_infer(model=model):
        with torch.no_grad(), autocast(precision):
            model(**unlabelled)

    kinds = {
        "encoder_train": Step(encoder_train, train_mode),
        "full_train": Step(full_train, train_mode),
        "encoder_infer": Step(encoder_infer, eval_mode),
        "full_infer": Step(full_infer, eval_mode),
    }
    if with_eager_full:
        kinds["eager_full_train"] = Step(lambda: full_train(eager_model), train_mode)
        kinds["eager_full_infer"] = Step(lambda: full_infer(eager_model), eval_mode)
    return kinds


# ------------------------------------------------------------------------------------------ output
class Results:
    """The JSON result file, rewritten (atomically) after every section."""

    def __init__(self, path: Path, initial: dict):
        self.path = path
        self.data = initial
        self.data["sections_done"] = list(initial.get("sections_done", []))
        self.data["complete"] = False
        self._last, self._pressure = time.perf_counter(), cpu_pressure_total()
        self.write()

    def section(self, name: str, payload: Optional[dict] = None, **top_level):
        now, pressure = time.perf_counter(), cpu_pressure_total()
        self.data.setdefault("section_wall_s", {})[name] = now - self._last
        if pressure is not None and self._pressure is not None:
            self.data.setdefault("section_cpu_pressure", {})[name] = (pressure - self._pressure) / 1e6 / (now - self._last)
        contention = self.data.get("section_cpu_pressure", {}).get(name)
        log(f"[{name}: {self.data['section_wall_s'][name]:.0f} s"
            + (f", CPU pressure {contention:.0%} (share of time some task waited for a CPU)]"
               if contention is not None else "]"))
        self._last, self._pressure = now, pressure
        if payload is not None:
            self.data[name] = payload
        self.data.update(top_level)
        if name not in self.data["sections_done"]:
            self.data["sections_done"].append(name)
        self.write()

    def write(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=float) + "\n")
        os.replace(tmp, self.path)


def log(message: str = ""):
    print(message, flush=True)


def fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- sections
def section_batches(model, eager_model, batches: list[dict], repeats: int, results: Results) -> dict:
    """Encoder vs full, training and inference, fp32 and bf16, per batch; aggregates over batches."""
    log(f"\n== 1. batches: encoder-only vs full step, fp32 and bf16 interleaved, median of {repeats} ==")
    per_batch = []
    for index, batch in enumerate(batches):
        shape = describe(batch, model.config)
        log(
            f"batch {index + 1}/{len(batches)}: {shape['docs']} docs, {shape['tokens']} tokens (L={shape['max_len']}), "
            f"{shape['entities']} entities, {shape['pairs']} pairs, {shape['windows']} encoder windows"
        )
        steps = {}
        for precision in PRECISIONS:
            for kind, step in step_kinds(model, eager_model, batch, precision, with_eager_full=True).items():
                steps[f"{precision}/{kind}"] = step
        seconds, values = interleaved(steps, repeats)
        entry = {"shape": shape}
        for precision in PRECISIONS:
            stats = {kind: summary(seconds[f"{precision}/{kind}"]) for kind in STEP_KINDS}
            losses = values[f"{precision}/full_train"]
            entry[precision] = {
                **stats,
                "train_ratio": stats["full_train"]["median_s"] / stats["encoder_train"]["median_s"],
                "infer_ratio": stats["full_infer"]["median_s"] / stats["encoder_infer"]["median_s"],
                "train_ratio_paired": statistics.median(
                    f / e for f, e in zip(seconds[f"{precision}/full_train"], seconds[f"{precision}/encoder_train"])
                ),
                "infer_ratio_paired": statistics.median(
                    f / e for f, e in zip(seconds[f"{precision}/full_infer"], seconds[f"{precision}/encoder_infer"])
                ),
                "train_losses": losses,
                "loss_finite": all(math.isfinite(loss) for loss in losses),
            }
            log(
                f"  {precision}: train enc {fmt_s(stats['encoder_train']['median_s'])} "
                f"full {fmt_s(stats['full_train']['median_s'])} (x{entry[precision]['train_ratio']:.2f}) | "
                f"infer enc {fmt_s(stats['encoder_infer']['median_s'])} "
                f"full {fmt_s(stats['full_infer']['median_s'])} (x{entry[precision]['infer_ratio']:.2f}) | "
                f"loss {losses[-1]:.3f}"
            )
        per_batch.append(entry)
        aggregate = aggregate_batches(per_batch)
        results.section("batches_per_batch", per_batch, batches=len(per_batch), **aggregate["fp32"], bf16=aggregate["bf16"])
    return aggregate_batches(per_batch)


# Head settings whose step cost differs (each against the same eager encoder baseline): the defaults, the released
# code's d1 (the bilinear's fan-in d1 * k grows with d1), and Eq. 10's positive anchors as printed (the default
# all-pair anchors make the contrastive similarity [pairs, pairs] instead of [positive pairs, pairs]).
HEAD_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "pair_embedding_size=1024": {"pair_embedding_size": 1024},
    "contrastive_anchors=positive": {"contrastive_anchors": "positive"},
}


def section_settings(vocab, eager_model, batches: list[dict], repeats: int) -> dict:
    """The step ratios of each of `HEAD_SETTINGS`, fp32, on the same batches against the same eager encoder
    baseline, every step interleaved."""
    log(f"\n== settings: full / encoder-only step with {', '.join(HEAD_SETTINGS)}, fp32 ==")
    models = {name: load_model(vocab, **overrides) for name, overrides in HEAD_SETTINGS.items()}
    totals = {f"{kind}/{name}": 0.0 for kind in ("full_train", "full_infer") for name in HEAD_SETTINGS}
    totals.update({"encoder_train": 0.0, "encoder_infer": 0.0})
    per_batch = []
    for batch in batches:
        steps = {}
        for name, model in models.items():
            kinds = step_kinds(model, eager_model, batch, "fp32")
            steps[f"full_train/{name}"], steps[f"full_infer/{name}"] = kinds["full_train"], kinds["full_infer"]
        steps["encoder_train"], steps["encoder_infer"] = kinds["encoder_train"], kinds["encoder_infer"]
        seconds, _ = interleaved(steps, repeats)
        medians = {step: statistics.median(values) for step, values in seconds.items()}
        for step in totals:
            totals[step] += medians[step]
        entry = {"pairs": int(batch["hts"].shape[0])}
        for name in HEAD_SETTINGS:
            entry[name] = {"train_ratio": medians[f"full_train/{name}"] / medians["encoder_train"],
                           "infer_ratio": medians[f"full_infer/{name}"] / medians["encoder_infer"]}
        per_batch.append(entry)
    out = {"flags": HEAD_SETTINGS, "batches": per_batch}
    for name in HEAD_SETTINGS:
        out[name] = {"train_ratio": totals[f"full_train/{name}"] / totals["encoder_train"],
                     "infer_ratio": totals[f"full_infer/{name}"] / totals["encoder_infer"],
                     "max_batch_train_ratio": max(entry[name]["train_ratio"] for entry in per_batch),
                     "max_batch_infer_ratio": max(entry[name]["infer_ratio"] for entry in per_batch)}
        log(f"  {name}: training x{out[name]['train_ratio']:.2f} (worst batch x{out[name]['max_batch_train_ratio']:.2f}), "
            f"inference x{out[name]['infer_ratio']:.2f} (worst x{out[name]['max_batch_infer_ratio']:.2f})")
    for model in models.values():
        model.zero_grad(set_to_none=True)
    return out


def aggregate_batches(per_batch: list[dict]) -> dict:
    """Over batches: ratios of summed medians, docs/s = documents / summed median step time."""
    docs = sum(entry["shape"]["docs"] for entry in per_batch)
    out = {}
    for precision in PRECISIONS:
        total = {
            kind: sum(entry[precision][kind]["median_s"] for entry in per_batch)
            for kind in STEP_KINDS
        }
        total_min = {
            kind: sum(entry[precision][kind]["min_s"] for entry in per_batch)
            for kind in STEP_KINDS
        }
        out[precision] = {
            "train_step_ratio_vs_encoder": total["full_train"] / total["encoder_train"],
            "infer_ratio_vs_encoder": total["full_infer"] / total["encoder_infer"],
            "train_step_ratio_vs_encoder_of_minima": total_min["full_train"] / total_min["encoder_train"],
            "infer_ratio_vs_encoder_of_minima": total_min["full_infer"] / total_min["encoder_infer"],
            "train_docs_per_s": docs / total["full_train"],
            "infer_docs_per_s": docs / total["full_infer"],
            "encoder_train_docs_per_s": docs / total["encoder_train"],
            "encoder_infer_docs_per_s": docs / total["encoder_infer"],
            "train_step_s_per_batch": total["full_train"] / len(per_batch),
            "infer_s_per_batch": total["full_infer"] / len(per_batch),
            "loss_finite": all(entry[precision]["loss_finite"] for entry in per_batch),
        }
    return out


def section_bf16_check(model, batch: dict) -> dict:
    """bf16 autocast against fp32 on one batch, eval mode (no dropout): logits, decisions, loss."""
    log("\n== 2. bf16 check: fp32 vs bf16 autocast, first batch, eval mode ==")
    model.eval()
    outputs = {}
    with torch.no_grad():
        for precision in PRECISIONS:
            with autocast(precision):
                outputs[precision] = model(**batch, return_predictions=True)
    fp32, bf16 = outputs["fp32"].logits.float(), outputs["bf16"].logits.float()
    margin32 = fp32[:, 1:] - fp32[:, :1]
    margin16 = bf16[:, 1:] - bf16[:, :1]
    check = {
        "logits_dtype_bf16": str(outputs["bf16"].logits.dtype),
        "logits_max_abs_diff": float((fp32 - bf16).abs().max()),
        "logits_rel_l2_error": float((fp32 - bf16).norm() / fp32.norm().clamp(min=1e-12)),
        "logits_std_fp32": float(fp32.std()),
        "margin_sign_agreement": float(((margin32 > 0) == (margin16 > 0)).float().mean()),
        "prediction_agreement": float((outputs["fp32"].predictions == outputs["bf16"].predictions).all(1).float().mean()),
        "loss_fp32": float(outputs["fp32"].loss),
        "loss_bf16": float(outputs["bf16"].loss),
        "loss_rel_diff": float(abs(outputs["bf16"].loss - outputs["fp32"].loss) / abs(outputs["fp32"].loss)),
        "contrastive_fp32": float(outputs["fp32"].contrastive_loss),
        "contrastive_bf16": float(outputs["bf16"].contrastive_loss),
    }
    check["loss_finite"] = math.isfinite(check["loss_fp32"]) and math.isfinite(check["loss_bf16"])
    log(
        f"logits: max |diff| {check['logits_max_abs_diff']:.4f}, relative L2 error {check['logits_rel_l2_error']:.4f} "
        f"(logit std {check['logits_std_fp32']:.3f}); sign of f_r - f_NA agrees on {check['margin_sign_agreement']:.2%}, "
        f"decoded pairs agree on {check['prediction_agreement']:.2%}"
    )
    log(
        f"loss: fp32 {check['loss_fp32']:.4f}, bf16 {check['loss_bf16']:.4f} (relative diff {check['loss_rel_diff']:.2e}); "
        f"contrastive term fp32 {check['contrastive_fp32']:.4f}, bf16 {check['contrastive_bf16']:.4f}"
    )
    return check


def section_memory(model, eager_model, batches: list[dict]) -> dict:
    """Peak RSS of each step kind on the batch with the most pairs (each step run once, after the timed runs)."""
    index = max(range(len(batches)), key=lambda i: batches[i]["hts"].shape[0])
    batch = batches[index]
    log(f"\n== 3. memory: peak RSS of one step, batch {index + 1} ({batch['hts'].shape[0]} pairs) ==")
    parameters_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    out = {"batch": index + 1, "pairs": batch["hts"].shape[0], "parameters_mib": parameters_mib}
    for precision in PRECISIONS:
        out[precision] = {}
        for kind, step in step_kinds(model, eager_model, batch, precision, with_eager_full=True).items():
            if step.prepare is not None:
                step.prepare()
            with PeakRSS() as peak:
                step.run()
            out["method"] = peak.method
            out[precision][f"{kind}_mib"] = peak.mib
        log(
            f"  {precision}: train enc {out[precision]['encoder_train_mib']:.0f} MiB, "
            f"full {out[precision]['full_train_mib']:.0f} MiB | infer enc {out[precision]['encoder_infer_mib']:.0f} MiB, "
            f"full {out[precision]['full_infer_mib']:.0f} MiB"
        )
    log(f"  method: {out['method']}; parameters {parameters_mib:.0f} MiB (gradients of the step included in its peak)")
    model.zero_grad(set_to_none=True)
    return out


def section_breakdown(model, eager_model, batch: dict, repeats: int) -> dict:
    """Full step vs its parts, each timed alone (fwd + bwd from detached leaves), interleaved."""
    log(f"\n== 4. breakdown: where the full step's time goes (batch 1, {batch['hts'].shape[0]} pairs), median of {repeats} ==")
    config = model.config
    kwargs = config.objective_kwargs()
    labels = batch["labels"]
    pair_inputs = (batch["mention_positions"], batch["hts"], batch["pair_document_index"])
    steps: dict[str, Step] = {}
    for precision in PRECISIONS:
        model.eval()
        with torch.no_grad(), autocast(precision):
            hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
            z_h, z_t = model.pair_representations(
                hidden, attention, batch["mention_positions"], batch["hts"], batch["pair_document_index"]
            )
            head, tail = model.bilinear.split_groups(z_h), model.bilinear.split_groups(z_t)
            logits = model.bilinear(head, tail)

        def leaf(t):
            return t.detach().clone().requires_grad_(True)

        def head_and_loss(precision=precision, hidden=hidden, attention=attention):
            h, a = leaf(hidden), leaf(attention)
            with autocast(precision):
                zh, zt = model.pair_representations(h, a, *pair_inputs)
                gh, gt = model.bilinear.split_groups(zh), model.bilinear.split_groups(zt)
                loss = pemscl_objective(model.bilinear(gh, gt), labels, GroupedPairEmbeddings(gh, gt), **kwargs)["loss"]
            loss.backward()

        def pair_representations(precision=precision, hidden=hidden, attention=attention):
            h, a = leaf(hidden), leaf(attention)
            with autocast(precision):
                zh, zt = model.pair_representations(h, a, *pair_inputs)
                scalar = zh.float().sum() + zt.float().sum()
            scalar.backward()

        def bilinear(precision=precision, head=head, tail=tail):
            gh, gt = leaf(head), leaf(tail)
            with autocast(precision):
                scalar = model.bilinear(gh, gt).float().sum()
            scalar.backward()

        def loss_only(precision=precision, logits=logits, head=head, tail=tail):
            lg, gh, gt = leaf(logits), leaf(head), leaf(tail)
            with autocast(precision):
                loss = pemscl_objective(lg, labels, GroupedPairEmbeddings(gh, gt), **kwargs)["loss"]
            loss.backward()

        def pmt(precision=precision, logits=logits):
            lg = leaf(logits)
            with autocast(precision):
                loss = pmt_loss(lg, labels).mean()
            loss.backward()

        def entropy(precision=precision, logits=logits):
            lg = leaf(logits)
            with autocast(precision):
                loss = entropy_loss(lg, labels, gamma_pos=config.gamma_pos, gamma_neg=config.gamma_neg).mean()
            loss.backward()

        def contrastive(precision=precision, head=head, tail=tail):
            gh, gt = leaf(head), leaf(tail)
            with autocast(precision):
                loss = contrastive_loss(
                    GroupedPairEmbeddings(gh, gt), labels, config.contrastive_temperature, config.contrastive_average,
                    config.contrastive_anchors,
                ).mean()
            loss.backward()

        def head_infer(precision=precision, hidden=hidden, attention=attention):
            with torch.no_grad(), autocast(precision):
                zh, zt = model.pair_representations(
                    hidden, attention, batch["mention_positions"], batch["hts"], batch["pair_document_index"]
                )
                model.bilinear(model.bilinear.split_groups(zh), model.bilinear.split_groups(zt))

        def train_mode():
            model.train()
            model.zero_grad(set_to_none=True)

        kinds = step_kinds(model, eager_model, batch, precision)
        parts = {
            "train/full": kinds["full_train"],
            "train/encoder": kinds["encoder_train"],
            "train/head+loss": Step(head_and_loss, train_mode),
            "train/pair_representations": Step(pair_representations, train_mode),
            "train/bilinear": Step(bilinear, train_mode),
            "train/loss": Step(loss_only, train_mode),
            "train/loss.pmt": Step(pmt, train_mode),
            "train/loss.entropy": Step(entropy, train_mode),
            "train/loss.contrastive": Step(contrastive, train_mode),
            "infer/full": kinds["full_infer"],
            "infer/encoder": kinds["encoder_infer"],
            "infer/head": Step(head_infer, model.eval),
        }
        steps.update({f"{precision}/{name}": step for name, step in parts.items()})
    seconds, _ = interleaved(steps, repeats)
    out: dict[str, Any] = {"pairs": batch["hts"].shape[0]}
    names = [name.split("/", 1)[1] for name in steps if name.startswith("fp32/")]
    rows = []
    for name in names:
        row = [name]
        for precision in PRECISIONS:
            stats = summary(seconds[f"{precision}/{name}"])
            full = statistics.median(seconds[f"{precision}/{name.split('/')[0]}/full"])
            out.setdefault(precision, {})[name] = {**stats, "share_of_full": stats["median_s"] / full}
            row += [fmt_s(stats["median_s"]), f"{stats['median_s'] / full:.0%}"]
        rows.append(row)
    log(table(["part (fwd+bwd for train/)", "fp32", "% of full", "bf16", "% of full"], rows))
    log("(parts are timed alone from detached inputs, so they do not add up exactly to the full step)")
    out["forward_gflop"] = forward_gflop(model, eager_model, batch)
    flops = out["forward_gflop"]
    log(
        f"forward FLOPs (torch.utils.flop_counter): encoder {flops['encoder']:.1f} GFLOP ({flops['encoder_tokens']} padded "
        f"tokens), full model {flops['full']:.1f}, grouped bilinear {flops['bilinear']:.1f} "
        f"({batch['hts'].shape[0]} pairs x {flops['bilinear_per_pair_mflop']:.1f} MFLOP)"
    )
    model.zero_grad(set_to_none=True)
    return out


def counted_gflop(run: Callable[[], Any]) -> float:
    """GFLOP of `run()` as `torch.utils.flop_counter.FlopCounterMode` counts them (matrix products, attention
    kernels, convolutions; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=IN_PLACE_FLOP_FORMULAS) as counter:
        run()
    return counter.get_total_flops() / 1e9


def _in_place_addmm_flop(self_shape, first_shape, second_shape, *args, out_shape=None, **kwargs) -> int:
    """`Tensor.addmm_(a [m, k], b [k, n])`: 2 m k n, as torch counts the out-of-place `addmm`."""
    rows, inner = first_shape
    return 2 * rows * inner * second_shape[1]


# `FlopCounterMode` knows `addmm` but not its in-place form, which `GroupedBilinear` accumulates its logits with:
# without this the bilinear layer's forward would count as 0 FLOPs.
IN_PLACE_FLOP_FORMULAS = {torch.ops.aten.addmm_: _in_place_addmm_flop}


def forward_gflop(model, eager_model, batch: dict, with_bilinear: bool = True) -> dict:
    """Forward FLOPs (eval mode, no gradients) of the eager encoder on the model's encoder inputs, of the full
    model, and (`with_bilinear`) of the grouped bilinear layer alone, counted by `counted_gflop`."""
    encoder_ids, encoder_mask = encoder_inputs(batch, model.config)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}
    model.eval(), eager_model.eval()
    with torch.no_grad():
        counts = {
            "encoder": counted_gflop(lambda: eager_model.encoder(input_ids=encoder_ids, attention_mask=encoder_mask,
                                                                 output_attentions=True)),
            # Counted on the eager twin (same computation): the counter does not see inside every fused SDPA kernel.
            "full": counted_gflop(lambda: eager_model(**unlabelled)),
        }
        if not with_bilinear:
            return {**counts, "encoder_tokens": encoder_ids.numel()}
        hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
        z_h, z_t = model.pair_representations(hidden, attention, batch["mention_positions"], batch["hts"],
                                              batch["pair_document_index"])
        head, tail = model.bilinear.split_groups(z_h), model.bilinear.split_groups(z_t)
        counts["bilinear"] = counted_gflop(lambda: model.bilinear(head, tail))
    pairs = max(batch["hts"].shape[0], 1)
    return {**counts, "encoder_tokens": encoder_ids.numel(), "bilinear_per_pair_mflop": counts["bilinear"] * 1e3 / pairs}


def section_bilinear(model, batch: dict, repeats: int) -> dict:
    """`GroupedBilinear` (chunked) vs `F.linear` on the materialized pair vectors, fwd+bwd and fwd, same inputs."""
    num_pairs = batch["hts"].shape[0]
    bilinear = model.bilinear
    dims = bilinear.weight.shape[1]
    log(
        f"\n== 5. grouped bilinear vs materialized F.linear: {num_pairs} pairs x {dims} dims -> {bilinear.weight.shape[0]} "
        f"labels, median of {repeats} =="
    )
    model.eval()
    with torch.no_grad():
        hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
        z_h, z_t = model.pair_representations(
            hidden, attention, batch["mention_positions"], batch["hts"], batch["pair_document_index"]
        )
    head, tail = bilinear.split_groups(z_h).contiguous(), bilinear.split_groups(z_t).contiguous()
    weight = bilinear.weight.detach().clone().requires_grad_(True)
    bias = bilinear.bias.detach().clone().requires_grad_(True)

    def grouped(precision, train):
        def run():
            gh, gt = head.clone().requires_grad_(train), tail.clone().requires_grad_(train)
            with torch.set_grad_enabled(train), autocast(precision):
                logits = bilinear(gh, gt)
            if train:
                logits.float().sum().backward()
            return logits.detach(), (gh.grad, gt.grad) if train else None
        return run

    def materialized(precision, train):
        def run():
            gh, gt = head.clone().requires_grad_(train), tail.clone().requires_grad_(train)
            weight.grad = bias.grad = None
            with torch.set_grad_enabled(train), autocast(precision):
                logits = F.linear(GroupedPairEmbeddings(gh, gt).materialize(), weight, bias)
            if train:
                logits.float().sum().backward()
            return logits.detach(), (gh.grad, gt.grad) if train else None
        return run

    def clear():
        bilinear.zero_grad(set_to_none=True)
        weight.grad = bias.grad = None

    steps = {}
    for precision in PRECISIONS:
        for train in (True, False):
            mode = "fwd+bwd" if train else "fwd"
            steps[f"{precision}/grouped/{mode}"] = Step(grouped(precision, train), clear)
            steps[f"{precision}/materialized/{mode}"] = Step(materialized(precision, train), clear)
    seconds, values = interleaved(steps, repeats)
    out: dict[str, Any] = {"pairs": num_pairs, "pair_vector_dims": dims, "block_elements": bilinear.block_elements}
    rows = []
    for precision in PRECISIONS:
        for mode in ("fwd+bwd", "fwd"):
            grouped_s = summary(seconds[f"{precision}/grouped/{mode}"])
            linear_s = summary(seconds[f"{precision}/materialized/{mode}"])
            clear()
            with PeakRSS() as grouped_peak:
                steps[f"{precision}/grouped/{mode}"].run()
            clear()
            with PeakRSS() as linear_peak:
                steps[f"{precision}/materialized/{mode}"].run()
            clear()
            a, grads_a = values[f"{precision}/grouped/{mode}"][-1]
            b, grads_b = values[f"{precision}/materialized/{mode}"][-1]
            entry = {
                "grouped": {**grouped_s, "peak_rss_mib": grouped_peak.mib},
                "materialized": {**linear_s, "peak_rss_mib": linear_peak.mib},
                "speedup": linear_s["median_s"] / grouped_s["median_s"],
                "logits_max_abs_diff": float((a.float() - b.float()).abs().max()),
            }
            if grads_a is not None:
                entry["grad_head_max_abs_diff"] = float((grads_a[0] - grads_b[0]).abs().max())
            out[f"{precision}/{mode}"] = entry
            rows.append(
                [f"{precision} {mode}", fmt_s(grouped_s["median_s"]), fmt_s(linear_s["median_s"]), f"x{entry['speedup']:.2f}",
                 f"{grouped_peak.mib:.0f}", f"{linear_peak.mib:.0f}", f"{entry['logits_max_abs_diff']:.1e}"]
            )
    out["method"] = grouped_peak.method
    log(table(["", "grouped", "materialized", "speedup", "grouped MiB", "materialized MiB", "max|dlogits|"], rows))
    return out


def section_unlabeled(model, tokenizer, vocab, data_dir, num_docs: int, batch_size: int) -> dict:
    """End-to-end inference on DocRED's unlabeled test documents: featurization excluded, collation included."""
    log(f"\n== 6. unlabeled DocRED test: end-to-end inference of {num_docs} documents in batches of {batch_size} ==")
    features = featurize(read_documents("docred/test_unlabeled.json", data_dir, limit=num_docs), tokenizer, vocab)
    collator = DataCollatorForDocRE(tokenizer)
    chunks = [features[start : start + batch_size] for start in range(0, len(features), batch_size)]
    model.eval()

    def infer(precision, chunk):
        def run():
            batch = collator(chunk)
            with torch.no_grad(), autocast(precision):
                return int(model(**batch, return_predictions=True).predictions[:, 1:].sum())
        return run

    totals = {precision: 0.0 for precision in PRECISIONS}
    predicted = {precision: 0 for precision in PRECISIONS}
    for index, chunk in enumerate(chunks):
        steps = {precision: Step(infer(precision, chunk)) for precision in PRECISIONS}
        seconds, values = interleaved(steps, repeats=1, warmup=1 if index == 0 else 0)
        for precision in PRECISIONS:
            totals[precision] += seconds[precision][0]
            predicted[precision] += values[precision][0]
    out = {
        "docs": len(features),
        "pairs": sum(len(feature["hts"]) for feature in features),
        "tokens": sum(len(feature["input_ids"]) for feature in features),
    }
    for precision in PRECISIONS:
        out[precision] = {"seconds": totals[precision], "docs_per_s": len(features) / totals[precision],
                          "predicted_relations": predicted[precision]}
    log(
        f"{out['docs']} docs, {out['tokens']} tokens, {out['pairs']} pairs: "
        + ", ".join(f"{precision} {out[precision]['docs_per_s']:.2f} docs/s" for precision in PRECISIONS)
    )
    return out


# ------------------------------------------------------------------------------------------- epoch
def epoch_batches(lengths: list[int], batch_size: int, seed: int, grouped: bool) -> list[list[int]]:
    """The document indices of each batch of one training epoch: as `run_docre.py` draws them by default
    (`LengthGroupedSampler`, the Trainer's `group_by_length`) or uniformly shuffled."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the padded [B, L] token grid that is padding."""
    grid = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths[i] for batch in batches for i in batch) / grid


def split_features(path: str, data_dir, limit: int, tokenizer, vocab) -> list[dict]:
    return featurize(read_documents(path, data_dir, limit=limit or None), tokenizer, vocab)


def section_epoch(model, eager_model, tokenizer, vocab, args) -> dict:
    """What users feel: one training epoch over every batch of a split (length-grouped as `run_docre.py` trains)
    and the prediction of every document of another, each step next to the eager encoder alone on the same batch,
    fp32 and bf16 interleaved; then `DocRETrainer.predict` on the whole split, as a user calls it."""
    from tqdm.auto import tqdm

    log(f"\n== 8. epoch: every batch of {args.epoch_train_file} (training) and of {args.epoch_test_file} "
        "(inference), full vs eager encoder ==")
    collator = DataCollatorForDocRE(tokenizer)
    out: dict[str, Any] = {}

    train = split_features(args.epoch_train_file, args.data_dir, args.epoch_documents, tokenizer, vocab)
    lengths = [len(feature["input_ids"]) for feature in train]
    order = epoch_batches(lengths, args.batch_size, seed=0, grouped=True)
    shuffled = epoch_batches(lengths, args.batch_size, seed=0, grouped=False)
    totals = {f"{p}/{k}": 0.0 for p in PRECISIONS for k in ("encoder_train", "full_train")}
    ratios: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for index, members in enumerate(tqdm(order, desc="timing a training epoch", mininterval=10)):
        batch = collator([train[i] for i in members])
        steps = {}
        for precision in PRECISIONS:
            kinds = step_kinds(model, eager_model, batch, precision)
            steps[f"{precision}/encoder_train"], steps[f"{precision}/full_train"] = kinds["encoder_train"], kinds["full_train"]
        seconds, _ = interleaved(steps, repeats=1, warmup=1 if index == 0 else 0)
        for name in totals:
            totals[name] += seconds[name][0]
        for precision in PRECISIONS:
            ratios[precision].append(seconds[f"{precision}/full_train"][0] / seconds[f"{precision}/encoder_train"][0])
    model.zero_grad(set_to_none=True), eager_model.zero_grad(set_to_none=True)
    out["train"] = {
        "file": args.epoch_train_file, "docs": len(train), "batches": len(order), "batch_size": args.batch_size,
        "tokens": sum(lengths), "pairs": sum(len(feature["hts"]) for feature in train),
        "padding_share_length_grouped": padding_share(lengths, order),
        "padding_share_shuffled": padding_share(lengths, shuffled),
    }
    for precision in PRECISIONS:
        full, encoder = totals[f"{precision}/full_train"], totals[f"{precision}/encoder_train"]
        out["train"][precision] = {
            "docs_per_s": len(train) / full, "encoder_docs_per_s": len(train) / encoder, "seconds": full,
            "encoder_seconds": encoder, "ratio_of_sums": full / encoder,
            "mean_batch_ratio": statistics.mean(ratios[precision]), "max_batch_ratio": max(ratios[precision]),
        }
    log(f"training: {len(train)} docs in {len(order)} length-grouped batches (padding {out['train']['padding_share_length_grouped']:.0%}"
        f" of the token grid, shuffled {out['train']['padding_share_shuffled']:.0%})")
    for precision in PRECISIONS:
        row = out["train"][precision]
        log(f"  {precision}: {row['docs_per_s']:.2f} docs/s (eager encoder alone {row['encoder_docs_per_s']:.2f}); full / "
            f"encoder step: mean over batches x{row['mean_batch_ratio']:.2f}, of the sums x{row['ratio_of_sums']:.2f}, "
            f"worst batch x{row['max_batch_ratio']:.2f}")

    out["infer"] = epoch_inference(model, eager_model, tokenizer, vocab, args)
    out["trainer_predict"] = trainer_predict(model, tokenizer, args)
    return out


def epoch_inference(model, eager_model, tokenizer, vocab, args) -> dict:
    """The epoch section's inference part: every document of `--epoch_test_file` in length-sorted batches
    (collation and decoding included), next to the eager encoder alone on the same batches, fp32 and bf16."""
    from tqdm.auto import tqdm

    collator = DataCollatorForDocRE(tokenizer)
    test, chunks = inference_chunks(model, tokenizer, vocab, args)
    test_lengths = [len(feature["input_ids"]) for feature in test]
    model.eval(), eager_model.eval()

    def full(precision, members):
        def run():  # collate + forward + decoding, as the pipeline and the Trainer's prediction step do
            batch = collator([test[i] for i in members])
            batch.pop("labels", None)  # both drop the labels: no loss (whose all-pair contrastive term is [P, P])
            with torch.no_grad(), autocast(precision):
                return int(model(**batch, return_predictions=True).predictions[:, 1:].sum())
        return run

    def encoder_only(precision, members):
        def run():
            batch = collator([test[i] for i in members])
            ids, mask = encoder_inputs(batch, model.config)
            with torch.no_grad(), autocast(precision):
                eager_model.encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
        return run

    infer_totals = {f"{p}/{k}": 0.0 for p in PRECISIONS for k in ("encoder_infer", "full_infer")}
    for index, members in enumerate(tqdm(chunks, desc="timing the prediction of a split", mininterval=10)):
        steps = {}
        for precision in PRECISIONS:
            steps[f"{precision}/encoder_infer"] = Step(encoder_only(precision, members))
            steps[f"{precision}/full_infer"] = Step(full(precision, members))
        seconds, _ = interleaved(steps, repeats=1, warmup=1 if index == 0 else 0)
        for name in infer_totals:
            infer_totals[name] += seconds[name][0]
    gflop = inference_gflop(model, eager_model, collator, test, chunks)
    out = {"file": args.epoch_test_file, "docs": len(test), "batch_size": args.eval_batch_size,
                    "tokens": sum(test_lengths), "pairs": sum(len(feature["hts"]) for feature in test),
                    "forward_gflop": gflop}
    for precision in PRECISIONS:
        full_s, encoder_s = infer_totals[f"{precision}/full_infer"], infer_totals[f"{precision}/encoder_infer"]
        out[precision] = {"docs_per_s": len(test) / full_s, "encoder_docs_per_s": len(test) / encoder_s,
                                   "seconds": full_s, "ratio_of_sums": full_s / encoder_s,
                                   "full_gflop_per_s": gflop["full"] / full_s}
    log(f"inference: {len(test)} docs in {len(chunks)} length-sorted batches of {args.eval_batch_size}; forward FLOPs "
        f"{gflop['full']:.0f} GFLOP (eager encoder {gflop['encoder']:.0f})")
    for precision in PRECISIONS:
        row = out[precision]
        log(f"  {precision}: {row['docs_per_s']:.2f} docs/s (eager encoder alone {row['encoder_docs_per_s']:.2f}, "
            f"x{row['ratio_of_sums']:.2f}); {row['full_gflop_per_s']:.1f} GFLOP/s")

    return out


def inference_chunks(model, tokenizer, vocab, args) -> tuple[list[dict], list[list[int]]]:
    """The epoch section's inference split and its length-sorted batches, as `DocRETrainer` batches evaluation."""
    test = split_features(args.epoch_test_file, args.data_dir, args.epoch_documents, tokenizer, vocab)
    lengths = [len(feature["input_ids"]) for feature in test]
    by_length = sorted(range(len(test)), key=lambda i: (-lengths[i], i))
    return test, [by_length[start : start + args.eval_batch_size] for start in range(0, len(test), args.eval_batch_size)]


def inference_gflop(model, eager_model, collator, test: list[dict], chunks: list[list[int]]) -> dict:
    """Forward GFLOP of the inference pass over `chunks`: the eager encoder alone and the full model (untimed)."""
    from tqdm.auto import tqdm

    gflop = {"encoder": 0.0, "full": 0.0}
    for members in tqdm(chunks, desc="counting inference FLOPs", mininterval=10):
        flops = forward_gflop(model, eager_model, collator([test[i] for i in members]), with_bilinear=False)
        gflop["encoder"] += flops["encoder"]
        gflop["full"] += flops["full"]
    return gflop


def recount_epoch_flops(model, eager_model, tokenizer, vocab, args, epoch: dict) -> dict:
    """The epoch section with its inference FLOPs counted again (and GFLOP/s from its stored timings)."""
    test, chunks = inference_chunks(model, tokenizer, vocab, args)
    gflop = inference_gflop(model, eager_model, DataCollatorForDocRE(tokenizer), test, chunks)
    infer = {**epoch["infer"], "forward_gflop": gflop}
    for precision in PRECISIONS:
        infer[precision] = {**infer[precision], "full_gflop_per_s": gflop["full"] / infer[precision]["seconds"]}
    log(f"inference forward FLOPs: {gflop['full']:.0f} GFLOP (eager encoder {gflop['encoder']:.0f})")
    return {**epoch, "infer": infer}


def trainer_predict(model, tokenizer, args) -> dict:
    """`DocRETrainer.predict` on the whole test split, fp32 and bf16 (`--bf16` autocast), with its peak memory."""
    import copy
    import tempfile

    from accelerate.state import AcceleratorState

    from transformers import TrainingArguments

    from bench.common import data_dir as shared_data_dir
    from data_collators import featurize_dataset, load_docred
    from docre_training.trainer import DocRETrainer

    path = shared_data_dir(args.data_dir) / args.epoch_test_file
    raw = load_docred("re-docred", data_files={"test": str(path)})["test"]
    if args.epoch_documents:
        raw = raw.select(range(min(args.epoch_documents, raw.num_rows)))
    features = featurize_dataset(raw, tokenizer, model.config.label2id)
    out = {}
    for precision in PRECISIONS:
        # accelerate keeps its mixed-precision setting in a process-wide state and wraps the model's forward in
        # place: without a fresh state and a fresh model copy, the second trainer would silently run fp32.
        AcceleratorState._reset_state(reset_partial_state=True)
        with tempfile.TemporaryDirectory(prefix="pemscl-speed-") as folder:
            trainer = DocRETrainer(
                model=copy.deepcopy(model), data_collator=DataCollatorForDocRE(tokenizer), processing_class=tokenizer,
                args=TrainingArguments(output_dir=folder, per_device_eval_batch_size=args.eval_batch_size,
                                       report_to="none", use_cpu=True, bf16=precision == "bf16", disable_tqdm=True),
            )
            with PeakRSS() as peak:
                metrics = trainer.predict(features).metrics
        out[precision] = {"docs_per_s": features.num_rows / metrics["test_runtime"], "runtime_s": metrics["test_runtime"],
                          "test_f1": metrics.get("test_f1"), "num_predictions": metrics.get("test_num_predictions"),
                          "accelerate_mixed_precision": trainer.accelerator.mixed_precision,
                          "peak_rss_mib": peak.mib}
        log(f"  DocRETrainer.predict {precision}: {out[precision]['docs_per_s']:.2f} docs/s "
            f"({metrics['test_runtime']:.1f} s), peak RSS {peak.mib:.0f} MiB")
    return out


# ---------------------------------------------------------------------------------------- scaling
def concatenate(documents: list[dict]) -> dict:
    """One longer document made of real ones: sentences, entities and labels appended with shifted indices."""
    merged = {"title": " + ".join(doc["title"] for doc in documents), "sents": [], "vertexSet": [], "labels": []}
    for doc in documents:
        sent_offset, entity_offset = len(merged["sents"]), len(merged["vertexSet"])
        word_offset = sum(len(sent) for sent in merged["sents"])
        for entity in doc["vertexSet"]:
            mentions = []
            for mention in entity:
                mention = copy.deepcopy(mention)
                mention["sent_id"] += sent_offset
                if "global_pos" in mention:
                    mention["global_pos"] = [p + word_offset for p in mention["global_pos"]]
                if "index" in mention:
                    entity_index, _, mention_index = str(mention["index"]).partition("_")
                    mention["index"] = f"{int(entity_index) + entity_offset}_{mention_index}"
                mentions.append(mention)
            merged["vertexSet"].append(mentions)
        for label in doc.get("labels", []):
            merged["labels"].append(
                {**label, "h": label["h"] + entity_offset, "t": label["t"] + entity_offset,
                 "evidence": [e + sent_offset for e in label.get("evidence", [])]}
            )
        merged["sents"].extend(doc["sents"])
    return merged


def bucket_name(low: int, high: Optional[int]) -> str:
    return f"<{high}" if low == 0 else (f">{low}" if high is None else f"{low}-{high}")


def pick_spread(candidates: list[dict], count: int) -> list[dict]:
    """`count` candidates evenly spread over their pair counts (smallest and largest included)."""
    ordered = sorted(candidates, key=lambda c: (len(c["hts"]), len(c["input_ids"])))
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [ordered[len(ordered) // 2]]
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def scaling_documents(tokenizer, vocab, data_dir, per_bucket: int) -> list[dict]:
    """Single labelled documents per token-length bucket; the > 768 bucket from 2 concatenated documents."""
    raw = read_documents("re-docred/test_revised.json", data_dir) + read_documents("re-docred/dev_revised.json", data_dir)
    features = featurize(raw, tokenizer, vocab)
    for feature, doc in zip(features, raw):
        feature["source"] = "real"
        feature["title"] = doc["title"]
    chosen = []
    for low, high in TOKEN_BUCKETS:
        name = bucket_name(low, high)
        candidates = [f for f in features if low <= len(f["input_ids"]) < (high or 10**9)]
        if high is None and len(candidates) < per_bucket:
            merged = [concatenate(raw[i : i + 2]) for i in range(0, 400, 2)]
            for feature, doc in zip(featurize(merged, tokenizer, vocab), merged):
                if len(feature["input_ids"]) >= low:
                    feature["source"] = "concatenated"
                    feature["title"] = doc["title"]
                    candidates.append(feature)
        for feature in pick_spread(candidates, per_bucket):
            chosen.append({**feature, "bucket": name})
    return chosen


def section_scaling(model, eager_model, tokenizer, vocab, data_dir, per_bucket: int, repeats: int, plot_path: Path, label: str) -> dict:
    log(f"\n== 7. scaling: single documents by token length and pair count, fp32, median of {repeats} ==")
    documents = scaling_documents(tokenizer, vocab, data_dir, per_bucket)
    started, pressure_before = time.perf_counter(), cpu_pressure_total()
    collator = DataCollatorForDocRE(tokenizer)
    rows = []
    for index, feature in enumerate(documents):
        batch = collator([feature])
        shape = describe(batch, model.config)
        seconds, _ = interleaved(step_kinds(model, eager_model, batch, "fp32"), repeats, warmup=0)
        row = {
            "bucket": feature["bucket"], "source": feature["source"], "title": feature["title"],
            "tokens": shape["tokens"], "entities": shape["entities"], "pairs": shape["pairs"], "windows": shape["windows"],
            **{f"{kind}_s": statistics.median(times) for kind, times in seconds.items()},
        }
        rows.append(row)
        log(
            f"doc {index + 1}/{len(documents)} [{row['bucket']}, {row['source']}]: {row['tokens']} tokens, {row['pairs']} pairs, "
            f"{row['windows']} windows: train {fmt_s(row['full_train_s'])} (enc {fmt_s(row['encoder_train_s'])}), "
            f"infer {fmt_s(row['full_infer_s'])} (enc {fmt_s(row['encoder_infer_s'])})"
        )
    model.zero_grad(set_to_none=True)
    buckets = []
    for low, high in TOKEN_BUCKETS:
        name = bucket_name(low, high)
        members = [row for row in rows if row["bucket"] == name]
        if not members:
            continue
        mean = lambda key: statistics.mean(row[key] for row in members)  # noqa: E731
        buckets.append({
            "bucket": name, "docs": len(members), "tokens": mean("tokens"), "pairs": mean("pairs"),
            "pairs_range": [min(r["pairs"] for r in members), max(r["pairs"] for r in members)],
            # The scaling rows time no all-eager full model (`step_kinds` without `with_eager_full`).
            **{f"{kind}_s": mean(f"{kind}_s") for kind in STEP_KINDS if f"{kind}_s" in members[0]},
        })
        buckets[-1]["train_ratio"] = buckets[-1]["full_train_s"] / buckets[-1]["encoder_train_s"]
        buckets[-1]["infer_ratio"] = buckets[-1]["full_infer_s"] / buckets[-1]["encoder_infer_s"]
    log(table(
        ["tokens", "docs", "mean tokens", "pairs (range)", "train s/doc", "x enc", "infer s/doc", "x enc"],
        [[b["bucket"], b["docs"], f"{b['tokens']:.0f}", f"{b['pairs']:.0f} ({b['pairs_range'][0]}-{b['pairs_range'][1]})",
          f"{b['full_train_s']:.3f}", f"{b['train_ratio']:.2f}", f"{b['full_infer_s']:.3f}", f"{b['infer_ratio']:.2f}"]
         for b in buckets],
    ))
    # Head + loss cost (full - encoder) against pairs: least-squares slope, per 1,000 pairs.
    fits = {}
    for mode in ("train", "infer"):
        xs = [row["pairs"] for row in rows]
        ys = [row[f"full_{mode}_s"] - row[f"encoder_{mode}_s"] for row in rows]
        if len(xs) >= 2 and len(set(xs)) > 1:
            mx, my = statistics.mean(xs), statistics.mean(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            fits[mode] = {"ms_per_1000_pairs": slope * 1e6, "intercept_ms": (my - slope * mx) * 1000}
            log(
                f"head + loss ({mode}) ~ {fits[mode]['intercept_ms']:.0f} ms + "
                f"{fits[mode]['ms_per_1000_pairs']:.0f} ms per 1,000 pairs (least squares)"
            )
    pressure_after = cpu_pressure_total()
    contention = None
    if pressure_before is not None and pressure_after is not None:
        contention = (pressure_after - pressure_before) / 1e6 / (time.perf_counter() - started)
        label += f" | CPU pressure during the measurement {contention:.0%}"
    plot_scaling(rows, fits, plot_path, label)
    log(f"plot: {plot_path}")
    return {"documents": rows, "buckets": buckets, "head_cost_fit": fits, "plot": str(plot_path), "cpu_pressure": contention}


def plot_scaling(rows: list[dict], fits: dict, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("full_train_s", "full training step", "tab:red", "o", True),
        ("encoder_train_s", "encoder-only training step", "tab:red", "o", False),
        ("full_infer_s", "full inference", "tab:blue", "s", True),
        ("encoder_infer_s", "encoder-only inference", "tab:blue", "s", False),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for axis, x_key, x_label in ((axes[0], "tokens", "tokens per document"), (axes[1], "pairs", "entity pairs per document")):
        for key, name, color, marker, filled in series:
            axis.scatter(
                [row[x_key] for row in rows], [row[key] * 1000 for row in rows], label=name, color=color, marker=marker,
                facecolors=color if filled else "none", s=36, alpha=0.85,
            )
        axis.set_xlabel(x_label)
        axis.set_ylabel("time per document (ms)")
        axis.grid(alpha=0.3)
    for boundary in (256, 512, 768):
        axes[0].axvline(boundary, color="grey", lw=0.8, ls=":")
    axes[0].text(512, axes[0].get_ylim()[1] * 0.97, " > 512: sliding windows", fontsize=8, va="top", color="grey")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_title("step time vs document length")
    axes[1].set_title("step time vs pair count")
    for mode, color, marker in (("train", "tab:red", "o"), ("infer", "tab:blue", "s")):
        axes[2].scatter(
            [row["pairs"] for row in rows],
            [(row[f"full_{mode}_s"] - row[f"encoder_{mode}_s"]) * 1000 for row in rows],
            color=color, marker=marker, label=f"{'training' if mode == 'train' else 'inference'}: full - encoder", s=36,
        )
    for mode, color in (("train", "tab:red"), ("infer", "tab:blue")):
        fit = fits.get(mode)
        if fit:
            xs = [0, max(row["pairs"] for row in rows)]
            name = "training" if mode == "train" else "inference"
            axes[2].plot(
                xs, [fit["intercept_ms"] + fit["ms_per_1000_pairs"] * x / 1000 for x in xs], color=color, lw=1, ls="--",
                label=f"{name} fit: {fit['ms_per_1000_pairs']:.0f} ms per 1,000 pairs",
            )
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_xlabel("entity pairs per document")
    axes[2].set_ylabel("head + loss time per document (ms)")
    axes[2].set_title("pair head + losses (full minus encoder)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8, loc="upper left")
    figure.suptitle(f"PEMSCL on MiniLM-L6, fp32, batch of 1 document; median per point\n{label}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------------- main
def final_table(data: dict) -> str:
    fp32, bf16 = data, data.get("bf16", {})
    memory = data.get("memory", {})
    rows = []

    def row(name, key, fmt):
        rows.append([name, fmt(fp32.get(key)) if key in fp32 else "-", fmt(bf16.get(key)) if key in bf16 else "-"])

    per_batch = data.get("batches_per_batch", [])
    for kind, name in (("encoder_train", "eager encoder-only train step"), ("full_train", "full train step"),
                       ("eager_full_train", "full train step, eager encoder"),
                       ("encoder_infer", "eager encoder-only inference"), ("full_infer", "full inference"),
                       ("eager_full_infer", "full inference, eager encoder")):
        rows.append([f"{name} (s / batch)"] + [
            f"{statistics.mean(entry[p][kind]['median_s'] for entry in per_batch):.3f}"
            if per_batch and kind in per_batch[0][p] else "-" for p in PRECISIONS
        ])
    row(f"train ratio full/encoder ({TRAIN_TARGET})", "train_step_ratio_vs_encoder", lambda v: f"{v:.2f}")
    row("  (ratio of minima)", "train_step_ratio_vs_encoder_of_minima", lambda v: f"{v:.2f}")
    row(f"infer ratio full/encoder ({INFER_TARGET})", "infer_ratio_vs_encoder", lambda v: f"{v:.2f}")
    row("  (ratio of minima)", "infer_ratio_vs_encoder_of_minima", lambda v: f"{v:.2f}")
    row("train docs/s (full, fwd+bwd)", "train_docs_per_s", lambda v: f"{v:.2f}")
    row("infer docs/s (full)", "infer_docs_per_s", lambda v: f"{v:.2f}")
    if memory:
        for kind, name in (("full_train", "peak RSS full train step"), ("eager_full_train", "  same, eager encoder"),
                           ("encoder_train", "peak RSS eager encoder train step"),
                           ("full_infer", "peak RSS full inference"), ("encoder_infer", "peak RSS encoder inference")):
            if f"{kind}_mib" in memory.get("fp32", {}):
                rows.append([f"{name} (MiB)"] + [f"{memory[p][f'{kind}_mib']:.0f}" for p in PRECISIONS])
    unlabeled = data.get("unlabeled")
    if unlabeled:
        rows.append([f"unlabeled DocRED end-to-end docs/s ({unlabeled['docs']} docs)"]
                    + [f"{unlabeled[p]['docs_per_s']:.2f}" for p in PRECISIONS])
    epoch = data.get("epoch")
    if epoch:
        train, infer = epoch["train"], epoch["infer"]
        rows.append([f"epoch: training docs/s ({train['docs']} docs, length-grouped)"]
                    + [f"{train[p]['docs_per_s']:.2f}" for p in PRECISIONS])
        rows.append(["epoch: train step / eager encoder step (mean over batches)"]
                    + [f"{train[p]['mean_batch_ratio']:.2f}" for p in PRECISIONS])
        rows.append([f"epoch: inference docs/s ({infer['docs']} docs, batch {infer['batch_size']})"]
                    + [f"{infer[p]['docs_per_s']:.2f}" for p in PRECISIONS])
        rows.append(["epoch: inference / eager encoder"] + [f"{infer[p]['ratio_of_sums']:.2f}" for p in PRECISIONS])
        rows.append(["DocRETrainer.predict docs/s"] + [f"{epoch['trainer_predict'][p]['docs_per_s']:.2f}" for p in PRECISIONS])
    return table(["", "fp32", "bf16"], rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="shared data folder (default: ../shared/data beside the repository)")
    parser.add_argument("--batch_file", default="re-docred/dev_revised.json",
                        help="labelled documents of the timed batches, relative to --data_dir "
                             "(its first 4 documents: 2,494 pairs)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=3, help="number of batches timed")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repetitions per step (after 1 warm-up) in the batch, breakdown and bilinear sections")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--scaling_docs_per_bucket", type=int, default=4)
    parser.add_argument("--scaling_repeats", type=int, default=3, help="repetitions per document (no warm-up)")
    parser.add_argument("--unlabeled_docs", type=int, default=32,
                        help="DocRED test documents for end-to-end inference (0: skip)")
    parser.add_argument("--skip_scaling", action="store_true")
    parser.add_argument("--epoch_documents", type=int, default=500,
                        help="documents of each split in the epoch section (0: every document; -1: skip the section)")
    parser.add_argument("--epoch_train_file", default="re-docred/dev_revised.json")
    parser.add_argument("--epoch_test_file", default="re-docred/test_revised.json")
    parser.add_argument("--eval_batch_size", type=int, default=8, help="inference batch size of the epoch section")
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections (e.g. epoch; parts of the epoch section alone, the rest of "
                             "it kept: epoch_infer and trainer_predict (timed, need an idle machine), epoch_flops (counted))")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 batch, 1 repetition, 1 document per bucket, 4 unlabeled documents; "
                             "writes speed_quick.json / speed_scaling_quick.png")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.scaling_docs_per_bucket, args.scaling_repeats = 1, 1, 1, 1
        args.unlabeled_docs = min(args.unlabeled_docs, args.batch_size)
        args.epoch_documents = 2 * args.batch_size
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    output_dir = Path(args.output_dir)
    description = machine()
    label = machine_label(description)
    log(f"machine: {label}")
    if "avx512_bf16" not in description["cpu_flags"] and "amx_bf16" not in description["cpu_flags"]:
        log("WARNING: this CPU has no bf16 instructions: PyTorch emulates bf16, so every bf16 figure below runs many "
            "times slower than fp32 and says nothing about bf16 on hardware that has it.")

    def wanted(section: str) -> bool:
        return args.only is None or section in args.only

    log("loading MiniLM-L6 PEMSCL model and featurizing documents ...")
    vocab = load_vocab(args.data_dir)
    tokenizer = load_tokenizer()
    model = load_model(vocab)
    eager_model = eager_twin(model)
    collator = DataCollatorForDocRE(tokenizer)
    documents = read_documents(args.batch_file, args.data_dir, limit=args.batches * args.batch_size)
    features = featurize(documents, tokenizer, vocab)
    batches = [collator(features[start : start + args.batch_size]) for start in range(0, len(features), args.batch_size)]

    settings = {**vars(args), "machine": label,
                "precisions": {"fp32": "float32", "bf16": "torch.autocast('cpu', dtype=torch.bfloat16)"}}
    path = output_dir / f"speed{suffix}.json"
    # --only reruns some sections and keeps the others of the previous run.
    previous = json.loads(path.read_text()) if args.only and path.is_file() else {}
    results = Results(path, {
        **previous,
        "machine": previous.get("machine", label),
        "machine_details": previous.get("machine_details", description),
        "model": "PemsclModel on all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), new head; encoder_attention='sdpa' "
                 "(SDPA layers, explicit last-layer attention) unless a step says eager",
        # A partial rerun keeps the full run's settings and records its own per rerun section.
        "settings": previous.get("settings", settings),
        "section_settings": {**previous.get("section_settings", {}), **{name: settings for name in args.only or []}},
        "definitions": {
            "encoder_train": "the eager encoder (every layer eager attention, output_attentions=True) on the model's "
                             "encoder inputs + backward of mean(last hidden state) + mean(last attention); train mode. "
                             "The baseline of every ratio",
            "full_train": "model(**batch) with labels (PEMSCL loss: pmt + entropy + contrastive) + loss.backward(); no "
                          "optimizer step; train mode",
            "eager_full_train": "full_train with every encoder layer on eager attention (encoder_attention='eager')",
            "encoder_infer": "the eager encoder's forward under torch.no_grad(); eval mode",
            "full_infer": "model(**batch) without labels under torch.no_grad(); eval mode",
            "eager_full_infer": "full_infer with encoder_attention='eager'",
            "ratios": "sum over batches of median full time / sum of median encoder time (repetitions interleaved)",
            "docs_per_s": "documents / summed median full step time (fwd+bwd for training)",
            "epoch": "every batch of a split once (training: length-grouped batches as run_docre.py draws them; "
                     "inference: length-sorted batches, collation and decoding included), fp32 and bf16 interleaved "
                     "per batch; mean_batch_ratio averages full / encoder over the batches",
        },
        "batch_file": args.batch_file,
        "batch_size": args.batch_size,
    })

    aggregate = None
    if wanted("batches"):
        aggregate = section_batches(model, eager_model, batches, args.repeats, results)
    if wanted("bf16_check"):
        results.section("bf16_check", section_bf16_check(model, batches[0]))
    if wanted("memory"):
        results.section("memory", section_memory(model, eager_model, batches))
    if wanted("breakdown"):
        results.section("breakdown", section_breakdown(model, eager_model, batches[0], args.repeats))
    if wanted("bilinear"):
        results.section("bilinear", section_bilinear(model, batches[0], args.repeats))
    if wanted("settings"):
        results.section("settings", section_settings(vocab, eager_model, batches, args.repeats))
    if args.unlabeled_docs > 0 and wanted("unlabeled"):
        unlabeled = section_unlabeled(model, tokenizer, vocab, args.data_dir, args.unlabeled_docs, args.batch_size)
        results.section("unlabeled", unlabeled)
    if not args.skip_scaling and wanted("scaling"):
        plot_path = output_dir / f"speed_scaling{suffix}.png"
        results.section("scaling", section_scaling(
            model, eager_model, tokenizer, vocab, args.data_dir, args.scaling_docs_per_bucket, args.scaling_repeats, plot_path, label
        ))
    if args.epoch_documents >= 0 and wanted("epoch"):
        results.section("epoch", section_epoch(model, eager_model, tokenizer, vocab, args))
    elif args.epoch_documents >= 0 and any(map(wanted, ("epoch_infer", "trainer_predict", "epoch_flops"))):  # parts alone
        epoch = dict(results.data.get("epoch", {}))
        if wanted("epoch_infer"):
            epoch["infer"] = epoch_inference(model, eager_model, tokenizer, vocab, args)
        if wanted("epoch_flops"):
            epoch = recount_epoch_flops(model, eager_model, tokenizer, vocab, args, epoch)
        if wanted("trainer_predict"):
            epoch["trainer_predict"] = trainer_predict(model, tokenizer, args)
        results.section("epoch", epoch)
    results.data["complete"] = True
    results.data["wall_s"] = time.perf_counter() - started
    results.write()

    log(f"\n== summary: {len(batches)} batches of {args.batch_size} documents from {args.batch_file} "
        f"(median of {args.repeats} interleaved repetitions) ==")
    log(f"machine: {label}")
    log(final_table(results.data))
    check = results.data.get("bf16_check")
    if check and aggregate:
        log(f"bf16 vs fp32 logits: relative L2 error {check['logits_rel_l2_error']:.4f}, decoded pairs agree "
            f"{check['prediction_agreement']:.2%}; losses finite: fp32 {aggregate['fp32']['loss_finite']}, "
            f"bf16 {aggregate['bf16']['loss_finite']}")
    log(f"results: {results.path} ({results.data['wall_s']:.0f} s)")
    return results.data


if __name__ == "__main__":
    main()
