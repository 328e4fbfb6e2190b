#!/usr/bin/env python
"""Reproduce the paper's claims (Tables 2-4, Figure 2) at CPU scale, one resumable (row, seed) at a time, with the
rows, seeds and budget of `bench/experiments.py`; records under `bench/results/rows/` (docs/bench.md).

    python bench/reproduce.py --rows pemscl atlop --seeds 0 1 2 --max_minutes 120
    python bench/reproduce.py            # every row at every seed (the sweep's extra ratios at the first only)
    python bench/reproduce.py --rows atlop --model_setting relation_bias_init=0 --variant prior_off
    python bench/report.py               # tables, plots and bench/REPORT.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.experiments import ALIASES, MAIN_BUDGET, ROWS, SEEDS, SWEEP_ONLY, budget_flags, model_settings  # noqa: E402
from bench.harness import encoder_path  # noqa: E402
from bench.jobs import (  # noqa: E402
    EMULATED_BF16, WORK, add_queue_arguments, bf16_would_be_emulated, per_relation_counts, run_docre_flags, run_queue,
    train_resumably,
)

RESULTS = REPO / "bench" / "results" / "rows"
VARIANTS = REPO / "bench" / "results" / "variants"


def queue(args) -> list[tuple[str, int]]:
    """(row, seed), seed-major; without `--rows` the sweep-only ratios run at the first seed only. An alias runs as
    the row it names."""
    explicit = args.rows is not None
    rows = args.rows if explicit else [r for r in ROWS if r not in ALIASES]
    return [(ALIASES.get(name, name), seed) for seed in args.seeds for name in rows
            if explicit or name not in SWEEP_ONLY or seed == args.seeds[0]]


def row_budget(args) -> list[str]:
    return budget_flags(args.epochs, args.learning_rate, args.head_learning_rate, args.bf16, args.model_setting)


def row_work_dir(args, name: str, seed: int) -> Path:
    return (WORK / args.variant if args.variant else WORK) / f"{name}__seed{seed}"


def threshold_margins(model_dir: Path, gold_path: Path, limit: int = 200) -> dict[str, list[float]]:
    """f_r - f_NA of the gold relations of test pairs, and of a sample of negative ones (Figure 3's quantity)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    import modeling_pemscl  # noqa: F401  (registers the model)
    from data_collators import DataCollatorForDocRE, featurize_document
    from docre_training.metrics import load_json

    model = AutoModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    collator = DataCollatorForDocRE(tokenizer=tokenizer, num_labels=model.config.num_labels)
    positive, negative = [], []
    generator = torch.Generator().manual_seed(0)
    for document in load_json(gold_path)[:limit]:
        batch = collator([featurize_document(document, tokenizer, model.config.label2id)])
        if batch["hts"].shape[0] == 0:
            continue
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.float()
        margins, gold = logits[:, 1:] - logits[:, :1], labels[:, 1:].bool()
        positive += margins[gold].tolist()
        negatives = margins[~gold]
        sample = torch.randperm(negatives.numel(), generator=generator)[: 4 * int(gold.sum()) + 1]
        negative += negatives[sample].tolist()
    return {"positive": [round(x, 3) for x in positive], "negative": [round(x, 3) for x in negative]}


def run_row(name: str, seed: int, args) -> dict:
    output_dir, test_file = row_work_dir(args, name, seed), args.data_dir / "test_revised.json"
    flags = (run_docre_flags(args, seed, "--do_train", "--do_eval", "--do_predict") + ["--label_drop_seed", str(seed)]
             + row_budget(args) + ROWS[name])
    record = {
        "row": name, "seed": seed, "variant": args.variant, "flags": ROWS[name], "budget": row_budget(args),
        **train_resumably(output_dir, flags, f"{name} seed {seed}"),
        "per_relation_test": per_relation_counts(output_dir / "predictions_test.json", test_file),
    }
    if seed == args.seeds[0] and name in ("pemscl", "atlop"):
        record["test_margins"] = threshold_margins(output_dir, test_file)
    return record


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None, choices=list(ROWS),
                        help="default: every row, the sweep's extra ratios at the first seed only")
    parser.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    parser.add_argument("--epochs", type=float, default=MAIN_BUDGET["epochs"],
                        help="the paper's budget (4-epoch rows: variant epochs4_no_prior)")
    parser.add_argument("--learning_rate", type=float, default=MAIN_BUDGET["learning_rate"])
    parser.add_argument("--head_learning_rate", type=float, default=MAIN_BUDGET["head_learning_rate"])
    parser.add_argument("--fp32", dest="bf16", action="store_false",
                        help="fp32 instead of the default bf16 autocast (same for every row)")
    add_queue_arguments(parser)
    parser.add_argument("--variant", default=None,
                        help="name of a diagnostic run outside the main tables, e.g. `epochs4` with `--epochs 4`: "
                             "results go to bench/results/variants/NAME/rows/ and are reported separately")
    parser.add_argument("--model_setting", action="append", default=[], metavar="NAME=VALUE",
                        help="change one of the pinned model settings for a variant (needs --variant), e.g. "
                             "`--model_setting relation_bias_init=0 --variant prior_off`")
    args = parser.parse_args(argv)
    if args.model_setting and not args.variant:
        parser.error("--model_setting changes the main table's settings, so it needs --variant NAME "
                     "(its rows must not pool with the main table)")
    try:
        model_settings(args.model_setting)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_arguments(argv)
    args.model_name_or_path = args.model_name_or_path or encoder_path()
    if args.bf16 and bf16_would_be_emulated():
        sys.exit(f"reproduce.py: the main table's budget is bf16, but {EMULATED_BF16} Run it on a host with bf16, "
                 "or pass --fp32 --variant fp32 (a separate budget: its rows do not pool with the bf16 table).")
    results = VARIANTS / args.variant / "rows" if args.variant else RESULTS
    run_queue(queue(args), results, row_work_dir(args, "", 0).parent, lambda name, seed: run_row(name, seed, args),
              args)


if __name__ == "__main__":
    main()
