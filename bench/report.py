#!/usr/bin/env python
"""Write `bench/REPORT.md`, `bench/results/summary.json` and the plots from the results of
`bench/reproduce.py` (rows) and `bench/speed.py` (speed). Rows still missing are reported as missing.

    python bench/report.py
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
ROWS_DIR = RESULTS / "rows"
REPORT = REPO / "bench" / "REPORT.md"
NOTES = REPO / "bench" / "notes.md"
TRAIN_FILE = REPO.parent / "shared" / "data" / "re-docred" / "dev_revised.json"

ROW_ORDER = [
    "atlop", "bce", "pemscl", "pemscl_no_entropy", "pemscl_no_contrastive", "pemscl_no_both",
    "drop50_pemscl", "drop50_pemscl_nls0.1", "drop50_atlop_nls0.1",
    "drop50_pemscl_nls0.05", "drop50_pemscl_nls0.3", "drop50_pemscl_nls0.5", "drop50_pemscl_nls1.0",
]
ALIASES = {"drop50_pemscl_nls1.0": "drop50_pemscl"}
SWEEP = [0.05, 0.1, 0.3, 0.5, 1.0]
# The paper's numbers (RoBERTa-large, full Re-DocRED training set) for side-by-side reading.
PAPER = {
    "atlop": {"test_f1": 77.73, "test_ign_f1": 76.94},
    "bce": {"test_f1": 75.36, "test_ign_f1": 75.91},
    "pemscl": {"test_f1": 79.86, "test_ign_f1": 79.01, "head_f1": 82.99, "mid_f1": 75.70, "tail_f1": 63.51},
    "pemscl_no_entropy": {"dev_f1": 79.17, "head_f1": 82.35, "mid_f1": 74.75, "tail_f1": 62.35},
    "pemscl_no_contrastive": {"dev_f1": 79.10, "head_f1": 82.40, "mid_f1": 74.50, "tail_f1": 62.22},
    "pemscl_no_both": {"dev_f1": 78.63, "head_f1": 81.92, "mid_f1": 74.06, "tail_f1": 61.16},
}
METRICS = ["test_f1", "test_ign_f1", "test_head_f1", "test_mid_f1", "test_tail_f1", "eval_f1"]


def load_rows(rows_dir: Path = ROWS_DIR) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for path in sorted(rows_dir.glob("*__seed*.json")):
        record = json.loads(path.read_text())
        rows[record["row"]].append(record)
    for alias, source in ALIASES.items():
        if source in rows:
            rows[alias] = rows[source]
    return rows


# A run whose best dev F1 stays below this never left the all-NA state within its budget.
STUCK_DEV_F1 = 5.0


def is_stuck(record: dict) -> bool:
    dev_f1 = record["metrics"].get("eval_f1")  # a run without dev evaluation cannot be judged
    if dev_f1 is None:
        return False
    # The best over the per-epoch curve too: a diagnostic run scores its final model, not its best.
    return max([f1 for _, f1 in record.get("dev_f1_per_epoch", [])] + [dev_f1]) < STUCK_DEV_F1


def stuck_seeds(rows, *names: str) -> list[str]:
    """`row seed N` for every run of these rows that never left the all-NA state."""
    return [f"{name} seed {r['seed']}" for name in names for r in sorted(rows.get(name, []), key=lambda r: r["seed"])
            if is_stuck(r)]


def stuck_note(rows, *names: str) -> str:
    stuck = stuck_seeds(rows, *names)
    if not stuck:
        return ""
    return (f" Never left the all-NA state within the budget (best dev F1 < {STUCK_DEV_F1:g}): "
            f"{', '.join(stuck)}.")


def aggregate(records: list[dict]) -> dict:
    summary = {"seeds": len(records), "stuck_at_na": sum(is_stuck(r) for r in records)}
    for metric in METRICS:
        values = [r["metrics"][metric] for r in records if metric in r["metrics"]]
        if values:
            summary[metric] = round(statistics.fmean(values), 2)
            summary[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
    summary["minutes_per_run"] = round(statistics.fmean(r["minutes"] for r in records), 1)
    return summary


def seeds_cell(summary: dict | None) -> str:
    if not summary:
        return "0"
    stuck = summary.get("stuck_at_na", 0)
    return f"{summary['seeds']} ({stuck} stuck at NA)" if stuck else str(summary["seeds"])


def cell(summary: dict | None, metric: str) -> str:
    if not summary or metric not in summary:
        return "-"
    spread = f" ± {summary[metric + '_std']:.2f}" if summary.get("seeds", 0) > 1 else ""
    return f"{summary[metric]:.2f}{spread}"


def relation_frequencies() -> Counter:
    counts: Counter = Counter()
    if TRAIN_FILE.exists():
        for document in json.loads(TRAIN_FILE.read_text()):
            counts.update(label["r"] for label in document["labels"])
    return counts


def save_figure(fig, path) -> None:
    """Every plot of the report: tight layout, 120 dpi, the figure closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(rows, path) -> bool:
    """Test F1 against the sampling ratio, one line per seed (seeds cover different ratios so far, and a
    mean over unequal seed sets would mislead), with each seed's clean-label PEMSCL as a dashed line.
    Returns False (and writes nothing) before any dropped-label row has finished."""
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in rows.get("drop50_pemscl_nls0.1", []) + rows.get("drop50_pemscl", [])})
    if not seeds:
        return False
    fig, ax = plt.subplots(figsize=(8.2, 3.8))
    for index, seed in enumerate(seeds):
        color = f"C{index}"
        points = [(ratio, per_seed(rows, f"drop50_pemscl_nls{ratio}").get(seed)) for ratio in SWEEP]
        points = [(ratio, f1) for ratio, f1 in points if f1 is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color=color, label=f"PEMSCL, 50% dropped, seed {seed}")
        atlop = per_seed(rows, "drop50_atlop_nls0.1").get(seed)
        if atlop is not None:
            ax.plot([0.1], [atlop], marker="s", linestyle="none", color=color, markeredgecolor="black",
                    label=f"ATLOP, 50% dropped, ratio 0.1, seed {seed}")
        clean = per_seed(rows, "pemscl").get(seed)
        if clean is not None:
            ax.axhline(clean, color=color, linestyle="--", linewidth=0.9, label=f"PEMSCL, clean labels, seed {seed}")
    ax.set_xscale("log")
    ax.set_xticks(SWEEP, [str(r) for r in SWEEP])
    ax.set_xlabel("negative label sampling ratio (1.0 = no sampling)")
    ax.set_ylabel("Re-DocRED test F1 (%)")
    ax.set_title("Negative label sampling (cf. paper Figure 2)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_figure(fig, path)
    return True


def plot_frequency_f1(rows, path) -> bool:
    """Test F1 of ATLOP and PEMSCL by training-frequency bucket. Returns False before either has a row."""
    import matplotlib.pyplot as plt

    if "atlop" not in rows and "pemscl" not in rows:
        return False
    frequencies = relation_frequencies()
    ranked = [r for r, _ in frequencies.most_common()]
    buckets = [("top 10", ranked[:10]), ("11-30", ranked[10:30]), ("31-60", ranked[30:60]), ("rest", ranked[60:])]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    width = 0.38
    for offset, name in ((-width / 2, "atlop"), (width / 2, "pemscl")):
        if name not in rows:
            continue
        scores = []
        for _, relations in buckets:
            f1s = []
            for record in rows[name]:
                tp = predicted = gold = 0
                for relation in relations:
                    t, p, g = record["per_relation_test"].get(relation, [0, 0, 0])
                    tp, predicted, gold = tp + t, predicted + p, gold + g
                f1s.append(200 * tp / (predicted + gold) if predicted + gold else 0.0)
            scores.append(statistics.fmean(f1s))
        ax.bar([i + offset for i in range(len(buckets))], scores, width, label=name.upper())
    ax.set_xticks(range(len(buckets)), [b for b, _ in buckets])
    ax.set_xlabel("relations ranked by training frequency")
    ax.set_ylabel("test F1 (%)")
    ax.set_title("F1 by relation frequency")
    ax.legend()
    save_figure(fig, path)
    return True


def plot_dev_curves(rows, variants: dict[str, dict], path) -> bool:
    """Dev F1 after each epoch of every PEMSCL and ATLOP run that kept its curve (main budget solid,
    variants dashed). Returns False (and writes nothing) when no run has a curve yet."""
    import matplotlib.pyplot as plt

    runs = [("", "-", rows)] + [(f" {name}", "--", variant_rows) for name, variant_rows in variants.items()]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for suffix, style, source in runs:
        for color, name in (("C0", "pemscl"), ("C3", "atlop")):
            for record in source.get(name, []):
                curve = record.get("dev_f1_per_epoch")
                if not curve:
                    continue
                epochs, f1 = zip(*curve)
                ax.plot(epochs, f1, style, color=color, marker="o", markersize=3, alpha=0.8,
                        label=f"{name.upper()}{suffix} seed {record['seed']}")
                ax.annotate(str(record["seed"]), (epochs[-1], f1[-1]), fontsize=7, xytext=(3, 0),
                            textcoords="offset points", color=color)
                drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev F1 (%), 50 held-out documents")
    ax.set_title("Model-selection curves: PEMSCL (blue) vs ATLOP (red)\nsolid: main budget, dashed: variants",
                 fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)
    return True


def plot_margins(rows, path) -> bool:
    """Histograms of f_r - f_NA on test pairs (Figure 3's quantity). Returns False before any row kept them."""
    import matplotlib.pyplot as plt

    if not any("test_margins" in r for name in ("atlop", "pemscl") for r in rows.get(name, [])):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, name in zip(axes, ("atlop", "pemscl")):
        margins = next((r["test_margins"] for r in rows.get(name, []) if "test_margins" in r), None)
        if margins is None:
            ax.set_title(f"{name.upper()}: not run yet")
            continue
        ax.hist(margins["negative"], bins=60, alpha=0.6, density=True, label="negative relations")
        ax.hist(margins["positive"], bins=60, alpha=0.6, density=True, label="gold relations")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{name.upper()}: logit - threshold logit")
        ax.set_xlabel("f_r - f_NA on test pairs")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    save_figure(fig, path)
    return True


def per_seed(rows, name: str, metric: str = "test_f1") -> dict[int, float]:
    return {r["seed"]: r["metrics"][metric] for r in rows.get(name, []) if metric in r["metrics"]}


def paired_difference(rows, better: str, worse: str, metric: str = "test_f1") -> tuple[float, float, list[float]] | None:
    """Mean and standard deviation over the seeds both rows have of (better - worse), and the differences."""
    a, b = per_seed(rows, better, metric), per_seed(rows, worse, metric)
    differences = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
    if not differences:
        return None
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return statistics.fmean(differences), spread, differences


def describe_difference(result: tuple[float, float, list[float]]) -> str:
    mean, spread, differences = result
    seeds = ", ".join(f"{d:+.2f}" for d in differences)
    if len(differences) == 1:
        return f"{mean:+.2f} (1 seed)"
    return f"{mean:+.2f} ± {spread:.2f} over {len(differences)} paired seeds ({seeds})"


def target_verdict(result: tuple[float, float, list[float]], target: float) -> str:
    """Whether a paired mean difference reaches `target`; one that falls short but has the claimed sign at
    every seed is said so (a consistent, smaller effect is not the same finding as no effect)."""
    mean, _, differences = result
    if mean >= target:
        return "holds"
    if len(differences) > 1 and all(d > 0 for d in differences):
        return f"below target, though positive at all {len(differences)} seeds,"
    return "does not hold"


def method_claims(rows, budget: str) -> list[str]:
    """The paper's claims about the losses, each as a paired-seed difference over the runs of `rows` (one
    budget); a claim whose rows have no run yet is left out."""
    lines = []
    gap = paired_difference(rows, "pemscl", "atlop")
    if gap:
        lines.append(f"- PEMSCL vs ATLOP loss on Re-DocRED test F1: {describe_difference(gap)} (target +1.5): "
                     f"{target_verdict(gap, 1.5)} {budget}."
                     + stuck_note(rows, "pemscl", "atlop"))
    for ablated, term in (("pemscl_no_entropy", "the entropy term (Eq. 5-6)"),
                          ("pemscl_no_contrastive", "the contrastive term (Eq. 8-10)"),
                          ("pemscl_no_both", "both terms")):
        overall, tail = paired_difference(rows, "pemscl", ablated), paired_difference(rows, "pemscl", ablated, "test_tail_f1")
        if overall and tail:
            lines.append(f"- Effect of {term} (pemscl - {ablated}): test F1 {describe_difference(overall)}; "
                         f"tail F1 {tail[0]:+.2f}. The paper: it helps, most on tail relations (Table 3)."
                         + stuck_note(rows, "pemscl", ablated))
    recovered = paired_difference(rows, "drop50_pemscl_nls0.1", "drop50_pemscl")
    if recovered:
        lines.append(f"- Half the training labels dropped: negative sampling 0.1 vs none, test F1 {describe_difference(recovered)}."
                     + stuck_note(rows, "drop50_pemscl_nls0.1", "drop50_pemscl"))
    sampled, clean = per_seed(rows, "drop50_pemscl_nls0.1"), per_seed(rows, "pemscl")
    paired = sorted(sampled.keys() & clean.keys())
    if paired:
        # Same seeds on both sides: the clean runs' F1 varies by several points from seed to seed.
        share = 100 * statistics.fmean(sampled[s] for s in paired) / statistics.fmean(clean[s] for s in paired)
        shares = ", ".join(f"seed {s}: {100 * sampled[s] / clean[s]:.1f}%" for s in paired)
        lines.append(f"- Half the training labels dropped, negative sampling 0.1: {share:.1f}% of the clean-label F1 "
                     f"over {len(paired)} paired seed(s) ({shares}) (target 85%): "
                     f"{'holds' if share >= 85 else 'does not hold'} {budget}." + stuck_note(rows, "drop50_pemscl_nls0.1"))
    return lines


def sign_verdict(result: tuple[float, float, list[float]]) -> str:
    """Whether a difference the paper reports as positive is positive here: it holds (or is reversed) when it
    has that sign at every seed and its mean lies beyond twice its standard error; otherwise it is within seed
    noise."""
    mean, spread, differences = result
    if len(differences) == 1:
        return "positive, 1 seed" if mean > 0 else "negative, 1 seed"
    beyond_noise = abs(mean) > 2 * spread / math.sqrt(len(differences))
    if beyond_noise and all(d > 0 for d in differences):
        return "holds"
    if beyond_noise and all(d < 0 for d in differences):
        return "reversed"
    return "within seed noise"


# The paper's claims about its method, each a (better - worse) difference of two rows, with the paper's own
# difference (RoBERTa-large; Table 2 test F1, Table 3 dev F1, Table 4 Gold-Test F1 in the OOG regime) and the
# target this project set for it (None: the claim is the sign).
PAPER_CLAIMS = [
    ("PEMSCL beats ATLOP (Table 2)", "pemscl", "atlop", "+2.13 test", 1.5),
    ("the entropy term helps (Table 3)", "pemscl", "pemscl_no_entropy", "+0.72 dev", None),
    ("the contrastive term helps (Table 3)", "pemscl", "pemscl_no_contrastive", "+0.79 dev", None),
    ("both terms help (Table 3)", "pemscl", "pemscl_no_both", "+1.26 dev", None),
    ("the pairwise moving-threshold loss alone beats ATLOP (Section 4.4)", "pemscl_no_both", "atlop", "+1.00 dev", None),
    ("ATLOP's threshold beats BCE (Table 2)", "atlop", "bce", "+2.37 test", None),
    ("negative sampling 0.1 recovers from half the labels missing (Table 4)", "drop50_pemscl_nls0.1",
     "drop50_pemscl", "+12.93 test", None),
]


def paper_claims_table(rows, variants: dict[str, dict]) -> list[str]:
    """One line per claim of the paper: its difference there, here under the main budget, and here with the NA
    prior off for both rows (variant `prior_off`, the papers' setting), each with its verdict."""
    without_prior = variants.get("prior_off", {})

    def verdict_cell(runs, better, worse, target):
        result = paired_difference(runs, better, worse)
        if not result:
            return "not run"
        verdict = target_verdict(result, target).rstrip(",") if target is not None else sign_verdict(result)
        return f"{describe_difference(result)}: {verdict}"

    out = ["## The paper's claims at this scale", "",
           "Each claim as a test-F1 difference between two rows, paired by seed. The paper's differences are "
           "RoBERTa-large on the full training set; here MiniLM-L6 on 450 documents, so the sizes are not "
           "comparable, the signs are. Without a target the claim is the sign: it holds when the difference is "
           "positive at every seed and its mean exceeds twice its standard error (reversed: the same, negative). "
           "The main table gives every row this project's NA prior; the last column trains both rows as the "
           "papers do, without it (variant `prior_off`).", "",
           "| claim | paper | here: main table | here: without the NA prior |", "|---|---|---|---|"]
    for claim, better, worse, paper, target in PAPER_CLAIMS:
        goal = f" (target {target:+.1f})" if target is not None else ""
        out.append(f"| {claim}{goal} | {paper} | {verdict_cell(rows, better, worse, target)} | "
                   f"{verdict_cell(without_prior, better, worse, target)} |")
    return out + [""]


def changed_settings(main_rows, variant_rows) -> dict[str, tuple[str, str]] | None:
    """`{flag: (main value, variant value)}` when the variant ran the main budget with only model settings
    changed (`reproduce.py --model_setting`), so its rows pair with the main table's seed by seed; None when
    its budget differs in anything else (epochs, learning rate, ...) or either side has no run."""
    main_record = next((records[0] for records in main_rows.values() if records), None)
    variant_record = next((records[0] for records in variant_rows.values() if records), None)
    main_budget, variant_budget = (record.get("budget") if record else None for record in (main_record, variant_record))
    if not main_budget or not variant_budget or len(main_budget) != len(variant_budget):
        return None
    if main_budget[::2] != variant_budget[::2]:  # other flags: another budget
        return None
    changed = {flag: (a, b) for flag, a, b in zip(main_budget[::2], main_budget[1::2], variant_budget[1::2]) if a != b}
    return changed if changed and set(changed) <= set(planned_model_settings()[::2]) else None


def baseline_variant_gap(main_rows, variant_rows) -> tuple[float, float, list[float]] | None:
    """PEMSCL as the main table trains it minus the ATLOP of a variant that changes model settings only,
    paired by seed; None for any other variant."""
    if "atlop" not in variant_rows or "pemscl" not in main_rows or not changed_settings(main_rows, variant_rows):
        return None
    return paired_difference({"pemscl": main_rows["pemscl"], "atlop": variant_rows["atlop"]}, "pemscl", "atlop")


def setting_effects(main_rows, variant_rows) -> list[str]:
    """For a variant that changes model settings only: what the change does to each of its rows (variant -
    main table, paired by seed)."""
    changed = changed_settings(main_rows, variant_rows)
    if not changed:
        return []
    change = ", ".join(f"`{flag} {main}` -> `{variant}`" for flag, (main, variant) in changed.items())
    lines = [f"Changed against the main table: {change}; everything else as there."]
    for name in ROW_ORDER:
        if name in ALIASES or name not in variant_rows or name not in main_rows:
            continue
        effect = paired_difference({"variant": variant_rows[name], "main": main_rows[name]}, "variant", "main")
        if effect:
            lines.append(f"- {name}, this variant - main table, test F1: {describe_difference(effect)}.")
    return lines


def verdicts(rows, speed, variants: dict[str, dict] | None = None) -> list[str]:
    """The claims under the main budget, then the same claims in each variant, then speed."""
    lines = method_claims(rows, "under the main budget") or ["- No row of the main budget has finished yet."]
    for name, variant_rows in (variants or {}).items():
        claims = method_claims(variant_rows, f"in variant `{name}`")
        if claims:
            lines += [f"- The same claims in variant `{name}` (see Diagnostic variants):"]
            lines += [f"  {line}" for line in claims]
        if gap := baseline_variant_gap(rows, variant_rows):
            lines.append(f"- PEMSCL (main budget) vs the ATLOP of variant `{name}` (see Diagnostic variants) on "
                         f"Re-DocRED test F1: {describe_difference(gap)} (target +1.5): {target_verdict(gap, 1.5)}.")
    if speed:
        lines += speed_verdicts(speed)
    return lines


TRAIN_RATIO_CAP, INFER_RATIO_CAP = 1.8, 2.0  # issue 16: full / eager encoder-only step, per batch


def speed_verdicts(speed: dict) -> list[str]:
    """Issue 16's targets against `speed.json`: the per-batch ratio caps on the densest bench batch, the recipe's
    training time and the prediction of the 500 test documents."""
    lines = []
    ratio = speed.get("train_step_ratio_vs_encoder")
    if ratio is not None:
        lines.append(f"- Full training step / encoder-only step over the bench batches: {ratio:.2f}x; inference "
                     f"{speed.get('infer_ratio_vs_encoder', float('nan')):.2f}x (the released code: about 11x "
                     f"training).")
    densest = max(speed.get("batches_per_batch", []), key=lambda b: b["shape"]["pairs"], default=None)
    if densest:
        train, infer = densest["fp32"]["train_ratio"], densest["fp32"]["infer_ratio"]
        within = train <= TRAIN_RATIO_CAP and infer <= INFER_RATIO_CAP
        line = (f"- On the densest batch ({densest['shape']['pairs']:,} pairs): training {train:.2f}x fp32 "
                f"(cap {TRAIN_RATIO_CAP}x; the released code 23.6x), inference {infer:.2f}x (cap {INFER_RATIO_CAP}x; "
                f"the released code 3.1x): "
                f"{'within the caps' if within else 'above a cap'}.")
        if train > TRAIN_RATIO_CAP:
            line += training_cap_diagnosis(speed)
        lines.append(line)
    epoch = speed.get("epoch", {})
    train = epoch.get("train", {}).get("fp32")
    if train:
        documents = 3 * epoch["train"]["docs"]
        projected, encoder_only = documents / train["docs_per_s"], documents / train["encoder_docs_per_s"]
        target = TRAIN_TARGET_S
        lines.append(f"- The recipe's training, fp32 (target at most {target:.0f} s, a tenth of the released code's "
                     f"{RELEASE_RECIPE_TRAIN_S:,} s): {projected:.0f} s projected from a whole measured epoch "
                     f"({train['docs_per_s']:.2f} docs/s); {'met' if projected <= target else 'missed'}. The eager "
                     f"encoder alone would take {encoder_only:.0f} s on this machine"
                     + (", itself over the target: the time goes to the encoder, then to the head's arithmetic "
                        "(see Speed)." if encoder_only > target else "."))
    predict = epoch.get("trainer_predict", {})
    if predict.get("fp32"):
        target = PREDICT_TARGET_DOCS_PER_S
        best = max(entry["docs_per_s"] for entry in predict.values())
        encoder = epoch.get("infer", {}).get("fp32", {}).get("encoder_docs_per_s")
        flops = epoch.get("infer", {}).get("forward_gflop", {})
        line = (f"- Predicting the {epoch.get('infer', {}).get('docs', 500)} test documents with `DocRETrainer.predict`: "
                + ", ".join(f"{entry['docs_per_s']:.2f} docs/s {precision}" for precision, entry in predict.items())
                + f" (target {target:.0f}): {'met' if best >= target else 'missed'}.")
        if encoder:
            line += f" The eager encoder alone runs {encoder:.2f} docs/s fp32 on the same batches"
            full = epoch["infer"]["fp32"].get("docs_per_s")
            if flops.get("encoder") and full:
                flop_ratio, time_ratio = flops["full"] / flops["encoder"], encoder / full
                line += (f"; the full forward counts {flop_ratio:.2f}x its FLOPs and takes {time_ratio:.2f}x its time"
                         + (": the head computes at the encoder's rate" if abs(time_ratio / flop_ratio - 1) < 0.1 else ""))
            line += "."
        lines.append(line)
    return lines


def speed_defaults_f1_verdict(same_recipe_runs: dict[str, list[dict]]) -> list[str]:
    """Issue 16: the speed defaults must leave the recipe's F1 unchanged within noise. `default` against
    `default+eager_random` (eager attention, shuffled batches), paired by seed; within noise means the paired mean
    lies within twice its standard error of zero."""
    result = paired_difference(same_recipe_runs, "default", "default+eager_random")
    if result is None or len(result[2]) < 2:
        return []
    mean, spread, differences = result
    bound = 2 * spread / math.sqrt(len(differences))
    within = abs(mean) < bound
    return [f"- The speed defaults (SDPA encoder with an explicit last layer, length-grouped batches) against eager "
            f"attention with shuffled batches, on the recipe: test F1 {describe_difference(result)}; "
            f"{'within' if within else 'outside'} seed noise (twice the standard error of the mean: {bound:.2f})."]


def measured_recipe_verdicts(idle_runs: dict[str, list[dict]]) -> list[str]:
    """Issue 16's end-to-end targets from whole recipe runs timed on 2 threads alone (`recipe/idle_timing/`):
    `train_runtime` against a tenth of the release's, and the test split's prediction rate against 2.5x its."""
    lines = []
    for record in (run for runs in idle_runs.values() for run in runs):
        metrics = record["metrics"]
        predicted = metrics["test_samples_per_second"]
        cpu = f", CPU {record['cpu_capability']}" if record.get("cpu_capability") else ""
        lines.append(
            f"- The recipe run end to end (`{record['config']}`, seed {record['seed']}, fp32, "
            f"{record['torch_threads']} threads alone{cpu}): `train_runtime` {metrics['train_runtime']:,.0f} s, "
            f"{RELEASE_RECIPE_TRAIN_S / metrics['train_runtime']:.1f}x faster than the released code's "
            f"{RELEASE_RECIPE_TRAIN_S:,} s (target at most {TRAIN_TARGET_S:.0f} s: "
            f"{'met' if metrics['train_runtime'] <= TRAIN_TARGET_S else 'missed'}); its test prediction "
            f"{predicted:.1f} docs/s including the scoring (target {PREDICT_TARGET_DOCS_PER_S:.0f}: "
            f"{'met' if predicted >= PREDICT_TARGET_DOCS_PER_S else 'missed'}); test F1 {metrics['test_f1']:.2f}.")
    return lines


def training_cap_diagnosis(speed: dict) -> str:
    """Where the densest batch's fp32 training step goes (the `breakdown` section) and the worst batch's ratio
    with Eq. 10's positive anchors (the `settings` section), when the training cap is missed."""
    parts = speed.get("breakdown", {}).get("fp32", {})
    seconds = {name: parts[f"train/{name}"]["median_s"] for name in ("full", "encoder", "bilinear", "loss.contrastive")
               if f"train/{name}" in parts}
    text = ""
    if len(seconds) == 4:
        text += (f" Of its {seconds['full']:.2f} s, the encoder takes {seconds['encoder']:.2f} s, the grouped bilinear "
                 f"{seconds['bilinear']:.2f} s and the contrastive term {seconds['loss.contrastive']:.2f} s (parts timed "
                 "alone): with every pair an anchor (the default) its similarity is [pairs, pairs].")
    positive = speed.get("settings", {}).get("contrastive_anchors=positive")
    if positive:
        text += (f" With `--contrastive_anchors positive` (Eq. 10 as printed) the worst batch trains at "
                 f"{positive['max_batch_train_ratio']:.2f}x.")
    return text


def load_variants(variants_root: Path = RESULTS / "variants") -> dict[str, dict[str, list[dict]]]:
    """Variant name -> its rows (`reproduce.py --variant NAME`), skipping variants without a finished run."""
    variants = {d.parent.name: load_rows(d) for d in sorted(variants_root.glob("*/rows"))}
    return {name: rows for name, rows in variants.items() if rows}


def result_cells(summary: dict | None) -> str:
    """The seeds, test F1, Ign F1, head / mid / tail F1 and dev F1 cells of a results table row."""
    return " | ".join([seeds_cell(summary)] + [cell(summary, metric) for metric in (
        "test_f1", "test_ign_f1", "test_head_f1", "test_mid_f1", "test_tail_f1", "eval_f1")])


# Why each kept variant differs from the main table (one sentence each; bench/notes.md has the measurements).
VARIANT_NOTES = {
    "epochs4_no_prior": "The first main table: 4 epochs with the defaults of then (Eq. 10's positive anchors, no NA "
                        "prior); at that budget a run spends up to an epoch predicting NA for every pair before it "
                        "learns, so the rows measure mostly when each seed leaves that start (test F1 spread up to "
                        "14 between seeds) rather than the losses.",
    "epochs8_no_prior": "The paper's 8 epochs with the same old defaults (positive anchors, no NA prior): the longer "
                        "budget leaves the all-NA start behind and the paper's ordering reappears, at a few seeds per "
                        "row; the main table repeats it with the defaults chosen on the held-out split.",
    "prior_off": "The main budget with one default switched off, the NA prior (`relation_bias_init=0`), so both "
                 "losses as their papers train them (ATLOP's paper and PEMSCL's Table 2 have no prior): it tells "
                 "how much of each row's F1 the prior carries and compares the two losses without it "
                 "(bench/notes.md, the main table's diagnosis).",
}


def _reproduce():
    import sys

    sys.path.insert(0, str(REPO))
    from bench import reproduce

    return reproduce


def planned_main_budget() -> list[str]:
    """The main table's budget as `bench/reproduce.py` runs it by default."""
    return _reproduce().main_budget_flags()


def planned_model_settings() -> list[str]:
    """The model settings a variant may change (`bench/reproduce.py --model_setting`), as `--flag value` pairs."""
    return list(_reproduce().MODEL_SETTINGS)


def budget_summary(flags: list[str]) -> dict:
    """`--name value` training flags as {name: value} (numbers as numbers, bare flags as True)."""
    out: dict = {}
    index = 0
    while index < len(flags):
        name = flags[index].lstrip("-")
        if index + 1 < len(flags) and not flags[index + 1].startswith("--"):
            value: object = flags[index + 1]
            try:
                number = float(value)
                value = int(number) if number.is_integer() else number
            except ValueError:
                pass
            index += 2
        else:
            value, index = True, index + 1
        out[name] = value
    return out


def variant_sections(main_rows, variants: dict[str, dict[str, list[dict]]]) -> list[str]:
    """Diagnostic runs outside the main tables (from :func:`load_variants`), one small table each, next to
    the same rows under the main budget (`main_rows`)."""
    out = []
    for variant, rows in variants.items():
        budget = next(iter(rows.values()))[0]["budget"]
        out += [f"### Variant `{variant}`", ""] + ([VARIANT_NOTES[variant], ""] if variant in VARIANT_NOTES else [])
        out += [f"Budget: `{' '.join(budget)}`.", "",
                "| row | seeds | test F1 | test Ign F1 | head F1 | mid F1 | tail F1 | dev F1 | test F1, main budget, same seeds |",
                "|---|---|---|---|---|---|---|---|---|"]
        for name in ROW_ORDER:
            if name not in rows or name in ALIASES:
                continue
            seeds = {r["seed"] for r in rows[name]}
            same_seeds = [r for r in main_rows.get(name, []) if r["seed"] in seeds]
            main = aggregate(same_seeds) if same_seeds else None
            out.append(f"| {name} | {result_cells(aggregate(rows[name]))} | {cell(main, 'test_f1')} |")
        comparisons = []
        if gap := paired_difference(rows, "pemscl", "atlop"):
            comparisons.append(f"PEMSCL - ATLOP test F1 in this variant: {describe_difference(gap)}.")
        if gap := baseline_variant_gap(main_rows, rows):
            comparisons.append(f"PEMSCL (main budget) - ATLOP of this variant, test F1: {describe_difference(gap)}.")
        for line in comparisons:
            out += ["", line]
        if effects := setting_effects(main_rows, rows):
            out += [""] + effects
        out.append("")
    return (["## Diagnostic variants", ""] + out) if out else []


def per_seed_table(rows) -> list[str]:
    """Test F1 of every run, one column per seed, with its wall time and thread count."""
    seeds = sorted({record["seed"] for records in rows.values() for record in records})
    if not seeds:
        return []
    out = ["## Every run", "",
           "Test F1 per seed (minutes, torch threads). Seed 0 ran one row at a time with 2 threads; later seeds "
           "ran two rows at once with one thread each, which is why their wall time is longer. Each seed also "
           "draws its own 50 held-out documents. † = never left the all-NA state within the budget "
           f"(best dev F1 < {STUCK_DEV_F1:g}).", "",
           "| row | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for name in ROW_ORDER:
        if name in ALIASES:
            continue
        by_seed = {record["seed"]: record for record in rows.get(name, [])}
        cells = []
        for seed in seeds:
            record = by_seed.get(seed)
            if record is None:
                cells.append("-")
            else:
                threads = record.get("torch_threads", 2)  # seed-0 records predate the field: 2 threads
                marker = " †" if is_stuck(record) else ""
                cells.append(f"{record['metrics']['test_f1']:.2f}{marker} ({record['minutes']:.0f} min, {threads})")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


# ------------------------------------------------------------------ the released code's recipe (bench/recipe.py)
RECIPE_DIR = RESULTS / "recipe"
# The released code on the same recipe, measured on this machine (issue 12): test F1 at seeds 66 and 67.
RELEASE_TEST_F1 = {66: 41.0, 67: 41.5}
RELEASE_TRAIN_RUNTIME_S = "3,539 (2 threads, idle machine)"  # issue 16, measured on this machine type
SAME_RECIPE_CONFIGS = ("default", "default+eager_random", "default+bf16")
FACTOR_SETTINGS = {  # factor -> (the project's setting, the released code's), as in bench/recipe.py
    "d1": ("768", "1024"),
    "init": ("normal", "fan_in_uniform"),
    "anchors": ("positive", "all"),
    "average": ("inside", "outside"),
}


def load_recipe(stage: str, recipe_dir: Path = RECIPE_DIR) -> dict[str, list[dict]]:
    """Configuration -> its runs of one stage (`diagnostic` or `same_recipe`)."""
    runs = defaultdict(list)
    for path in sorted((recipe_dir / stage).glob("*__seed*.json")):
        record = json.loads(path.read_text())
        runs[record["config"]].append(record)
    return runs


def config_modifiers(name: str) -> tuple[str, list[str]]:
    """`release+prior-d1` -> ("release", ["+prior", "-d1"]): the starting setting and its changes, in order."""
    start = re.match(r"[a-z_]+", name).group(0)
    return start, re.findall(r"[+-][a-z0-9_]+", name[len(start):])


def config_factors(name: str) -> dict[str, str]:
    """The factor settings of a diagnostic configuration name (`project`, `release-init`, `release+prior-d1`, ...)
    and its NA prior (`+prior`: `--relation_bias_init 4.6`)."""
    start, modifiers = config_modifiers(name)
    side = 0 if start == "project" else 1
    switched = {modifier[1:] for modifier in modifiers}
    factors = {factor: settings[1 - side if factor in switched else side] for factor, settings in FACTOR_SETTINGS.items()}
    return {**factors, "prior": "4.6" if "prior" in switched else "0"}


def compared_configuration(name: str, measured=None) -> str:
    """What a configuration is compared with: itself without its last change (`release+prior-d1` ->
    `release+prior`, `project+d1` -> `project`); with `measured` (names that have runs), without as many of its
    last changes as it takes to reach a measured one (`release+prior-d1-init-average` -> `release+prior-d1` when
    no `release+prior-d1-init` ran)."""
    start, modifiers = config_modifiers(name)
    for kept in range(len(modifiers) - 1, -1, -1):
        candidate = start + "".join(modifiers[:kept])
        if measured is None or candidate in measured:
            return candidate
    return start


def mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def diagnostic_table(runs: dict[str, list[dict]]) -> list[str]:
    """One row per configuration: its factors, held-out F1 (what decisions read), the paired change against
    its starting configuration, and test F1 for information."""
    if not runs:
        return []
    by_seed = {name: {r["seed"]: r["metrics"] for r in records} for name, records in runs.items()}
    out = ["| configuration | d1 | head init | anchors | average | NA prior | seeds | held-out F1 | "
           "compared with (itself without its last changes) | change, paired by seed (seeds) | test F1 (not used to decide) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = ["project"] + [f"project+{f}" for f in FACTOR_SETTINGS] + ["release"] + [f"release-{f}" for f in FACTOR_SETTINGS]
    order += sorted((name for name in by_seed if name not in order), key=lambda name: (len(name), name))  # `X+prior`, ...
    for name in order:
        if name not in by_seed:
            continue
        metrics = by_seed[name]
        held_out = [m["eval_f1"] for m in metrics.values()]
        start = compared_configuration(name, by_seed)
        change, compared = "-", "-"
        if start != name and start in by_seed:
            compared = start
            paired = sorted(metrics.keys() & by_seed[start].keys())
            change = mean_spread([metrics[s]["eval_f1"] - by_seed[start][s]["eval_f1"] for s in paired])
            change = f"{change} ({len(paired)})" if paired else "-"
        factors = config_factors(name)
        out.append(f"| {name} | " + " | ".join(factors.values()) + f" | {len(metrics)} | {mean_spread(held_out)} | "
                   f"{compared} | {change} | {mean_spread([m['test_f1'] for m in metrics.values()])} |")
    return out


def diagnostic_stuck_note(runs: dict[str, list[dict]]) -> list[str]:
    """The diagnostic runs that never left the all-NA state: they make a mean over seeds meaningless."""
    stuck = [(name, r) for name in sorted(runs) for r in sorted(runs[name], key=lambda r: r["seed"]) if is_stuck(r)]
    if not stuck:
        return []
    named = ", ".join(f"{name} seed {r['seed']} ({r['metrics']['eval_f1']:.2f})" for name, r in stuck)
    with_prior = [r for name, records in runs.items() if "+prior" in name for r in records]
    prior_note = (f" Every one of the {len(with_prior)} runs with the NA prior left it."
                  if with_prior and not any("+prior" in name for name, _ in stuck) else "")
    return [f"Never left the all-NA state within the budget (held-out F1 below {STUCK_DEV_F1:g} after "
            f"every epoch; final held-out F1 in brackets): {named}.{prior_note}", ""]


# Issue 12's decision rule, written down before the combinations ran (bench/notes.md): going back to the paper's
# setting "costs F1" only if held-out F1 drops at every seed and by at least this much on average; otherwise it is
# a tie, and ties go to the paper as printed.
DECISION_BASE = "release+prior"
DECISION_MIN_COST = 1.0
DECISION_SEEDS = 3
DEFAULT_CANDIDATES = ("release+prior-d1", "release+prior-d1-average", "release+prior-d1-init-average")


def decision_rows(runs: dict[str, list[dict]]) -> list[tuple[str, list[float], str]]:
    """(configuration, held-out F1 change per seed against `DECISION_BASE`, verdict) for every configuration of the
    form `release+prior-...`: "costs F1", "tie", or "pending" (fewer than `DECISION_SEEDS` paired seeds, every one
    lower so far)."""
    base = {r["seed"]: r["metrics"]["eval_f1"] for r in runs.get(DECISION_BASE, [])}
    out = []
    for name in sorted(runs, key=lambda name: (len(name), name)):
        if not name.startswith(DECISION_BASE + "-"):
            continue
        changes = [r["metrics"]["eval_f1"] - base[r["seed"]] for r in sorted(runs[name], key=lambda r: r["seed"])
                   if r["seed"] in base]
        if any(change >= 0 for change in changes):
            verdict = "tie"  # settled at the first seed that is not lower: "costs F1" needs every seed lower
        elif len(changes) < DECISION_SEEDS:
            verdict = "pending"
        elif statistics.fmean(changes) <= -DECISION_MIN_COST:
            verdict = "costs F1"
        else:
            verdict = "tie"
        out.append((name, changes, verdict))
    return out


def chosen_default(rows: list[tuple[str, list[float], str]]) -> str | None:
    """The most paper-like of `DEFAULT_CANDIDATES` (the most factors back to the paper) whose change is a tie; None
    while a more paper-like candidate is still pending (it could still win)."""
    verdicts = {name: verdict for name, _, verdict in rows}
    for name in reversed(DEFAULT_CANDIDATES):
        verdict = verdicts.get(name, "pending")
        if verdict == "pending":
            return None
        if verdict == "tie":
            return name
    return None


def decision_table(runs: dict[str, list[dict]]) -> list[str]:
    """The rule applied: each `release+prior-...` configuration's held-out change against `release+prior`, its
    verdict, and the defaults it selects."""
    rows = decision_rows(runs)
    if not rows:
        return []
    out = [f"Each configuration against `{DECISION_BASE}`, paired by seed (held-out F1). The rule, fixed before the "
           f"combinations ran: going back to the paper's setting costs F1 only if it lowers held-out F1 at every one "
           f"of {DECISION_SEEDS} seeds and by at least {DECISION_MIN_COST:g} on average; otherwise it is a tie, and "
           "ties go to the paper as printed. The defaults are the most paper-like combination whose change is a tie.",
           "", "| configuration | change per seed | mean ± sd | verdict |", "|---|---|---|---|"]
    for name, changes, verdict in rows:
        out.append(f"| {name} | {', '.join(f'{c:+.2f}' for c in changes)} | {mean_spread(changes)} | {verdict} |")
    chosen = chosen_default(rows)
    if chosen:
        factors = config_factors(chosen)
        out += ["", f"Selected defaults: `{chosen}`: d1 = {factors['d1']}, head init `{factors['init']}`, "
                    f"`{factors['anchors']}` anchors, `{factors['average']}` average, and the NA prior (shipped as "
                    "`relation_bias_init=\"auto\"`, log 96 = 4.56)."]
    else:
        out += ["", "Selected defaults: pending (a candidate still runs)."]
    return out


PRIOR_CURVES = (("project", "C0", "--"), ("release", "C3", "--"), ("project+prior", "C0", "-"), ("release+prior", "C3", "-"))


def plot_prior_curves(runs: dict[str, list[dict]], path) -> bool:
    """Held-out F1 after each epoch of the diagnostic's starting configurations, without (dashed) and with
    (solid) the NA prior: every seed faint, the mean bold. Returns False (writes nothing) without curves."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for name, color, style in PRIOR_CURVES:
        curves = [dict(record["dev_f1_per_epoch"]) for record in runs.get(name, []) if record.get("dev_f1_per_epoch")]
        if not curves:
            continue
        epochs = sorted(set.intersection(*(set(curve) for curve in curves)))
        for curve in curves:
            ax.plot(epochs, [curve[e] for e in epochs], style, color=color, alpha=0.25, linewidth=1)
        ax.plot(epochs, [statistics.fmean(curve[e] for curve in curves) for e in epochs], style, color=color,
                marker="o", markersize=4, linewidth=2, label=f"{name} (mean of {len(curves)} seeds)")
        ax.set_xticks(epochs)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out F1 (%), 50 documents")
    ax.set_title("The released code's recipe: the all-NA start and the NA prior\n(dashed: relation biases as "
                 "drawn; solid: 4.6 below the threshold)", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def same_recipe_summary(runs: dict[str, list[dict]], config: str = "default") -> dict | None:
    """One configuration's entry of summary.json on the full recipe (`same_recipe` is the chosen defaults,
    `default`; its speed and precision variants are listed beside it)."""
    records = sorted(runs.get(config, []), key=lambda r: r["seed"])
    if not records:
        return None
    return {
        "config": config,
        "seeds": [r["seed"] for r in records],
        "test_f1": [round(r["metrics"]["test_f1"], 2) for r in records],
        "test_ign_f1": [round(r["metrics"]["test_ign_f1"], 2) for r in records],
        "train_runtime_s": [round(r["metrics"]["train_runtime"], 1) for r in records],
        "torch_threads": [r.get("torch_threads") for r in records],
    }


def flag_value(flags: list[str], flag: str) -> str | None:
    """The value after the last `flag` in a flag list (the last one wins, as argparse does)."""
    values = [flags[index + 1] for index, item in enumerate(flags[:-1]) if item == flag]
    return values[-1] if values else None


def current_demo_epochs() -> str:
    """`--num_train_epochs` of `run_docre.py --demo` as the checkout ships it (read from its source: importing
    run_docre would import transformers)."""
    import re

    source = (REPO / "run_docre.py").read_text(encoding="utf-8")
    return re.search(r'"--num_train_epochs", "([^"]+)"', source[source.index("def demo_arguments"):]).group(1)


def demo_summary(runs: dict[str, list[dict]]) -> dict | None:
    """The `demo` entry of summary.json: `run_docre.py --demo` as shipped, one run per seed."""
    records = sorted(runs.get("default", []), key=lambda r: r["seed"])
    # Only the runs of the demo as it ships: a run of an earlier demo budget is not one of its seeds.
    shipped = current_demo_epochs()
    records = [r for r in records if flag_value(r.get("recipe", []), "--num_train_epochs") == shipped]
    if not records:
        return None
    test_f1 = [round(r["metrics"]["test_f1"], 2) for r in records]
    return {"seeds": [r["seed"] for r in records], "test_f1": test_f1, "spread": round(max(test_f1) - min(test_f1), 2),
            "minutes": [r["minutes"] for r in records], "torch_threads": [r.get("torch_threads") for r in records],
            "num_train_epochs": float(shipped)}


DEMO_SPREAD_TARGET, DEMO_MINUTES_TARGET = 1.5, 20  # issue 12: seeds within 1.5 test F1, under 20 minutes on 2 cores


def demo_verdict(demo: dict | None) -> list[str]:
    """The demo's targets against its runs (`demo_summary`)."""
    if not demo:
        return []
    runs = ", ".join(f"{f1:.2f} (seed {seed})" for seed, f1 in zip(demo["seeds"], demo["test_f1"]))
    alone = all(threads == 2 for threads in demo["torch_threads"])
    if len(demo["seeds"]) < 3:
        verdict = "does not hold yet"
    else:
        verdict = "holds" if demo["spread"] <= DEMO_SPREAD_TARGET else "missed"
    line = (f"- `run_docre.py --demo` ({demo['num_train_epochs']:g} epochs): test F1 {runs}, "
            f"spread {demo['spread']:.2f} (target at most {DEMO_SPREAD_TARGET}, 3 seeds): {verdict}; "
            f"{max(demo['minutes']):.1f} minutes at most")
    if alone:
        line += f" on 2 threads alone (target under {DEMO_MINUTES_TARGET})."
    else:
        line += (" with 1 thread beside another run (an upper bound for 2 cores alone; "
                 f"target under {DEMO_MINUTES_TARGET}).")
    return [line]


def recipe_sections(diagnostic: dict[str, list[dict]], same_recipe: dict[str, dict]) -> list[str]:
    """`same_recipe`: configuration -> its `same_recipe_summary`."""
    if not diagnostic and not same_recipe:
        return []
    out = ["## The released code's recipe (bench/recipe.py)", "",
           "MiniLM-L6, 3 epochs, batch 4, learning rate 5e-5 / 1e-4 (head), 6% warmup, AdamW eps 1e-6, no weight "
           "decay, clipping 1.0, fp32, tau 0.2, lambda 0.1, the final model scored. The released code differs from "
           "the paper as printed in four settings: d1 = 1024 (its `DocREModel` default) instead of ATLOP's 768; "
           "`nn.Linear`'s fan-in uniform initialization of the head instead of normal(0, 0.02); every pair a "
           "contrastive anchor (it zeroes the NA label column, so NA pairs take Eq. 9) instead of the pairs with a "
           "relation (Eq. 10); and the mean of the log-probabilities over positives (`outside`) instead of Eq. 8's "
           "log of the mean (`inside`).", ""]
    if diagnostic:
        out += ["### One factor at a time", "",
                "Trained on 450 documents of `dev_revised.json`; held-out F1 on the other 50 (the split follows the "
                "seed, so configurations are compared seed by seed). `project+X` is the project's setting with "
                "factor X taken from the release; `release-X` the release's with X taken from the project.", ""]
        out += diagnostic_table(diagnostic) + [""] + diagnostic_stuck_note(diagnostic)
        if plot_prior_curves(diagnostic, RESULTS / "recipe_prior_curves.png"):
            out += ["![held-out F1 per epoch, with and without the NA prior](results/recipe_prior_curves.png)", ""]
        if any("+prior" in name for name in diagnostic):
            out += ["`X+prior`: configuration X with every relation logit starting 4.6 = log 96 below the threshold "
                    "(`--relation_bias_init 4.6`), a candidate fix of the all-NA start (bench/notes.md); "
                    "`release+prior-X` is `release+prior` with factor X back to the project's (the paper's) setting.", ""]
        decision = decision_table(diagnostic)
        if decision:
            out += ["### Choosing the defaults", ""] + decision + [""]
    if same_recipe:
        out += ["### The defaults on the full recipe", "",
                "All 500 documents of `dev_revised.json`, tested on `test_revised.json`. `default` is the shipped "
                "configuration; `default+eager_random` runs the encoder eagerly and shuffles batches without "
                "grouping by length (what the speed defaults replace), `default+bf16` trains under bf16 autocast. "
                "The change is paired by seed against `default`.", "",
                "| configuration | seeds | test F1 | test Ign F1 | train runtime (s; torch threads) | change in test F1 vs `default` |",
                "|---|---|---|---|---|---|"]
        default = same_recipe.get("default")
        by_seed = dict(zip(default["seeds"], default["test_f1"])) if default else {}
        for config, entry in same_recipe.items():
            paired = [f - by_seed[s] for s, f in zip(entry["seeds"], entry["test_f1"]) if s in by_seed]
            change = "-" if config == "default" or not paired else f"{mean_spread(paired)} ({len(paired)})"
            out.append(f"| {config} | {', '.join(map(str, entry['seeds']))} | {mean_spread(entry['test_f1'])} | "
                       f"{mean_spread(entry['test_ign_f1'])} | {mean_spread(entry['train_runtime_s'])}; "
                       f"{'/'.join(sorted({str(t) for t in entry['torch_threads']}))} | {change} |")
        seeds = [s for s in same_recipe.get("default", {}).get("seeds", []) if s in RELEASE_TEST_F1]
        if seeds:
            out.append(f"| the released code | {', '.join(map(str, seeds))} | "
                       f"{mean_spread([RELEASE_TEST_F1[s] for s in seeds])} | - | {RELEASE_TRAIN_RUNTIME_S} | - |")
        out.append("")
    return out


def speed_table(speed: dict) -> list[str]:
    """The speed run as a Markdown table: ratios, throughput and peak memory, one column per precision."""
    precisions = ("fp32", "bf16")
    measured = {"fp32": speed, "bf16": speed.get("bf16", {})}
    memory = speed.get("memory", {})

    def row(label, values_by_precision, key, template):
        cells = [template.format(values_by_precision[p][key]) if key in values_by_precision.get(p, {}) else "-"
                 for p in precisions]
        return f"| {label} | " + " | ".join(cells) + " |"

    rows = ["| | " + " | ".join(precisions) + " |", "|---" * (len(precisions) + 1) + "|"]
    for key, label, template in (
        ("train_step_ratio_vs_encoder", "train step / encoder-only step", "{:.2f}x"),
        ("infer_ratio_vs_encoder", "inference / encoder-only inference", "{:.2f}x"),
        ("train_docs_per_s", "training docs/s (full model)", "{:.2f}"),
        ("encoder_train_docs_per_s", "training docs/s (encoder only)", "{:.2f}"),
        ("infer_docs_per_s", "inference docs/s (full model)", "{:.2f}"),
        ("encoder_infer_docs_per_s", "inference docs/s (encoder only)", "{:.2f}"),
    ):
        rows.append(row(label, measured, key, template))
    if memory:
        for key, label in (("full_train_mib", "peak memory, training step"),
                           ("encoder_train_mib", "peak memory, encoder-only training step"),
                           ("full_infer_mib", "peak memory, inference"),
                           ("encoder_infer_mib", "peak memory, encoder-only inference")):
            rows.append(row(f"{label} (MiB, {memory.get('pairs', '?')} pairs)", memory, key, "{:.0f}"))
    return rows


def settings_table(settings: dict) -> list[str]:
    """The `settings` section: full / eager encoder-only step ratios per head setting, over the batches and on
    the worst batch."""
    rows = ["| setting | training (worst batch) | inference (worst batch) |", "|---|---|---|"]
    for name in settings.get("flags", {}):
        measured = settings[name]
        label = "the defaults" if name == "default" else f"`--{name.replace('=', ' ')}`"
        rows.append(f"| {label} | {measured['train_ratio']:.2f}x ({measured['max_batch_train_ratio']:.2f}x) | "
                    f"{measured['infer_ratio']:.2f}x ({measured['max_batch_infer_ratio']:.2f}x) |")
    return rows


RELEASE_RECIPE_TRAIN_S = 3539  # the released code on issue 12's recipe (500 documents, 3 epochs, fp32, 2 cores)
RELEASE_TEST_DOCS_PER_S = 8.1  # the released code predicting the 500 test documents (batch 2)
TRAIN_TARGET_S = RELEASE_RECIPE_TRAIN_S / 10  # issue 16: a tenth of the release's training time
PREDICT_TARGET_DOCS_PER_S = 2.5 * RELEASE_TEST_DOCS_PER_S  # issue 16: 2.5x the release's prediction rate


def epoch_table(epoch: dict) -> list[str]:
    """What users feel (`bench/speed.py`'s epoch section): whole splits, fp32 and bf16, with the issue's targets."""
    train, infer, predict = epoch.get("train", {}), epoch.get("infer", {}), epoch.get("trainer_predict", {})
    precisions = ("fp32", "bf16")

    def row(label, source, template, value=lambda entry: entry):
        cells = [template.format(value(source[p])) if p in source else "-" for p in precisions]
        return f"| {label} | " + " | ".join(cells) + " |"

    rows = ["| | " + " | ".join(precisions) + " |", "|---" * (len(precisions) + 1) + "|"]
    if train:
        rows += [
            row(f"training docs/s, one length-grouped epoch of {train['docs']} documents (batch {train['batch_size']})",
                train, "{:.2f}", lambda e: e["docs_per_s"]),
            row("the eager encoder alone on the same batches", train, "{:.2f}", lambda e: e["encoder_docs_per_s"]),
            row("full / encoder step, mean over batches (worst batch)", train, "{}",
                lambda e: f"{e['mean_batch_ratio']:.2f}x ({e['max_batch_ratio']:.2f}x)"),
            row(f"the recipe's {3 * train['docs']} training documents at this speed, s (target "
                f"{TRAIN_TARGET_S:.0f})", train, "{:.0f}", lambda e: 3 * train["docs"] / e["docs_per_s"]),
            row("the same with the eager encoder alone, s", train, "{:.0f}",
                lambda e: 3 * train["docs"] / e["encoder_docs_per_s"]),
        ]
    if infer:
        rows += [
            row(f"inference docs/s, {infer['docs']} documents in length-sorted batches of {infer['batch_size']}",
                infer, "{:.2f}", lambda e: e["docs_per_s"]),
            row("the eager encoder alone on the same batches", infer, "{:.2f}", lambda e: e["encoder_docs_per_s"]),
            row("full / encoder, ratio of the sums", infer, "{:.2f}x", lambda e: e["ratio_of_sums"]),
        ]
    if predict:
        rows += [
            row(f"`DocRETrainer.predict` docs/s (target {PREDICT_TARGET_DOCS_PER_S:.0f})", predict, "{:.2f}",
                lambda e: e["docs_per_s"]),
            row("`DocRETrainer.predict` peak RSS, MiB", predict, "{:.0f}", lambda e: e["peak_rss_mib"]),
        ]
    if train:
        rows += ["", f"Padding: {train['padding_share_length_grouped']:.0%} of the padded token grid with "
                     f"length-grouped batches, {train['padding_share_shuffled']:.0%} shuffled."]
    return rows


def main():
    rows = load_rows()
    summaries = {name: aggregate(records) for name, records in rows.items()}
    speed_path = RESULTS / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.exists() else {}
    summary = {
        "rows": {name: summaries[name] for name in ROW_ORDER if name in summaries},
        "speed": {k: speed[k] for k in ("train_step_ratio_vs_encoder", "infer_ratio_vs_encoder",
                                         "train_docs_per_s", "infer_docs_per_s") if k in speed},
    }
    diagnostic = load_recipe("diagnostic")
    same_recipe_runs = load_recipe("same_recipe")
    same_recipe = {config: same_recipe_summary(same_recipe_runs, config) for config in SAME_RECIPE_CONFIGS
                   if config in same_recipe_runs}
    if diagnostic:
        summary["diagnostic"] = {name: {"seeds": [r["seed"] for r in records],
                                        "held_out_f1": [round(r["metrics"]["eval_f1"], 2) for r in records],
                                        "test_f1": [round(r["metrics"]["test_f1"], 2) for r in records]}
                                 for name, records in sorted(diagnostic.items())}
    if "default" in same_recipe:
        summary["same_recipe"] = same_recipe["default"]
    variants_of_default = {config: entry for config, entry in same_recipe.items() if config != "default"}
    if variants_of_default:
        summary["same_recipe_variants"] = variants_of_default
    demo = demo_summary(load_recipe("demo"))
    if demo:
        summary["demo"] = demo
    # The budget the main rows ran with; before the first one finishes, the one `bench/reproduce.py` will run.
    budget = next((records[0]["budget"] for records in rows.values() if records), None) or planned_main_budget()
    summary["main_budget"] = budget_summary(budget)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1))
    # The main table's figures, drawn from its rows only: one with nothing to draw yet is removed (a stale
    # figure of another budget must not stand in for it).
    main_figures = []
    for title, name, plot in (("sampling ratio", "sampling_ratio.png", plot_sweep),
                              ("F1 by relation frequency", "f1_by_frequency.png", plot_frequency_f1),
                              ("margins", "margins.png", plot_margins)):
        if plot(rows, RESULTS / name):
            main_figures += [f"![{title}](results/{name})", ""]
        else:
            (RESULTS / name).unlink(missing_ok=True)
    variants = load_variants()
    has_curves = plot_dev_curves(rows, variants, RESULTS / "dev_curves.png")

    out = ["# Reproducing PEMSCL at CPU scale", ""]
    out += ["Generated by `bench/report.py` from `bench/results/` (rows by `bench/reproduce.py`, speed by "
            "`bench/speed.py`). Encoder: MiniLM-L6 (22M parameters) instead of RoBERTa-large; training data: "
            "Re-DocRED `dev_revised.json` (450 documents, 50 held out for model selection) instead of the 3,053 "
            "training documents; test: Re-DocRED `test_revised.json` (500 documents). Absolute F1 is therefore far "
            "below the paper's; the comparisons between rows are what this reproduces. Mean ± standard deviation over seeds.", ""]
    out += [f"Budget of every row{'' if rows else ' (none has finished yet)'}: `{' '.join(budget)}`.", ""]
    out += paper_claims_table(rows, variants)
    out += (["## Claims", ""] + verdicts(rows, speed, variants) + speed_defaults_f1_verdict(same_recipe_runs)
            + measured_recipe_verdicts(load_recipe("idle_timing"))
            + demo_verdict(demo) + [""])
    out += recipe_sections(diagnostic, same_recipe)
    out += ["## Main results and ablations (Tables 2 and 3)", "",
            "| row | seeds | test F1 | test Ign F1 | head F1 | mid F1 | tail F1 | dev F1 | paper test F1 | paper head / mid / tail |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROW_ORDER[:6]:
        s, p = summaries.get(name), PAPER.get(name, {})
        paper_groups = " / ".join(f"{p[k]:.2f}" for k in ("head_f1", "mid_f1", "tail_f1") if k in p) or "-"
        out.append(f"| {name} | {result_cells(s)} | {p.get('test_f1', p.get('dev_f1', '-'))} | {paper_groups} |")
    out += ["", "The paper's ablation numbers (Table 3) are dev F1 with RoBERTa-large.", ""]
    out += ["## Incomplete training labels (Table 4, Figure 2)", "",
            "Half of the training triples dropped (seeded): about DocRED's degree of incompleteness relative to "
            "Re-DocRED. Paper (OOG regime, Gold-Test F1): ATLOP 47.65, PEMSCL 51.10, PEMSCL with sampling 0.1: 64.03.", "",
            "| row | seeds | test F1 | test Ign F1 | dev F1 |", "|---|---|---|---|---|"]
    for name in ROW_ORDER[6:]:
        s = summaries.get(name)
        label = f"{name} (= {ALIASES[name]}: ratio 1.0 keeps every negative label)" if name in ALIASES else name
        out.append(f"| {label} | {seeds_cell(s)} | {cell(s, 'test_f1')} | {cell(s, 'test_ign_f1')} | {cell(s, 'eval_f1')} |")
    out += [""] + main_figures
    if has_curves:
        out += ["![dev F1 per epoch](results/dev_curves.png)", ""]
    out += per_seed_table(rows) + [""]
    out += variant_sections(rows, variants)
    if speed:
        out += ["## Speed", "", f"Machine: {speed.get('machine', '?')}.", ""]
        out += speed_table(speed)
        out += ["", "![scaling](results/speed_scaling.png)", ""]
        if speed.get("epoch"):
            out += ["### Whole splits (what users feel)", ""] + epoch_table(speed["epoch"]) + [""]
        if speed.get("settings"):
            out += ["### Head settings (fp32, the bench batches)", ""] + settings_table(speed["settings"]) + [""]
    if NOTES.exists():
        out += ["## Diagnosis and notes", "", NOTES.read_text().strip(), ""]
    REPORT.write_text("\n".join(out))
    print(f"wrote {REPORT} and {RESULTS / 'summary.json'}")


if __name__ == "__main__":
    main()
