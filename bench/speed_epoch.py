"""Speed section `epoch`, what users feel: one training epoch and the prediction of a split (each batch next to the
eager encoder alone, fp32 and bf16 interleaved), and `DocRETrainer.predict` as a user calls it."""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from bench.harness import (
    PRECISIONS, PeakRSS, Step, autocast, data_folder, encoder_alone, encoder_inputs, featurize, interleaved, log,
    read_documents,
)
from bench.speed_batches import step_kinds
from bench.speed_parts import forward_gflop
from data_collators import DataCollatorForDocRE

EPOCH_PARTS = ("epoch_train", "epoch_infer", "trainer_predict")


def epoch_batches(lengths: list[int], batch_size: int, seed: int, grouped: bool) -> list[list[int]]:
    """The document indices of each batch of one training epoch: as `run_docre.py` draws them by default
    (`LengthGroupedSampler`, the Trainer's `group_by_length`) or uniformly shuffled."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    order = (list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)) if grouped
             else torch.randperm(len(lengths), generator=generator).tolist())
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the padded [B, L] token grid that is padding."""
    grid = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths[i] for batch in batches for i in batch) / grid


def timed_split(batches, make_steps, mode: str, documents: int, description: str) -> dict:
    """Every batch's steps once, interleaved (the first batch warmed up first); per precision, documents/s of the full
    model and of the eager encoder alone, and full / encoder over the split and per batch."""
    times = defaultdict(list)
    for index, members in enumerate(tqdm(batches, desc=description, mininterval=10)):
        for name, measured in interleaved(make_steps(members), repeats=1, warmup=int(index == 0))[0].items():
            times[name].append(measured[0])
    out = {}
    for p in PRECISIONS:
        full, encoder = times[f"{p}/full_{mode}"], times[f"{p}/encoder_{mode}"]
        ratios = [f / e for f, e in zip(full, encoder)]
        out[p] = {"docs_per_s": documents / sum(full), "encoder_docs_per_s": documents / sum(encoder),
                  "seconds": sum(full), "encoder_seconds": sum(encoder), "ratio_of_sums": sum(full) / sum(encoder),
                  "mean_batch_ratio": statistics.mean(ratios), "max_batch_ratio": max(ratios)}
        log(f"  {mode} {p}: {out[p]['docs_per_s']:.2f} docs/s (eager encoder alone {out[p]['encoder_docs_per_s']:.2f}"
            f"); full / encoder x{out[p]['ratio_of_sums']:.2f}, per batch x{out[p]['mean_batch_ratio']:.2f} on "
            f"average, worst x{out[p]['max_batch_ratio']:.2f}")
    return out


def epoch_training(model, eager_model, collator, train: list[dict], args) -> dict:
    """Every batch of one training epoch, length-grouped as `run_docre.py` draws them."""
    lengths = [len(feature["input_ids"]) for feature in train]
    order = epoch_batches(lengths, args.batch_size, seed=0, grouped=True)

    def steps(members):
        batch = collator([train[i] for i in members])
        return {f"{p}/{kind}": step for p in PRECISIONS
                for kind, step in step_kinds(model, eager_model, batch, p).items() if kind.endswith("_train")}

    timed = timed_split(order, steps, "train", len(train), "timing a training epoch")
    model.zero_grad(set_to_none=True), eager_model.zero_grad(set_to_none=True)
    return {"file": args.epoch_train_file, "docs": len(train), "batches": len(order), "batch_size": args.batch_size,
            "tokens": sum(lengths), "pairs": sum(len(feature["hts"]) for feature in train),
            "padding_share_length_grouped": padding_share(lengths, order),
            "padding_share_shuffled": padding_share(lengths, epoch_batches(lengths, args.batch_size, 0, grouped=False)),
            **timed}


