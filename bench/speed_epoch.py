"""Speed sections on whole splits, what users feel: one training epoch and the prediction of a split (each batch next
to the eager encoder alone, fp32 and bf16 interleaved), `DocRETrainer.predict` as a user calls it, and end-to-end
inference on DocRED's unlabeled test documents."""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from bench.harness import (
    PRECISIONS, PeakRSS, Step, autocast, data_dir, encoder_alone, encoder_inputs, featurize, interleaved, log,
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


def timed_once(batches, make_steps, description: str) -> dict[str, list[float]]:
    """Every batch's steps once, interleaved (the first batch warmed up first): step -> seconds per batch."""
    times: dict[str, list[float]] = defaultdict(list)
    for index, members in enumerate(tqdm(batches, desc=description, mininterval=10)):
        seconds, _ = interleaved(make_steps(members), repeats=1, warmup=1 if index == 0 else 0)
        for name, measured in seconds.items():
            times[name].append(measured[0])
    return times


def split_features(args, name: str, tokenizer, vocab) -> list[dict]:
    return featurize(read_documents(args.data_dir, name, limit=args.epoch_documents or None), tokenizer, vocab)


def epoch_training(model, eager_model, tokenizer, vocab, args) -> dict:
    """Every batch of one training epoch over `--epoch_train_file`, length-grouped as `run_docre.py` draws them."""
    collator = DataCollatorForDocRE(tokenizer)
    train = split_features(args, args.epoch_train_file, tokenizer, vocab)
    lengths = [len(feature["input_ids"]) for feature in train]
    order = epoch_batches(lengths, args.batch_size, seed=0, grouped=True)

    def steps(members):
        batch = collator([train[i] for i in members])
        return {f"{p}/{kind}": step for p in PRECISIONS
                for kind, step in step_kinds(model, eager_model, batch, p).items() if kind.endswith("_train")}

    times = timed_once(order, steps, "timing a training epoch")
    model.zero_grad(set_to_none=True), eager_model.zero_grad(set_to_none=True)
    out = {"file": args.epoch_train_file, "docs": len(train), "batches": len(order), "batch_size": args.batch_size,
           "tokens": sum(lengths), "pairs": sum(len(feature["hts"]) for feature in train),
           "padding_share_length_grouped": padding_share(lengths, order),
           "padding_share_shuffled": padding_share(lengths, epoch_batches(lengths, args.batch_size, 0, grouped=False))}
    for p in PRECISIONS:
        full, encoder = sum(times[f"{p}/full_train"]), sum(times[f"{p}/encoder_train"])
        ratios = [f / e for f, e in zip(times[f"{p}/full_train"], times[f"{p}/encoder_train"])]
        out[p] = {"docs_per_s": len(train) / full, "encoder_docs_per_s": len(train) / encoder, "seconds": full,
                  "encoder_seconds": encoder, "ratio_of_sums": full / encoder,
                  "mean_batch_ratio": statistics.mean(ratios), "max_batch_ratio": max(ratios)}
        log(f"  training {p}: {out[p]['docs_per_s']:.2f} docs/s (eager encoder alone {out[p]['encoder_docs_per_s']:.2f});"
            f" full / encoder step x{out[p]['mean_batch_ratio']:.2f} on average, worst batch x{out[p]['max_batch_ratio']:.2f}")
    return out


def epoch_inference(model, eager_model, tokenizer, vocab, args) -> dict:
    """Every document of `--epoch_test_file` in length-sorted batches as `DocRETrainer` batches evaluation (collation
    and decoding included, as the pipeline and the Trainer's prediction step do), next to the eager encoder alone on
    the same batches; then the forward FLOPs of both, untimed."""
    collator = DataCollatorForDocRE(tokenizer)
    test = split_features(args, args.epoch_test_file, tokenizer, vocab)
    order = sorted(range(len(test)), key=lambda i: (-len(test[i]["input_ids"]), i))
    chunks = [order[start : start + args.eval_batch_size] for start in range(0, len(test), args.eval_batch_size)]
    model.eval(), eager_model.eval()

    def full(precision, members):
        def run():
            batch = collator([test[i] for i in members])
            batch.pop("labels", None)  # prediction computes no loss (whose all-pair contrastive term is [P, P])
            with torch.no_grad(), autocast(precision):
                return int(model(**batch, return_predictions=True).predictions[:, 1:].sum())
        return run

    def encoder_only(precision, members):
        def run():
            windows = encoder_inputs(model, collator([test[i] for i in members]))
            with torch.no_grad(), autocast(precision):
                encoder_alone(eager_model.encoder, *windows)
        return run

    times = timed_once(chunks, lambda members: {f"{p}/{kind}": Step(make(p, members)) for p in PRECISIONS
                                                 for kind, make in (("encoder_infer", encoder_only), ("full_infer", full))},
                       "timing the prediction of a split")
    counts = [forward_gflop(model, eager_model, collator([test[i] for i in members]), with_bilinear=False)
              for members in tqdm(chunks, desc="counting inference FLOPs", mininterval=10)]
    gflop = {kind: sum(count[kind] for count in counts) for kind in ("encoder", "full")}
    out = {"file": args.epoch_test_file, "docs": len(test), "batch_size": args.eval_batch_size,
           "tokens": sum(len(f["input_ids"]) for f in test), "pairs": sum(len(f["hts"]) for f in test),
           "forward_gflop": gflop}
    for p in PRECISIONS:
        full_s, encoder_s = sum(times[f"{p}/full_infer"]), sum(times[f"{p}/encoder_infer"])
        out[p] = {"docs_per_s": len(test) / full_s, "encoder_docs_per_s": len(test) / encoder_s, "seconds": full_s,
                  "ratio_of_sums": full_s / encoder_s, "full_gflop_per_s": gflop["full"] / full_s}
        log(f"  inference {p}: {out[p]['docs_per_s']:.2f} docs/s (eager encoder alone {out[p]['encoder_docs_per_s']:.2f},"
            f" x{out[p]['ratio_of_sums']:.2f}); {out[p]['full_gflop_per_s']:.1f} GFLOP/s")
    return out


def trainer_predict(model, tokenizer, args) -> dict:
    """`DocRETrainer.predict` on the whole test split, fp32 and bf16 (`--bf16` autocast), with its peak memory."""
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    from data_collators import featurize_dataset, load_docred
    from docre_training.trainer import DocRETrainer

    raw = load_docred("re-docred", data_files={"test": str(data_dir(args.data_dir) / args.epoch_test_file)})["test"]
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
        out[precision] = {"docs_per_s": features.num_rows / metrics["test_runtime"], "runtime_s": metrics["test_runtime"],
                          "test_f1": metrics.get("test_f1"), "num_predictions": metrics.get("test_num_predictions"),
                          "accelerate_mixed_precision": trainer.accelerator.mixed_precision, "peak_rss_mib": peak.mib}
        log(f"  DocRETrainer.predict {precision}: {out[precision]['docs_per_s']:.2f} docs/s, peak RSS {peak.mib:.0f} MiB")
    return out


def section_epoch(model, eager_model, tokenizer, vocab, args, epoch: dict | None = None, parts=EPOCH_PARTS) -> dict:
    """The parts of the section named in `parts`, the others kept from `epoch`."""
    log(f"\n== epoch: every batch of {args.epoch_train_file} (training) and of {args.epoch_test_file} (inference) ==")
    epoch = dict(epoch or {})
    if "epoch_train" in parts:
        epoch["train"] = epoch_training(model, eager_model, tokenizer, vocab, args)
    if "epoch_infer" in parts:
        epoch["infer"] = epoch_inference(model, eager_model, tokenizer, vocab, args)
    if "trainer_predict" in parts:
        epoch["trainer_predict"] = trainer_predict(model, tokenizer, args)
    return epoch


def section_unlabeled(model, tokenizer, vocab, args) -> dict:
    """End-to-end inference on DocRED's unlabeled test documents: featurization excluded, collation included."""
    log(f"\n== unlabeled DocRED test: {args.unlabeled_docs} documents in batches of {args.batch_size} ==")
    features = featurize(read_documents(args.data_dir, "docred/test_unlabeled.json", limit=args.unlabeled_docs),
                         tokenizer, vocab)
    collator = DataCollatorForDocRE(tokenizer)
    model.eval()

    def infer(precision, chunk):
        def run():
            with torch.no_grad(), autocast(precision):
                return int(model(**collator(chunk), return_predictions=True).predictions[:, 1:].sum())
        return run

    seconds, predicted = dict.fromkeys(PRECISIONS, 0.0), dict.fromkeys(PRECISIONS, 0)
    for start in range(0, len(features), args.batch_size):
        chunk = features[start : start + args.batch_size]
        times, values = interleaved({p: Step(infer(p, chunk)) for p in PRECISIONS}, 1, warmup=1 if start == 0 else 0)
        for p in PRECISIONS:
            seconds[p], predicted[p] = seconds[p] + times[p][0], predicted[p] + values[p][0]
    out = {"docs": len(features), "pairs": sum(len(f["hts"]) for f in features),
           "tokens": sum(len(f["input_ids"]) for f in features),
           **{p: {"seconds": seconds[p], "docs_per_s": len(features) / seconds[p], "predicted_relations": predicted[p]}
              for p in PRECISIONS}}
    log(", ".join(f"{p} {out[p]['docs_per_s']:.2f} docs/s" for p in PRECISIONS))
    return out
