"""bench/report.py: the paired seed differences and the per-run table that the report's claims rest on."""

import statistics

from bench.experiments import EVIDENCE_THRESHOLDS
from bench.report import (
    diagnostic_table,
    evidence_summaries,
    load_variants,
    measured_recipe_verdicts,
    paired_difference,
    paper_claims_table,
    per_seed_table,
    recipe_sections,
    same_recipe_summary,
    speed_defaults_f1_verdict,
    variant_sections,
    verdicts,
)


def record(row, seed, f1, tail=0.0, minutes=10.0, threads=None, dev_f1=None):
    result = {"row": row, "seed": seed, "minutes": minutes,
              "metrics": {"test_f1": f1, "test_tail_f1": tail, "eval_f1": f1 + 5 if dev_f1 is None else dev_f1}}
    if threads is not None:
        result["torch_threads"] = threads
    return result


def test_paired_difference_uses_only_seeds_both_rows_have():
    rows = {
        "pemscl": [record("pemscl", 0, 44.0), record("pemscl", 1, 46.0), record("pemscl", 2, 41.0)],
        "atlop": [record("atlop", 0, 45.0), record("atlop", 1, 43.0)],  # seed 2 missing
    }
    mean, spread, differences = paired_difference(rows, "pemscl", "atlop")
    assert differences == [-1.0, 3.0]
    assert mean == 1.0
    assert spread == statistics.stdev([-1.0, 3.0])


def test_paired_difference_of_another_metric_and_missing_rows():
    rows = {"pemscl": [record("pemscl", 0, 44.0, tail=2.5)], "atlop": [record("atlop", 0, 45.0, tail=4.0)]}
    assert paired_difference(rows, "pemscl", "atlop", "test_tail_f1") == (-1.5, 0.0, [-1.5])
    assert paired_difference(rows, "pemscl", "bce") is None


def test_per_seed_table_marks_missing_runs_and_threads():
    rows = {"atlop": [record("atlop", 0, 44.82, minutes=13.2), record("atlop", 2, 45.5, minutes=20.4, threads=1)]}
    table = per_seed_table(rows)
    assert "| row | seed 0 | seed 2 |" in table
    assert "| atlop | 44.82 (13 min, 2) | 45.50 (20 min, 1) |" in table
    assert "| pemscl | - | - |" in table
    assert not any(line.startswith("| drop50_pemscl_nls1.0 ") for line in table)  # an alias, not a run


def test_variant_sections_compare_with_the_main_budget(tmp_path):
    import json

    rows_dir = tmp_path / "epochs8" / "rows"
    rows_dir.mkdir(parents=True)
    for row, f1 in (("pemscl", 47.0), ("atlop", 46.0)):
        run = record(row, 0, f1, threads=1)
        run["budget"] = ["--num_train_epochs", "8"]
        (rows_dir / f"{row}__seed0.json").write_text(json.dumps(run))
    main_rows = {"pemscl": [record("pemscl", 0, 43.7), record("pemscl", 1, 29.7)], "atlop": [record("atlop", 0, 44.82)]}
    section = variant_sections(main_rows, load_variants(tmp_path))
    assert "### Variant `epochs8`" in section
    assert "Budget: `--num_train_epochs 8`." in section
    assert any(line.startswith("| pemscl | 1 | 47.00 |") and line.endswith("| 43.70 |") for line in section)
    assert "PEMSCL - ATLOP test F1 in this variant: +1.00 (1 seed)." in section
    assert variant_sections(main_rows, load_variants(tmp_path / "none")) == []


def budgeted(run, **changes):
    """`run` with the main table's budget, `changes` ({flag name: value}) put in place."""
    from bench.experiments import budget_flags

    budget = budget_flags()
    for name, value in changes.items():
        budget[budget.index(f"--{name}") + 1] = value
    return {**run, "budget": budget}


def write_variant(root, name, runs):
    import json

    rows_dir = root / name / "rows"
    rows_dir.mkdir(parents=True)
    for run in runs:
        (rows_dir / f"{run['row']}__seed{run['seed']}.json").write_text(json.dumps(run))


