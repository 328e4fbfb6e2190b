#!/usr/bin/env python
"""The released PEMSCL code's own training recipe on our data, and which of its differences from the paper as printed
(the factors of `bench/experiments.py`) carry its F1, in three resumable stages, one record per (configuration, seed)
under `bench/results/recipe/STAGE/`: `diagnostic` (one factor at a time, judged on 50 held-out documents),
`same_recipe` (the full recipe, tested on the test split) and `demo` (`run_docre.py --demo` itself). Two workers
may share a queue; docs/bench.md has the details.

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

from bench.experiments import (  # noqa: E402
    CONFIGURATIONS, DEMO_SEEDS, DIAGNOSTIC, RECIPE_FLAGS, RECIPE_SEEDS, stage_flags,
)
from bench.harness import encoder_path  # noqa: E402
from bench.jobs import (  # noqa: E402
    EMULATED_BF16, WORK, add_queue_arguments, bf16_would_be_emulated, per_relation_counts, run_docre_flags, run_queue,
    train_resumably,
)

RESULTS = REPO / "bench" / "results" / "recipe"


def job_flags(stage: str, config: str, seed: int, args) -> list[str]:
    if stage == "demo":  # the user's command, with its own defaults (run_docre.demo_arguments)
        return ["--demo", "--data_dir", str(args.data_dir), "--seed", str(seed)] + CONFIGURATIONS[config]
    return (run_docre_flags(args, seed, "--do_train", "--do_predict") + RECIPE_FLAGS + stage_flags(stage)
            + CONFIGURATIONS[config])


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
    add_queue_arguments(parser)
    args = parser.parse_args(argv)
    if args.model_name_or_path is None and args.stage != "demo":
        args.model_name_or_path = encoder_path()
    configs = args.configs or (DIAGNOSTIC if args.stage == "diagnostic" else ["default"])
    seeds = args.seeds or (DEMO_SEEDS if args.stage == "demo" else RECIPE_SEEDS)
    emulated = [config for config in configs if "--bf16" in CONFIGURATIONS[config]]
    if emulated and bf16_would_be_emulated():
        print(f"Skipping {', '.join(emulated)}: {EMULATED_BF16} Run them on a host with bf16.", flush=True)
        configs = [config for config in configs if config not in emulated]
    jobs = [(config, seed) for seed in seeds for config in configs]  # seed-major: every configuration a first seed
    run_queue(jobs, RESULTS / args.stage, WORK / "recipe" / args.stage,
              lambda config, seed: run_job(args.stage, config, seed, args), args, label=f"{args.stage} ")


if __name__ == "__main__":
    main()