def epoch_inference(model, eager_model, collator, test: list[dict], args) -> dict:
    """Every document in length-sorted batches as `DocRETrainer` predicts (collation and decoding included), next to
    the eager encoder alone on the same batches; then the forward FLOPs of both, untimed."""
    order = sorted(range(len(test)), key=lambda i: (-len(test[i]["input_ids"]), i))
    chunks = [order[start : start + args.eval_batch_size] for start in range(0, len(test), args.eval_batch_size)]
    model.eval(), eager_model.eval()

    def full(precision, batch):
        batch.pop("labels", None)  # prediction computes no loss (whose all-pair contrastive term is [P, P])
        with torch.no_grad(), autocast(precision):
            return int(model(**batch, return_predictions=True).predictions[:, 1:].sum())

    def encoder_only(precision, batch):
        windows = encoder_inputs(model, batch)
        with torch.no_grad(), autocast(precision):
            encoder_alone(eager_model.encoder, *windows)

    def steps(members):
        return {f"{p}/{kind}": Step(lambda p=p, run=run: run(p, collator([test[i] for i in members])))
                for p in PRECISIONS for kind, run in (("encoder_infer", encoder_only), ("full_infer", full))}

    timed = timed_split(chunks, steps, "infer", len(test), "timing the prediction of a split")
    counts = [forward_gflop(model, eager_model, collator([test[i] for i in members]))
              for members in tqdm(chunks, desc="counting inference FLOPs", mininterval=10)]
    gflop = {kind: sum(count[kind] for count in counts) for kind in ("encoder", "full")}
    for p in PRECISIONS:
        timed[p]["full_gflop_per_s"] = gflop["full"] / timed[p]["seconds"]
    return {"file": args.epoch_test_file, "docs": len(test), "batch_size": args.eval_batch_size,
            "tokens": sum(len(f["input_ids"]) for f in test), "pairs": sum(len(f["hts"]) for f in test),
            "forward_gflop": gflop, **timed}


def trainer_predict(model, tokenizer, args) -> dict:
    """`DocRETrainer.predict` on the whole test split, fp32 and bf16 (`--bf16` autocast), with its peak memory."""
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    from data_collators import featurize_dataset, load_docred
    from docre_training.trainer import DocRETrainer

    test_file = data_folder(args.data_dir) / args.epoch_test_file
    raw = load_docred("re-docred", data_files={"test": str(test_file)})["test"]
    if args.epoch_documents:
        raw = raw.select(range(min(args.epoch_documents, raw.num_rows)))
    features = featurize_dataset(raw, tokenizer, model.config.label2id)
    out = {}
    for precision in PRECISIONS:
        # accelerate keeps its mixed precision in a process-wide state and wraps the model's forward in place: without
        # a fresh state and a fresh model copy, the second trainer would silently run fp32.
        AcceleratorState._reset_state(reset_partial_state=True)
        with tempfile.TemporaryDirectory(prefix="pemscl-speed-") as folder:
            trainer = DocRETrainer(
                model=copy.deepcopy(model), data_collator=DataCollatorForDocRE(tokenizer), processing_class=tokenizer,
                args=TrainingArguments(output_dir=folder, per_device_eval_batch_size=args.eval_batch_size,
                                       report_to="none", use_cpu=True, bf16=precision == "bf16", disable_tqdm=True))
            with PeakRSS() as peak:
                metrics = trainer.predict(features).metrics
        out[precision] = {"docs_per_s": features.num_rows / metrics["test_runtime"],
                          "runtime_s": metrics["test_runtime"],
                          "test_f1": metrics.get("test_f1"), "num_predictions": metrics.get("test_num_predictions"),
                          "accelerate_mixed_precision": trainer.accelerator.mixed_precision, "peak_rss_mib": peak.mib}
        log(f"  DocRETrainer.predict {precision}: {out[precision]['docs_per_s']:.2f} docs/s, "
            f"peak RSS {peak.mib:.0f} MiB")
    return out


def section_epoch(model, eager_model, tokenizer, vocab, args, epoch: dict | None = None, parts=EPOCH_PARTS) -> dict:
    """The parts of the section named in `parts`, the others kept from `epoch`."""
    log(f"\n== epoch: every batch of {args.epoch_train_file} (training) and of {args.epoch_test_file} (inference) ==")
    collator, epoch = DataCollatorForDocRE(tokenizer), dict(epoch or {})

    def split(name):
        return featurize(read_documents(args.data_dir, name, limit=args.epoch_documents or None), tokenizer, vocab)

    if "epoch_train" in parts:
        epoch["train"] = epoch_training(model, eager_model, collator, split(args.epoch_train_file), args)
    if "epoch_infer" in parts:
        epoch["infer"] = epoch_inference(model, eager_model, collator, split(args.epoch_test_file), args)
    if "trainer_predict" in parts:
        epoch["trainer_predict"] = trainer_predict(model, tokenizer, args)
    return epoch