def test_a_variant_of_model_settings_pairs_each_row_with_the_main_table(tmp_path):
    write_variant(tmp_path, "prior_off",
                  [budgeted(record("atlop", seed, f1), relation_bias_init="0") for seed, f1 in ((0, 52.5), (1, 51.0))]
                  + [budgeted(record("pemscl", 0, 53.0), relation_bias_init="0")])
    main_rows = {"pemscl": [budgeted(record("pemscl", s, f1)) for s, f1 in ((0, 54.0), (1, 54.5), (2, 55.0))],
                 "atlop": [budgeted(record("atlop", s, 54.0)) for s in range(3)]}
    section = variant_sections(main_rows, load_variants(tmp_path))
    assert "PEMSCL - ATLOP test F1 in this variant: +0.50 (1 seed)." in section
    assert ("PEMSCL (main budget) - ATLOP of this variant, test F1: +2.50 ± 1.41 over 2 paired seeds "
            "(+1.50, +3.50).") in section
    assert ("Changed against the main table: `--relation_bias_init auto` -> `0`; everything else as there."
            in section)
    assert "- atlop, this variant - main table, test F1: -2.25 ± 1.06 over 2 paired seeds (-1.50, -3.00)." in section
    assert "- pemscl, this variant - main table, test F1: -1.00 (1 seed)." in section
    claim = next(line for line in verdicts(main_rows, {}, load_variants(tmp_path))
                 if line.startswith("- PEMSCL (main budget) vs the ATLOP of variant `prior_off`"))
    assert claim.endswith("+2.50 ± 1.41 over 2 paired seeds (+1.50, +3.50) (target +1.5): holds.")


def test_a_variant_of_the_budget_is_not_paired_across_budgets(tmp_path):
    # Fewer epochs is another budget: its ATLOP says nothing about the main table's PEMSCL.
    write_variant(tmp_path, "epochs4", [budgeted(record("atlop", 0, 40.0), num_train_epochs="4",
                                                 relation_bias_init="0")])
    main_rows = {"pemscl": [budgeted(record("pemscl", 0, 54.0))], "atlop": [budgeted(record("atlop", 0, 54.0))]}
    section = variant_sections(main_rows, load_variants(tmp_path))
    assert not any("ATLOP of this variant" in line or "Changed against" in line for line in section)
    assert not any("vs the ATLOP of variant" in line for line in verdicts(main_rows, {}, load_variants(tmp_path)))


def test_paper_claims_table_gives_each_claim_its_verdict_with_and_without_the_prior():
    rows = {"pemscl": [record("pemscl", s, f1) for s, f1 in ((0, 54.0), (1, 55.0), (2, 56.0))],
            "atlop": [record("atlop", s, f1) for s, f1 in ((0, 52.0), (1, 53.0), (2, 54.5))],
            "pemscl_no_entropy": [record("pemscl_no_entropy", s, f1) for s, f1 in ((0, 54.5), (1, 55.5))],
            "pemscl_no_contrastive": [record("pemscl_no_contrastive", s, f1) for s, f1 in ((0, 53.0), (1, 55.5))],
            "pemscl_no_both": [record("pemscl_no_both", s, f1) for s, f1 in ((0, 54.1), (1, 56.0))]}
    without_prior = {"pemscl": [record("pemscl", 0, 50.0)], "atlop": [record("atlop", 0, 50.5)]}
    table = paper_claims_table(rows, {"prior_off": without_prior, "epochs4": {"pemscl": [record("pemscl", 0, 1.0)]}})
    line = {row.split(" | ")[0]: row for row in table if row.startswith("| ")}
    # Seeds +2, +2, +1.5: the mean, +1.83, reaches the target.
    assert line["| PEMSCL beats ATLOP (Table 2) (target +1.5)"].endswith(
        "| +2.13 test | +1.83 ± 0.29 over 3 paired seeds (+2.00, +2.00, +1.50): holds | -0.50 (1 seed): does not hold |")
    assert "(-0.50, -0.50): reversed | not run |" in line["| the entropy term helps (Table 3)"]
    assert "(+1.00, -0.50): within seed noise |" in line["| the contrastive term helps (Table 3)"]
    # Negative at both seeds, but the mean (-0.55) is within twice its standard error (0.90).
    assert "(-0.10, -1.00): within seed noise |" in line["| both terms help (Table 3)"]
    assert line["| ATLOP's threshold beats BCE (Table 2)"].endswith("| not run | not run |")


def test_sampling_share_compares_the_same_seeds_only():
    rows = {
        "pemscl": [record("pemscl", 0, 40.0), record("pemscl", 1, 30.0), record("pemscl", 2, 50.0)],
        "drop50_pemscl_nls0.1": [record("drop50_pemscl_nls0.1", 0, 36.0), record("drop50_pemscl_nls0.1", 1, 24.0)],
    }
    line = next(line for line in verdicts(rows, {}) if "negative sampling 0.1:" in line)
    # (36 + 24) / (40 + 30), not / the mean over all three clean seeds.
    assert "85.7% of the clean-label F1 over 2 paired seed(s) (seed 0: 90.0%, seed 1: 80.0%)" in line
    assert line.endswith("holds under the main budget.")


