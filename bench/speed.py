#!/usr/bin/env python
"""Speed of PEMSCL on MiniLM-L6 (CPU): what the pair head and the losses cost on top of the encoder alone, each
comparison measured side by side (docs/bench.md lists the sections and their method).

    python bench/speed.py                 # full run (about 45 minutes on 2 otherwise idle cores)
    python bench/speed.py --only epoch    # one section again (or parts of it: epoch_train epoch_infer trainer_predict)
    python bench/speed.py --quick         # smoke run: 1 batch, 1 repetition, 8 documents per split
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# On shared machines torch's threads spin at every barrier while another process holds a core (OpenMP's default,
# active waiting), which makes a step 3-5x slower; effective only before torch loads. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench import speed_batches, speed_epoch, speed_parts  # noqa: E402
from bench.harness import (  # noqa: E402
    Results, featurize, load_model, load_tokenizer, load_vocab, log, machine, machine_label, read_documents, write_json,
)
from bench.report import epoch_table, speed_table  # noqa: E402
from data_collators import DataCollatorForDocRE  # noqa: E402

DEFINITIONS = {
    "encoder_train": "the eager encoder (every layer eager attention, output_attentions=True) on the model's encoder "
                     "inputs + backward of mean(last hidden state) + mean(last attention); the baseline of every ratio",
    "full_train": "model(**batch) with labels (PEMSCL loss) + loss.backward(); no optimizer step; train mode",
    "eager_full_train": "full_train with every encoder layer on eager attention (encoder_attention='eager')",
    "encoder_infer / full_infer / eager_full_infer": "the same forwards under torch.no_grad(), eval mode, no labels",
    "ratios": "sum over batches of median full time / sum of median encoder time (repetitions interleaved)",
    "epoch": "every batch of a split once (training: length-grouped batches as run_docre.py draws them; inference: "
             "length-sorted batches, collation and decoding included), fp32 and bf16 interleaved per batch",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--batch_file", default="re-docred/dev_revised.json",
                        help="labelled documents of the timed batches, relative to --data_dir")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=3, help="number of batches timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per step (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--epoch_documents", type=int, default=500,
                        help="documents of each split in the epoch section (0: every document; -1: skip the section)")
    parser.add_argument("--epoch_train_file", default="re-docred/dev_revised.json")
    parser.add_argument("--epoch_test_file", default="re-docred/test_revised.json")
    parser.add_argument("--eval_batch_size", type=int, default=8, help="inference batch size of the epoch section")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these sections (e.g. epoch), keeping the others from the previous run; parts "
                             f"of the epoch section: {', '.join(speed_epoch.EPOCH_PARTS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run, written to speed_quick.json")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.epoch_documents = 1, 1, 2 * args.batch_size
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, description = time.perf_counter(), machine()
    label = machine_label(description)
    log(f"machine: {label}")
    if not {"avx512_bf16", "amx_bf16"} & set(description["cpu_flags"]):
        log("WARNING: this CPU has no bf16 instructions: PyTorch emulates bf16, so every bf16 figure below runs many "
            "times slower than fp32 and says nothing about bf16 on hardware that has it.")
    vocab, tokenizer = load_vocab(args.data_dir), load_tokenizer()
    model = load_model(vocab)
    eager_model = speed_batches.eager_twin(model)
    features = featurize(read_documents(args.data_dir, args.batch_file, limit=args.batches * args.batch_size),
                         tokenizer, vocab)
    collator = DataCollatorForDocRE(tokenizer)
    batches = [collator(features[start : start + args.batch_size])
               for start in range(0, len(features), args.batch_size)]
    path = Path(args.output_dir) / f"speed{'_quick' if args.quick else ''}.json"
    previous = json.loads(path.read_text()) if args.only and path.is_file() else {}  # --only keeps the other sections
    results = Results(path, {
        **previous, "machine": previous.get("machine", label),
        "machine_details": previous.get("machine_details", description),
        "model": "PemsclModel on all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), new head; encoder_attention='sdpa' "
                 "(SDPA layers, explicit last-layer attention) unless a step says eager",
        # A partial rerun keeps the full run's arguments and records its own per rerun section.
        "arguments": previous.get("arguments", vars(args)),
        "section_arguments": {**previous.get("section_arguments", {}),
                              **{name: vars(args) for name in args.only or []}},
        "definitions": DEFINITIONS, "batch_file": args.batch_file, "batch_size": args.batch_size,
    })
    sections = {  # section -> what measures it, in the order they run
        "memory": lambda: speed_batches.section_memory(model, eager_model, batches),
        "breakdown": lambda: speed_parts.section_breakdown(model, eager_model, batches[0], args.repeats),
        "settings": lambda: speed_batches.section_settings(vocab, eager_model, batches, args.repeats),
        "epoch": lambda: None if args.epoch_documents < 0 else speed_epoch.section_epoch(
            model, eager_model, tokenizer, vocab, args),
    }
    if args.only is None or "batches" in args.only:
        speed_batches.section_batches(model, eager_model, batches, args.repeats, results)
    for name, measure in sections.items():
        if (args.only is None or name in args.only) and (payload := measure()) is not None:
            results.section(name, payload)
    if args.only and args.epoch_documents >= 0 and (parts := [p for p in speed_epoch.EPOCH_PARTS if p in args.only]):
        results.section("epoch", speed_epoch.section_epoch(model, eager_model, tokenizer, vocab, args,
                                                           results.data.get("epoch"), parts))
    results.data.update(complete=True, wall_s=time.perf_counter() - started)
    write_json(results.path, results.data, indent=2)
    log(f"\n== summary: {len(batches)} batches of {args.batch_size} documents from {args.batch_file} ==")
    log("\n".join(speed_table(results.data) + ([""] + epoch_table(results.data["epoch"])
                                               if "epoch" in results.data else [])))
    log(f"results: {results.path} ({results.data['wall_s']:.0f} s)")
    return results.data


if __name__ == "__main__":
    main()