def test_variant_claims_follow_the_main_claims_on_their_own_runs():
    main = {"pemscl": [record("pemscl", 0, 40.0)], "atlop": [record("atlop", 0, 41.0)]}
    longer = {"pemscl": [record("pemscl", 0, 50.0), record("pemscl", 1, 48.0)],
              "atlop": [record("atlop", 0, 47.0), record("atlop", 1, 47.0)]}
    lines = verdicts(main, {}, {"epochs8": longer, "empty": {"bce": [record("bce", 0, 30.0)]}})
    assert lines[0].startswith("- PEMSCL vs ATLOP loss on Re-DocRED test F1: -1.00 (1 seed) (target +1.5): "
                               "does not hold under the main budget.")
    position = lines.index("- The same claims in variant `epochs8` (see Diagnostic variants):")
    assert lines[position + 1].startswith("  - PEMSCL vs ATLOP loss on Re-DocRED test F1: +2.00 ± 1.41 over 2 "
                                          "paired seeds (+3.00, +1.00) (target +1.5): holds in variant `epochs8`.")
    smaller = {"pemscl": [record("pemscl", 0, 48.0), record("pemscl", 1, 48.5)],
               "atlop": [record("atlop", 0, 47.0), record("atlop", 1, 47.0)]}
    assert verdicts(smaller, {})[0].endswith("(target +1.5): below target, though positive at all 2 seeds, "
                                             "under the main budget.")
    assert not any("`empty`" in line for line in lines)  # a variant with no claim's rows adds nothing
    assert verdicts({}, {}) == ["- No row of the main budget has finished yet."]


def test_runs_stuck_at_na_are_counted_and_named():
    from bench.report import aggregate, stuck_note

    stuck, fine = record("drop50_pemscl", 1, 0.7, dev_f1=1.41), record("drop50_pemscl", 0, 16.9, dev_f1=21.0)
    rows = {"drop50_pemscl": [fine, stuck]}
    assert aggregate(rows["drop50_pemscl"])["stuck_at_na"] == 1
    assert stuck_note(rows, "drop50_pemscl").endswith(": drop50_pemscl seed 1.")
    assert stuck_note({"drop50_pemscl": [fine]}, "drop50_pemscl") == ""
    del stuck["metrics"]["eval_f1"]  # no dev evaluation: cannot be judged
    assert aggregate([stuck])["stuck_at_na"] == 0


def recipe_record(config, seed, held_out, test=40.0, runtime=600.0):
    return {"config": config, "seed": seed, "torch_threads": 1,
            "metrics": {"eval_f1": held_out, "test_f1": test, "test_ign_f1": test - 1, "train_runtime": runtime}}


def test_diagnostic_runs_stuck_at_na_are_named():
    from bench.report import diagnostic_stuck_note

    stuck = recipe_record("release-d1", 68, 1.32)
    stuck["dev_f1_per_epoch"] = [[1.0, 0.0], [2.0, 0.0], [3.0, 1.32]]
    late = recipe_record("project", 67, 4.0)  # ended low, but was above the bar after epoch 2: it left all-NA
    late["dev_f1_per_epoch"] = [[1.0, 0.0], [2.0, 29.4], [3.0, 4.0]]
    runs = {"release-d1": [recipe_record("release-d1", 66, 33.2), stuck], "project": [late],
            "release+prior": [recipe_record("release+prior", 68, 46.2)]}
    assert diagnostic_stuck_note(runs) == [
        "Never left the all-NA state within the budget (held-out F1 below 5 after every epoch; final held-out F1 "
        "in brackets): release-d1 seed 68 (1.32). Every one of the 1 runs with the NA prior left it.", ""]
    runs["release+prior"].append(recipe_record("release+prior", 67, 2.0))
    assert diagnostic_stuck_note(runs)[0].endswith("release+prior seed 67 (2.00), release-d1 seed 68 (1.32).")
    assert diagnostic_stuck_note({"project": [late]}) == []


def test_diagnostic_table_pairs_each_configuration_with_its_start():
    runs = {
        "project": [recipe_record("project", 66, 40.0), recipe_record("project", 67, 42.0)],
        "project+d1": [recipe_record("project+d1", 66, 43.0), recipe_record("project+d1", 67, 43.0)],
        "release": [recipe_record("release", 66, 44.0)],
        "release-anchors": [recipe_record("release-anchors", 66, 41.0), recipe_record("release-anchors", 68, 50.0)],
        "release+prior": [recipe_record("release+prior", 66, 47.0), recipe_record("release+prior", 67, 45.0)],
        "release+prior-d1": [recipe_record("release+prior-d1", 66, 46.0), recipe_record("release+prior-d1", 67, 47.0)],
        # No `release+prior-d1-init` was measured: compared with `release+prior-d1` (two changes undone).
        "release+prior-d1-init-average": [recipe_record("release+prior-d1-init-average", 67, 44.0)],
    }
    table = diagnostic_table(runs)
    project_d1 = next(line for line in table if line.startswith("| project+d1 |"))
    # d1 switched to the release's 1024, everything else the project's; +3 and +1 at the two paired seeds.
    assert project_d1.startswith("| project+d1 | 1024 | normal | positive | inside | 0 | 2 | 43.00 ± 0.00 | project | 2.00 ± 1.41 (2) |")
    release_anchors = next(line for line in table if line.startswith("| release-anchors |"))
    # Only seed 66 is paired with `release`; the anchors go back to the project's Eq. 10 setting.
    assert "| 1024 | fan_in_uniform | positive | outside | 0 |" in release_anchors
    assert "| -3.00 (1) |" in release_anchors
    assert table.index(project_d1) < table.index(release_anchors)
    release_prior = next(line for line in table if line.startswith("| release+prior |"))
    assert "| 1024 | fan_in_uniform | all | outside | 4.6 |" in release_prior
    assert "| 3.00 (1) |" in release_prior  # against `release`, seed 66 only
    # Compared with `release+prior` (its last change undone), not with `release`: -1 and +2.
    prior_d1 = next(line for line in table if line.startswith("| release+prior-d1 |"))
    assert prior_d1.startswith("| release+prior-d1 | 768 | fan_in_uniform | all | outside | 4.6 | 2 | 46.50 ± 0.71 | release+prior | 0.50 ± 2.12 (2) |")
    assert table.index(release_prior) < table.index(prior_d1)
    combination = next(line for line in table if line.startswith("| release+prior-d1-init-average |"))
    assert "| 768 | normal | all | inside | 4.6 | 1 | 44.00 | release+prior-d1 | -3.00 (1) |" in combination


def test_same_recipe_summary_lists_every_seed_in_order():
    runs = {"default": [recipe_record("default", 67, 0, test=42.5, runtime=500.0),
                        recipe_record("default", 66, 0, test=41.25, runtime=510.0)],
            "default+bf16": [recipe_record("default+bf16", 66, 0, test=40.25, runtime=300.0),
                             recipe_record("default+bf16", 68, 0, test=44.0, runtime=310.0)],
            "release": [recipe_record("release", 66, 0)]}
    summary = same_recipe_summary(runs)
    assert summary["config"] == "default" and summary["seeds"] == [66, 67]
    assert summary["test_f1"] == [41.25, 42.5] and summary["test_ign_f1"] == [40.25, 41.5]
    assert summary["train_runtime_s"] == [510.0, 500.0]
    assert same_recipe_summary({}) is None
    bf16 = same_recipe_summary(runs, "default+bf16")
    assert bf16["seeds"] == [66, 68] and bf16["test_f1"] == [40.25, 44.0]
    lines = recipe_sections({}, {"default": summary, "default+bf16": bf16})
    default_row = next(line for line in lines if line.startswith("| default |"))
    assert "| 66, 67 | 41.88 ± 0.88 |" in default_row and default_row.endswith("| - |")
    # Paired by seed against `default`: only seed 66 is shared (40.25 - 41.25).
    bf16_row = next(line for line in lines if line.startswith("| default+bf16 |"))
    assert bf16_row.endswith("| -1.00 (1) |")
    release_row = next(line for line in lines if line.startswith("| the released code |"))
    assert "| 41.25 ± 0.35 |" in release_row


def test_demo_summary_reports_each_seed_and_the_spread():
    from bench.experiments import DEMO_EPOCHS
    from bench.report import demo_summary

    shipped = ["--num_train_epochs", DEMO_EPOCHS, "--seed", "42"]
    runs = {"default": [dict(record("demo", seed, f1, minutes=m), seed=seed, config="default", torch_threads=2,
                             recipe=shipped + ["--seed", str(seed)])
                        for seed, f1, m in ((43, 41.26, 14.0), (42, 40.004, 13.5), (44, 42.0, 15.1))]}
    expected = {"seeds": [42, 43, 44], "test_f1": [40.0, 41.26, 42.0], "spread": 2.0, "minutes": [13.5, 14.0, 15.1],
                "torch_threads": [2, 2, 2], "num_train_epochs": float(DEMO_EPOCHS)}
    assert demo_summary(runs) == expected
    # A run of another demo budget is not one of the shipped demo's seeds.
    older = dict(runs["default"][0], seed=45, recipe=["--num_train_epochs", "17", "--seed", "45"])
    assert demo_summary({"default": runs["default"] + [older]}) == expected
    assert demo_summary({}) is None


def test_the_registry_knows_the_demo_budget_run_docre_ships(monkeypatch):
    import run_docre
    from bench.experiments import DEMO_EPOCHS
    from bench.report import flag_value

    monkeypatch.setattr(run_docre, "demo_data_files", lambda data_dir: ("dev.json", "test.json"))
    assert flag_value(run_docre.demo_arguments([]), "--num_train_epochs") == DEMO_EPOCHS
    assert flag_value(["--seed", "1", "--seed", "2"], "--seed") == "2" and flag_value(["--seed"], "--seed") is None


def test_epoch_table_projects_the_recipe_and_shows_each_precision():
    from bench.report import epoch_table

    train = {"docs": 500, "batch_size": 4, "padding_share_length_grouped": 0.03, "padding_share_shuffled": 0.25,
             "fp32": {"docs_per_s": 2.0, "encoder_docs_per_s": 3.0, "mean_batch_ratio": 1.6, "max_batch_ratio": 2.2}}
    infer = {"docs": 500, "batch_size": 8, "fp32": {"docs_per_s": 7.5, "encoder_docs_per_s": 12.5, "ratio_of_sums": 1.65},
             "bf16": {"docs_per_s": 11.0, "encoder_docs_per_s": 18.0, "ratio_of_sums": 1.64}}
    predict = {"fp32": {"docs_per_s": 6.4, "peak_rss_mib": 944.4}}
    table = "\n".join(epoch_table({"train": train, "infer": infer, "trainer_predict": predict}))
    # 3 epochs x 500 documents at 2 docs/s = 750 s (encoder alone: 1500 / 3 = 500 s); no bf16 training run: "-".
    assert "| the recipe's 1500 training documents at this speed, s (target 354) | 750 | - |" in table
    assert "| the same with the eager encoder alone, s | 500 | - |" in table
    assert "| full / encoder step, mean over batches (worst batch) | 1.60x (2.20x) | - |" in table
    assert "| full / encoder, ratio of the sums | 1.65x | 1.64x |" in table
    assert "| `DocRETrainer.predict` docs/s (target 20) | 6.40 | - |" in table
    assert "| `DocRETrainer.predict` peak RSS, MiB | 944 | - |" in table
    assert "Padding: 3% of the padded token grid with length-grouped batches, 25% shuffled." in table


def test_prior_curves_plot_only_runs_with_curves(tmp_path):
    from bench.report import plot_prior_curves

    with_curve = {**recipe_record("release+prior", 66, 43.0), "dev_f1_per_epoch": [[1.0, 32.1], [2.0, 40.5], [3.0, 43.1]]}
    assert not plot_prior_curves({"release": [recipe_record("release", 66, 40.0)]}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    assert plot_prior_curves({"release+prior": [with_curve]}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_figures_are_drawn_only_from_rows_that_feed_them(tmp_path):
    from bench.report import plot_margins, plot_sweep

    atlop_only = {"atlop": [record("atlop", 0, 54.0)]}
    # ATLOP alone: nothing for the sampling plot or the margins (this record kept none) to draw.
    assert not plot_sweep(atlop_only, tmp_path / "sweep.png")
    assert not plot_margins(atlop_only, tmp_path / "margins.png")
    assert not list(tmp_path.iterdir())
    with_drop = {**atlop_only, "pemscl": [record("pemscl", 0, 55.0)],
                 "drop50_pemscl_nls0.1": [record("drop50_pemscl_nls0.1", 0, 47.0)]}
    assert plot_sweep(with_drop, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with_margins = {"atlop": [{**record("atlop", 0, 54.0), "test_margins": {"positive": [1.0, 2.0], "negative": [-3.0]}}]}
    assert plot_margins(with_margins, tmp_path / "margins.png")
    assert (tmp_path / "margins.png").exists()


def test_speed_verdicts_judge_the_speed_targets_from_the_measurements():
    from bench.report import speed_verdicts

    speed = {
        "batches_per_batch": [
            {"shape": {"pairs": 900}, "fp32": {"train_ratio": 2.5, "infer_ratio": 2.5}},
            {"shape": {"pairs": 2494}, "fp32": {"train_ratio": 1.7, "infer_ratio": 1.9}},
        ],
        "epoch": {
            "train": {"docs": 500, "fp32": {"docs_per_s": 5.0, "encoder_docs_per_s": 8.0}},
            "infer": {"docs": 500, "fp32": {"docs_per_s": 20.0, "encoder_docs_per_s": 30.0},
                      "forward_gflop": {"encoder": 100.0, "full": 150.0}},
            "trainer_predict": {"fp32": {"docs_per_s": 18.0}, "bf16": {"docs_per_s": 21.0}},
        },
    }
    lines = speed_verdicts(speed)
    # The densest batch decides (2,494 pairs), not the worse but lighter one.
    assert any("densest batch (2,494 pairs): training 1.70x fp32 (cap 1.8x; the released code 23.6x), inference 1.90x "
               "(cap 2.0x; the released code 3.1x): "
               "within the caps" in line for line in lines)
    # 1,500 documents at 5 docs/s = 300 s <= 354 s; the encoder alone 187.5 s.
    training = next(line for line in lines if "recipe's training" in line)
    assert "300 s projected" in training and "; met." in training and "would take 188 s on this machine." in training
    prediction = next(line for line in lines if "DocRETrainer.predict" in line)
    assert "18.00 docs/s fp32, 21.00 docs/s bf16 (target 20): met." in prediction
    assert "counts 1.50x its FLOPs and takes 1.50x its time: the head computes at the encoder's rate." in prediction
    faster = {"epoch": {**speed["epoch"], "infer": {**speed["epoch"]["infer"], "fp32": {"docs_per_s": 25.0,
                                                                                      "encoder_docs_per_s": 30.0}}}}
    prediction = next(line for line in speed_verdicts(faster) if "DocRETrainer.predict" in line)
    assert "counts 1.50x its FLOPs and takes 1.20x its time." in prediction
    slow = {"epoch": {**speed["epoch"], "trainer_predict": {"fp32": {"docs_per_s": 8.0}}}}
    assert any("(target 20): missed." in line for line in speed_verdicts(slow))


def test_a_missed_training_cap_says_where_the_densest_step_goes():
    from bench.report import speed_verdicts

    def part(seconds):
        return {"median_s": seconds}

    speed = {
        "batches_per_batch": [{"shape": {"pairs": 2494}, "fp32": {"train_ratio": 2.9, "infer_ratio": 1.9}}],
        "breakdown": {"fp32": {"train/full": part(3.1), "train/encoder": part(1.12), "train/bilinear": part(0.84),
                               "train/loss.contrastive": part(1.01)}},
        "settings": {"contrastive_anchors=positive": {"max_batch_train_ratio": 1.77}},
    }
    line = next(line for line in speed_verdicts(speed) if "densest batch" in line)
    assert "training 2.90x fp32 (cap 1.8x;" in line and "above a cap." in line
    assert "Of its 3.10 s, the encoder takes 1.12 s, the grouped bilinear 0.84 s and the contrastive term 1.01 s" in line
    assert "`--contrastive_anchors positive` (Eq. 10 as printed) the worst batch trains at 1.77x." in line
    within = {**speed, "batches_per_batch": [{"shape": {"pairs": 2494}, "fp32": {"train_ratio": 1.7, "infer_ratio": 1.9}}]}
    assert not any("contrastive term" in line for line in speed_verdicts(within))


def test_settings_table_lists_each_head_setting_with_its_worst_batch():
    from bench.report import settings_table

    def ratios(train, worst_train, infer, worst_infer):
        return {"train_ratio": train, "max_batch_train_ratio": worst_train, "infer_ratio": infer,
                "max_batch_infer_ratio": worst_infer}

    settings = {"flags": {"default": {}, "contrastive_anchors=positive": {"contrastive_anchors": "positive"}},
                "default": ratios(2.1, 2.9, 1.6, 1.98), "contrastive_anchors=positive": ratios(1.5, 1.77, 1.6, 1.97)}
    assert settings_table(settings)[2:] == ["| the defaults | 2.10x (2.90x) | 1.60x (1.98x) |",
                                            "| `--contrastive_anchors positive` | 1.50x (1.77x) | 1.60x (1.97x) |"]


def test_budget_summary_reads_the_flags_as_values():
    from bench.report import budget_summary

    flags = ["--num_train_epochs", "8.0", "--learning_rate", "5e-05", "--warmup_steps", "0.06", "--bf16",
             "--use_cpu", "--relation_bias_init", "auto", "--per_device_train_batch_size", "4"]
    assert budget_summary(flags) == {"num_train_epochs": 8, "learning_rate": 5e-05, "warmup_steps": 0.06, "bf16": True,
                                     "use_cpu": True, "relation_bias_init": "auto", "per_device_train_batch_size": 4}
    assert isinstance(budget_summary(flags)["num_train_epochs"], int)


def test_demo_verdict_reads_spread_and_time_with_the_threads_they_ran_on():
    from bench.experiments import DEMO_EPOCHS
    from bench.report import demo_summary, demo_verdict

    def run(seed, f1, minutes, threads):
        return {"seed": seed, "metrics": {"test_f1": f1}, "minutes": minutes, "torch_threads": threads,
                "recipe": ["--num_train_epochs", DEMO_EPOCHS, "--seed", str(seed)]}

    demo = demo_summary({"default": [run(43, 44.0, 15.5, 2), run(42, 43.1, 14.0, 2), run(44, 44.4, 16.2, 2)]})
    assert demo["seeds"] == [42, 43, 44] and demo["spread"] == 1.3
    [line] = demo_verdict(demo)
    assert line.startswith(f"- `run_docre.py --demo` ({float(DEMO_EPOCHS):g} epochs): test F1 43.10 (seed 42)")
    assert "spread 1.30 (target at most 1.5, 3 seeds): holds; 16.2 minutes at most on 2 threads alone" in line
    wide = demo_summary({"default": [run(42, 40.0, 25.0, 1), run(43, 44.0, 24.0, 1), run(44, 43.0, 24.5, 2)]})
    [line] = demo_verdict(wide)
    assert "spread 4.00" in line and ": missed;" in line and "with 1 thread beside another run" in line
    assert "does not hold yet" in demo_verdict(demo_summary({"default": [run(42, 40.0, 15.0, 2)]}))[0]
    assert demo_verdict(None) == []


def test_decision_rule_ties_go_to_the_paper_and_the_most_paper_like_tie_is_chosen():
    from bench.report import chosen_default, decision_rows

    def runs(name, held_out):
        return [recipe_record(name, seed, f1) for seed, f1 in zip((66, 67, 68), held_out)]

    measured = {
        "release+prior": runs("release+prior", [43.0, 46.0, 46.0]),
        "release+prior-anchors": runs("release+prior-anchors", [38.0, 44.0, 45.0]),   # lower at every seed, -2.67
        "release+prior-init": runs("release+prior-init", [41.0, 46.5, 44.0]),         # one seed higher: a tie
        "release+prior-d1": runs("release+prior-d1", [42.9, 45.5, 45.2]),             # lower everywhere but -0.47
        "release+prior-d1-average": runs("release+prior-d1-average", [42.0, 45.0, 44.5]),          # -1.17, all lower
        "release+prior-d1-init-average": runs("release+prior-d1-init-average", [42.0, 45.0, 46.5]),
    }
    verdicts = {name: verdict for name, _, verdict in decision_rows(measured)}
    assert verdicts == {"release+prior-d1": "tie", "release+prior-init": "tie", "release+prior-anchors": "costs F1",
                        "release+prior-d1-average": "costs F1", "release+prior-d1-init-average": "tie"}
    assert chosen_default(decision_rows(measured)) == "release+prior-d1-init-average"
    # The most paper-like combination costs F1: the next one that is a tie wins.
    measured["release+prior-d1-init-average"] = runs("release+prior-d1-init-average", [41.0, 44.0, 45.0])
    assert chosen_default(decision_rows(measured)) == "release+prior-d1"
    # While the most paper-like candidate has fewer than 3 seeds, all lower so far, nothing is chosen ...
    measured["release+prior-d1-init-average"] = runs("release+prior-d1-init-average", [42.9])
    assert chosen_default(decision_rows(measured)) is None
    # ... but one seed that is not lower settles a tie: every seed would have to be lower to cost F1.
    measured["release+prior-d1-init-average"] = runs("release+prior-d1-init-average", [42.0, 46.0])
    assert chosen_default(decision_rows(measured)) == "release+prior-d1-init-average"


def test_measured_recipe_verdict_compares_the_whole_run_with_the_release():
    def timed(runtime, docs_per_s, cpu=None):
        run = {"config": "default", "seed": 66, "torch_threads": 2,
               "metrics": {"train_runtime": runtime, "test_samples_per_second": docs_per_s, "test_f1": 45.979}}
        return run | ({"cpu_capability": cpu} if cpu else {})

    [slow] = measured_recipe_verdicts({"default": [timed(1398.3, 5.02)]})
    assert "`train_runtime` 1,398 s, 2.5x faster than the released code's 3,539 s (target at most 354 s: missed)" in slow
    assert "5.0 docs/s including the scoring (target 20: missed); test F1 45.98." in slow
    [fast] = measured_recipe_verdicts({"default": [timed(350.0, 21.0, cpu="AVX512")]})
    assert "(target at most 354 s: met)" in fast and "(target 20: met)" in fast and "alone, CPU AVX512)" in fast
    assert measured_recipe_verdicts({}) == []


def test_speed_defaults_verdict_pairs_seeds_and_bounds_by_the_standard_error():
    def runs(config, f1s):
        return [{"config": config, "seed": seed, "metrics": {"test_f1": f1}} for seed, f1 in zip((66, 67, 68), f1s)]

    noisy = {"default": runs("default", [45.98, 46.02, 45.43]),
             "default+eager_random": runs("default+eager_random", [46.74, 45.95, 46.23])}
    [line] = speed_defaults_f1_verdict(noisy)
    differences = [45.98 - 46.74, 46.02 - 45.95, 45.43 - 46.23]
    bound = 2 * statistics.stdev(differences) / 3 ** 0.5
    mean = statistics.fmean(differences)
    assert f"{mean:+.2f} ± {statistics.stdev(differences):.2f} over 3 paired seeds (-0.76, +0.07, -0.80)" in line
    assert f"within seed noise (twice the standard error of the mean: {bound:.2f})" in line
    steady = {"default": runs("default", [45.0, 45.1, 44.9]),
              "default+eager_random": runs("default+eager_random", [46.0, 46.2, 45.9])}
    assert "outside seed noise" in speed_defaults_f1_verdict(steady)[0]
    assert speed_defaults_f1_verdict({"default": noisy["default"]}) == []


def evidence_record(weight, seed, f1, evi_f1_by_threshold, heuristic_evi_f1):
    def split():
        return {"thresholds": {str(t): {"f1": f1, "ign_f1": f1, "evi_f1": evi_f1_by_threshold(t), "evi_p": 0.0,
                                        "evi_r": 0.0} for t in EVIDENCE_THRESHOLDS},
                "mention_sentences": {"f1": f1, "ign_f1": f1, "evi_f1": heuristic_evi_f1, "evi_p": 0.0, "evi_r": 0.0}}
    return {"weight": weight, "seed": seed, "minutes": 30.0, "evidence": {"validation": split(), "test": split()}}


def test_evidence_rule_chooses_the_best_relation_f1_among_weights_that_beat_the_heuristic_and_cost_little():
    peak = {0.0: 0.3, 0.1: 0.2, 0.3: 0.1}  # each weight's best threshold
    relation_f1 = {0.0: 45.0, 0.1: 44.6, 0.3: 45.2}  # 0.1 costs 0.4 (allowed), 0.3 gains
    evidence_f1 = {0.0: 20.0, 0.1: 40.0, 0.3: 28.0}
    runs = {w: [evidence_record(w, seed, relation_f1[w] + (seed - 67) * 0.1,
                                lambda t, w=w: evidence_f1[w] - 10 * abs(t - peak[w]), heuristic_evi_f1=30.0)
                for seed in (66, 67, 68)] for w in relation_f1}
    summary = evidence_summaries(runs)
    assert summary["complete"]
    assert {w: v["threshold"] for w, v in summary["weights"].items()} == {"0.0": 0.3, "0.1": 0.2, "0.3": 0.1}
    # 0.3 has the best relation F1 but its evidence (28) does not beat the heuristic (30): 0.1 is chosen.
    assert summary["chosen_weight"] == 0.1 and summary["chosen_threshold"] == 0.2
    relation_f1[0.1] = 44.4  # now it costs 0.6 > 0.5: nothing qualifies, the default stays 0
    runs[0.1] = [evidence_record(0.1, seed, 44.4, lambda t: 40.0, 30.0) for seed in (66, 67, 68)]
    assert evidence_summaries(runs)["chosen_weight"] == 0.0
    del runs[0.3][2]  # a missing seed: no decision yet
    assert evidence_summaries(runs)["complete"] is False and evidence_summaries(runs)["chosen_weight"] is None
