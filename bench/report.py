#!/usr/bin/env python
"""Write `bench/REPORT.md`, `bench/results/summary.json` and the plots from the results under `bench/results/` and
the registry (`bench/experiments.py`). Missing rows are reported as missing; nothing is trained.

    python bench/report.py
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from operator import itemgetter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.experiments import (  # noqa: E402
    ALIASES, DECISION_BASE, DECISION_MIN_COST, DECISION_SEEDS, DEFAULT_CANDIDATES, DEMO_EPOCHS, DEMO_MINUTES_TARGET,
    DEMO_SPREAD_TARGET, DIAGNOSTIC, EVIDENCE_MAX_RELATION_COST, EVIDENCE_SEEDS, EVIDENCE_THRESHOLDS, EVIDENCE_WEIGHTS,
    INFER_RATIO_CAP, MODEL_SETTINGS, PAPER, PAPER_CLAIMS, PEMSCL_GAIN_TARGET, PREDICT_TARGET_DOCS_PER_S,
    RELEASE_STEP_RATIOS, RELEASE_TEST_F1, RELEASE_TRAIN_S, ROWS, SAME_RECIPE_CONFIGS, SAMPLING_SHARE_TARGET,
    SWEEP_RATIOS, TABLE_ROWS, TRAIN_RATIO_CAP, TRAIN_TARGET_S, VARIANT_NOTES, budget_flags, parse_configuration,
)
from bench.harness import PRECISIONS, markdown_table  # noqa: E402

RESULTS = REPO / "bench" / "results"
REPORT = REPO / "bench" / "REPORT.md"
NOTES = REPO / "bench" / "notes.md"
TRAIN_FILE = REPO.parent / "shared" / "data" / "re-docred" / "dev_revised.json"
METRICS = ["test_f1", "test_ign_f1", "test_head_f1", "test_mid_f1", "test_tail_f1", "eval_f1"]
RESULT_COLUMNS = ["seeds", "test F1", "test Ign F1", "head F1", "mid F1", "tail F1", "dev F1"]
STUCK_DEV_F1 = 5.0  # a run whose best dev F1 stays below this never left the all-NA state within its budget


# ------------------------------------------------------------------------------------------ loading and statistics
def load_runs(folder: Path, key: str) -> dict[str, list[dict]]:
    runs = defaultdict(list)
    for path in sorted(folder.glob("*__seed*.json")):
        record = json.loads(path.read_text())
        runs[record[key]].append(record)
    return runs


def load_rows(rows_dir: Path = RESULTS / "rows") -> dict[str, list[dict]]:
    rows = load_runs(rows_dir, "row")
    rows.update({alias: rows[source] for alias, source in ALIASES.items() if source in rows})
    return rows


def load_variants(variants_root: Path = RESULTS / "variants") -> dict[str, dict[str, list[dict]]]:
    variants = {d.parent.name: load_rows(d) for d in sorted(variants_root.glob("*/rows"))}
    return {name: rows for name, rows in variants.items() if rows}


def is_stuck(record: dict) -> bool:
    """Best dev F1 (per-epoch curve included) below `STUCK_DEV_F1`; a run without dev F1 cannot be judged."""
    dev_f1 = record["metrics"].get("eval_f1")
    return dev_f1 is not None and max([f1 for _, f1 in record.get("dev_f1_per_epoch", [])] + [dev_f1]) < STUCK_DEV_F1


def by_seed(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["seed"])


def stuck_note(rows, *names: str) -> str:
    stuck = [f"{name} seed {r['seed']}" for name in names for r in by_seed(rows.get(name, [])) if is_stuck(r)]
    return (f" Never left the all-NA state within the budget (best dev F1 < {STUCK_DEV_F1:g}): {', '.join(stuck)}."
            if stuck else "")


def aggregate(records: list[dict]) -> dict:
    summary = {"seeds": len(records), "stuck_at_na": sum(is_stuck(r) for r in records)}
    for metric in METRICS:
        if values := [r["metrics"][metric] for r in records if metric in r["metrics"]]:
            summary[metric] = round(statistics.fmean(values), 2)
            summary[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
    summary["minutes_per_run"] = round(statistics.fmean(r["minutes"] for r in records), 1)
    return summary


def mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def seeds_cell(summary: dict | None) -> str:
    stuck = (summary or {}).get("stuck_at_na", 0)
    return "0" if not summary else f"{summary['seeds']} ({stuck} stuck at NA)" if stuck else str(summary["seeds"])


def cell(summary: dict | None, metric: str) -> str:
    if not summary or metric not in summary:
        return "-"
    return f"{summary[metric]:.2f}" + (f" ± {summary[metric + '_std']:.2f}" if summary.get("seeds", 0) > 1 else "")


def result_cells(summary: dict | None) -> str:
    return " | ".join([seeds_cell(summary)] + [cell(summary, metric) for metric in METRICS])


def per_seed(rows, name: str, metric: str = "test_f1") -> dict[int, float]:
    return {r["seed"]: r["metrics"][metric] for r in rows.get(name, []) if metric in r["metrics"]}


def paired_difference(rows, better: str, worse: str, metric: str = "test_f1") -> tuple[float, float, list] | None:
    a, b = per_seed(rows, better, metric), per_seed(rows, worse, metric)
    differences = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
    if not differences:
        return None
    return statistics.fmean(differences), statistics.stdev(differences) if len(differences) > 1 else 0.0, differences


def describe_difference(result: tuple[float, float, list[float]]) -> str:
    mean, spread, differences = result
    if len(differences) == 1:
        return f"{mean:+.2f} (1 seed)"
    values = ", ".join(f"{d:+.2f}" for d in differences)
    return f"{mean:+.2f} ± {spread:.2f} over {len(differences)} paired seeds ({values})"


def target_verdict(result: tuple[float, float, list[float]], target: float) -> str:
    """Whether a paired mean reaches `target`; short of it yet positive at every seed is a smaller, steady effect."""
    mean, _, differences = result
    if mean >= target:
        return "holds"
    if len(differences) > 1 and all(d > 0 for d in differences):
        return f"below target, though positive at all {len(differences)} seeds,"
    return "does not hold"


def noise_bound(result: tuple[float, float, list[float]]) -> float:
    """Twice the standard error of a paired mean: a mean within it is seed noise."""
    return 2 * result[1] / math.sqrt(len(result[2]))


def sign_verdict(result: tuple[float, float, list[float]]) -> str:
    """A claimed positive difference holds (or is reversed) with that sign at every seed and a mean beyond
    `noise_bound`; otherwise it is within seed noise."""
    mean, _, differences = result
    if len(differences) == 1:
        return "positive, 1 seed" if mean > 0 else "negative, 1 seed"
    if abs(mean) > noise_bound(result):
        if all(d > 0 for d in differences):
            return "holds"
        if all(d < 0 for d in differences):
            return "reversed"
    return "within seed noise"


def flag_value(flags: list[str], flag: str) -> str | None:
    values = [flags[index + 1] for index, item in enumerate(flags[:-1]) if item == flag]
    return values[-1] if values else None


def budget_summary(flags: list[str]) -> dict:

    def value(text: str):
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() else number

    return {flag[2:]: value(following) if following and not following.startswith("--") else True
            for flag, following in zip(flags, flags[1:] + [None]) if flag.startswith("--")}


# ------------------------------------------------------------------------------------------ the paper's claims
def method_claims(rows, budget: str) -> list[str]:
    lines = []
    if gap := paired_difference(rows, "pemscl", "atlop"):
        lines.append(f"- PEMSCL vs ATLOP loss on Re-DocRED test F1: {describe_difference(gap)} (target "
                     f"+{PEMSCL_GAIN_TARGET}): {target_verdict(gap, PEMSCL_GAIN_TARGET)} {budget}."
                     + stuck_note(rows, "pemscl", "atlop"))
    for ablated, term in (("pemscl_no_entropy", "the entropy term (Eq. 5-6)"),
                          ("pemscl_no_contrastive", "the contrastive term (Eq. 8-10)"),
                          ("pemscl_no_both", "both terms")):
        overall, tail = (paired_difference(rows, "pemscl", ablated, metric) for metric in ("test_f1", "test_tail_f1"))
        if overall and tail:
            lines.append(f"- Effect of {term} (pemscl - {ablated}): test F1 {describe_difference(overall)}; "
                         f"tail F1 {tail[0]:+.2f}. The paper: it helps, most on tail relations (Table 3)."
                         + stuck_note(rows, "pemscl", ablated))
    if recovered := paired_difference(rows, "drop50_pemscl_nls0.1", "drop50_pemscl"):
        lines.append(f"- Half the training labels dropped: negative sampling 0.1 vs none, test F1 "
                     f"{describe_difference(recovered)}." + stuck_note(rows, "drop50_pemscl_nls0.1", "drop50_pemscl"))
    sampled, clean = per_seed(rows, "drop50_pemscl_nls0.1"), per_seed(rows, "pemscl")
    if paired := sorted(sampled.keys() & clean.keys()):
        # Same seeds on both sides: the clean runs' F1 varies by several points from seed to seed.
        share = 100 * statistics.fmean(sampled[s] for s in paired) / statistics.fmean(clean[s] for s in paired)
        shares = ", ".join(f"seed {s}: {100 * sampled[s] / clean[s]:.1f}%" for s in paired)
        lines.append(f"- Half the training labels dropped, negative sampling 0.1: {share:.1f}% of the clean-label F1 "
                     f"over {len(paired)} paired seed(s) ({shares}) (target {SAMPLING_SHARE_TARGET}%): "
                     f"{'holds' if share >= SAMPLING_SHARE_TARGET else 'does not hold'} {budget}."
                     + stuck_note(rows, "drop50_pemscl_nls0.1"))
    return lines


def paper_claims_table(rows, variants: dict[str, dict]) -> list[str]:

    def verdict_cell(runs, better, worse, target):
        if not (result := paired_difference(runs, better, worse)):
            return "not run"
        verdict = target_verdict(result, target).rstrip(",") if target is not None else sign_verdict(result)
        return f"{describe_difference(result)}: {verdict}"

    out = ["## The paper's claims at this scale", "",
           "Each claim as a test-F1 difference between two rows, paired by seed. The paper's differences are "
           "RoBERTa-large on the full training set; here MiniLM-L6 on 450 documents, so the sizes are not "
           "comparable, the signs are. Without a target the claim is the sign: it holds when the difference is "
           "positive at every seed and its mean exceeds twice its standard error (reversed: the same, negative). "
           "The main table gives every row this project's NA prior; the last column trains both rows as the "
           "papers do, without it (variant `prior_off`).", ""]
    table = [[f"{claim}{f' (target {target:+.1f})' if target is not None else ''}", paper,
              *(verdict_cell(runs, better, worse, target) for runs in (rows, variants.get("prior_off", {})))]
             for claim, better, worse, paper, target in PAPER_CLAIMS]
    return out + markdown_table(["claim", "paper", "here: main table", "here: without the NA prior"], table) + [""]


def changed_settings(main_rows, variant_rows) -> dict[str, tuple[str, str]] | None:
    """`{flag: (main value, variant value)}` when the variant changed model settings only (so its rows pair with
    the main table's), else None."""
    main_budget, variant_budget = (next((records[0] for records in rows.values() if records), {}).get("budget")
                                   for rows in (main_rows, variant_rows))
    if not main_budget or not variant_budget or main_budget[::2] != variant_budget[::2]:
        return None
    changed = {flag: (a, b) for flag, a, b in zip(main_budget[::2], main_budget[1::2], variant_budget[1::2]) if a != b}
    return changed if changed and set(changed) <= set(MODEL_SETTINGS[::2]) else None


def baseline_variant_gap(main_rows, variant_rows) -> tuple[float, float, list[float]] | None:
    if "atlop" not in variant_rows or "pemscl" not in main_rows or not changed_settings(main_rows, variant_rows):
        return None
    return paired_difference({"pemscl": main_rows["pemscl"], "atlop": variant_rows["atlop"]}, "pemscl", "atlop")


def verdicts(rows, speed, variants: dict[str, dict] | None = None) -> list[str]:
    lines = method_claims(rows, "under the main budget") or ["- No row of the main budget has finished yet."]
    for name, variant_rows in (variants or {}).items():
        if claims := method_claims(variant_rows, f"in variant `{name}`"):
            lines += [f"- The same claims in variant `{name}` (see Diagnostic variants):"] + [f"  {c}" for c in claims]
        if gap := baseline_variant_gap(rows, variant_rows):
            lines.append(f"- PEMSCL (main budget) vs the ATLOP of variant `{name}` (see Diagnostic variants) on "
                         f"Re-DocRED test F1: {describe_difference(gap)} (target +{PEMSCL_GAIN_TARGET}): "
                         f"{target_verdict(gap, PEMSCL_GAIN_TARGET)}.")
    return lines + (speed_verdicts(speed) if speed else [])


# ------------------------------------------------------------------------------------------ speed
def speed_verdicts(speed: dict) -> list[str]:
    lines = []
    if (ratio := speed.get("train_step_ratio_vs_encoder")) is not None:
        lines.append(f"- Full training step / encoder-only step over the bench batches: {ratio:.2f}x; inference "
                     f"{speed.get('infer_ratio_vs_encoder', float('nan')):.2f}x (the released code: about "
                     f"{RELEASE_STEP_RATIOS['train']}x training).")
    if densest := max(speed.get("batches_per_batch", []), key=lambda b: b["shape"]["pairs"], default=None):
        train, infer = densest["fp32"]["train_ratio"], densest["fp32"]["infer_ratio"]
        within = train <= TRAIN_RATIO_CAP and infer <= INFER_RATIO_CAP
        lines.append(f"- On the densest batch ({densest['shape']['pairs']:,} pairs): training {train:.2f}x fp32 "
                     f"(cap {TRAIN_RATIO_CAP}x; the released code {RELEASE_STEP_RATIOS['densest_train']}x), inference "
                     f"{infer:.2f}x (cap {INFER_RATIO_CAP}x; the released code "
                     f"{RELEASE_STEP_RATIOS['densest_infer']}x): "
                     f"{'within the caps' if within else 'above a cap'}."
                     + (training_cap_diagnosis(speed) if train > TRAIN_RATIO_CAP else ""))
    epoch = speed.get("epoch", {})
    if train := epoch.get("train", {}).get("fp32"):
        documents = 3 * epoch["train"]["docs"]
        projected, encoder_only = documents / train["docs_per_s"], documents / train["encoder_docs_per_s"]
        lines.append(f"- The recipe's training, fp32 (target at most {TRAIN_TARGET_S:.0f} s, a tenth of the released "
                     f"code's {RELEASE_TRAIN_S:,} s): {projected:.0f} s projected from a whole measured epoch "
                     f"({train['docs_per_s']:.2f} docs/s); {'met' if projected <= TRAIN_TARGET_S else 'missed'}. The "
                     f"eager encoder alone would take {encoder_only:.0f} s on this machine"
                     + (", itself over the target: the time goes to the encoder, then to the head's arithmetic "
                        "(see Speed)." if encoder_only > TRAIN_TARGET_S else "."))
    if (predict := epoch.get("trainer_predict", {})).get("fp32"):
        infer = epoch.get("infer", {})
        best = max(entry["docs_per_s"] for entry in predict.values())
        line = (f"- Predicting the {infer.get('docs', 500)} test documents with `DocRETrainer.predict`: "
                + ", ".join(f"{entry['docs_per_s']:.2f} docs/s {precision}" for precision, entry in predict.items())
                + f" (target {PREDICT_TARGET_DOCS_PER_S:.0f}): "
                + f"{'met' if best >= PREDICT_TARGET_DOCS_PER_S else 'missed'}.")
        if encoder := infer.get("fp32", {}).get("encoder_docs_per_s"):
            line += f" The eager encoder alone runs {encoder:.2f} docs/s fp32 on the same batches"
            flops, full = infer.get("forward_gflop", {}), infer["fp32"].get("docs_per_s")
            if flops.get("encoder") and full:
                flop_ratio, time_ratio = flops["full"] / flops["encoder"], encoder / full
                line += (f"; the full forward counts {flop_ratio:.2f}x its FLOPs and takes {time_ratio:.2f}x its time"
                         + (": the head computes at the encoder's rate"
                            if abs(time_ratio / flop_ratio - 1) < 0.1 else ""))
            line += "."
        lines.append(line)
    return lines


def training_cap_diagnosis(speed: dict) -> str:
    parts = speed.get("breakdown", {}).get("fp32", {})
    seconds = {name: parts[f"train/{name}"]["median_s"] for name in ("full", "encoder", "bilinear", "loss.contrastive")
               if f"train/{name}" in parts}
    text = ""
    if len(seconds) == 4:
        text += (f" Of its {seconds['full']:.2f} s, the encoder takes {seconds['encoder']:.2f} s, the grouped bilinear "
                 f"{seconds['bilinear']:.2f} s and the contrastive term {seconds['loss.contrastive']:.2f} s "
                 "(parts timed "
                 "alone): with every pair an anchor (the default) its similarity is [pairs, pairs].")
    if positive := speed.get("settings", {}).get("contrastive_anchors=positive"):
        text += (f" With `--contrastive_anchors positive` (Eq. 10 as printed) the worst batch trains at "
                 f"{positive['max_batch_train_ratio']:.2f}x.")
    return text


def precision_rows(rows: list[tuple[str, dict, object, str]]) -> list[str]:
    """A fp32 / bf16 table; each row a label, {precision: source}, `read(source)` and a format ("-" when missing)."""
    table = []
    for label, sources, read, template in rows:
        values = {}
        for precision in PRECISIONS:
            with contextlib.suppress(KeyError):
                values[precision] = read(sources[precision])
        table.append([label, *(template.format(values[p]) if p in values else "-" for p in PRECISIONS)])
    return markdown_table(["", *PRECISIONS], table)


def speed_table(speed: dict) -> list[str]:
    measured, memory = {"fp32": speed, "bf16": speed.get("bf16", {})}, speed.get("memory", {})
    rows = [(label, measured, itemgetter(key), template) for key, label, template in (
        ("train_step_ratio_vs_encoder", "train step / encoder-only step", "{:.2f}x"),
        ("infer_ratio_vs_encoder", "inference / encoder-only inference", "{:.2f}x"),
        ("train_docs_per_s", "training docs/s (full model)", "{:.2f}"),
        ("encoder_train_docs_per_s", "training docs/s (encoder only)", "{:.2f}"),
        ("infer_docs_per_s", "inference docs/s (full model)", "{:.2f}"),
        ("encoder_infer_docs_per_s", "inference docs/s (encoder only)", "{:.2f}"))]
    if memory:
        rows += [(f"{label} (MiB, {memory.get('pairs', '?')} pairs)", memory, itemgetter(key), "{:.0f}")
                 for key, label in (("full_train_mib", "peak memory, training step"),
                                    ("encoder_train_mib", "peak memory, encoder-only training step"),
                                    ("full_infer_mib", "peak memory, inference"),
                                    ("encoder_infer_mib", "peak memory, encoder-only inference"))]
    return precision_rows(rows)


def settings_table(settings: dict) -> list[str]:
    rows = [["the defaults" if name == "default" else f"`--{name.replace('=', ' ')}`",
             *(f"{settings[name][f'{mode}_ratio']:.2f}x ({settings[name][f'max_batch_{mode}_ratio']:.2f}x)"
               for mode in ("train", "infer"))] for name in settings.get("flags", {})]
    return markdown_table(["setting", "training (worst batch)", "inference (worst batch)"], rows)


def epoch_table(epoch: dict) -> list[str]:
    train, infer, predict = epoch.get("train", {}), epoch.get("infer", {}), epoch.get("trainer_predict", {})
    encoder_alone = "the eager encoder alone on the same batches"
    rows = []
    if train:
        recipe_docs = 3 * train["docs"]
        rows += [
            (f"training docs/s, one length-grouped epoch of {train['docs']} documents (batch {train['batch_size']})",
             train, itemgetter("docs_per_s"), "{:.2f}"),
            (encoder_alone, train, itemgetter("encoder_docs_per_s"), "{:.2f}"),
            ("full / encoder step, mean over batches (worst batch)", train,
             lambda e: f"{e['mean_batch_ratio']:.2f}x ({e['max_batch_ratio']:.2f}x)", "{}"),
            (f"the recipe's {recipe_docs} training documents at this speed, s (target {TRAIN_TARGET_S:.0f})", train,
             lambda e: recipe_docs / e["docs_per_s"], "{:.0f}"),
            ("the same with the eager encoder alone, s", train, lambda e: recipe_docs / e["encoder_docs_per_s"],
             "{:.0f}")]
    if infer:
        rows += [(f"inference docs/s, {infer['docs']} documents in length-sorted batches of {infer['batch_size']}",
                  infer, itemgetter("docs_per_s"), "{:.2f}"),
                 (encoder_alone, infer, itemgetter("encoder_docs_per_s"), "{:.2f}"),
                 ("full / encoder, ratio of the sums", infer, itemgetter("ratio_of_sums"), "{:.2f}x")]
    if predict:
        rows += [(f"`DocRETrainer.predict` docs/s (target {PREDICT_TARGET_DOCS_PER_S:.0f})", predict,
                  itemgetter("docs_per_s"), "{:.2f}"),
                 ("`DocRETrainer.predict` peak RSS, MiB", predict, itemgetter("peak_rss_mib"), "{:.0f}")]
    out = precision_rows(rows)
    if train:
        out += ["", f"Padding: {train['padding_share_length_grouped']:.0%} of the padded token grid with "
                    f"length-grouped batches, {train['padding_share_shuffled']:.0%} shuffled."]
    return out


def speed_section(speed: dict) -> list[str]:
    out = ["## Speed", "", f"Machine: {speed.get('machine', '?')}.", ""] + speed_table(speed)
    out += ["", "![scaling](results/speed_scaling.png)", ""]
    if speed.get("epoch"):
        out += ["### Whole splits (what users feel)", ""] + epoch_table(speed["epoch"]) + [""]
    if speed.get("settings"):
        out += ["### Head settings (fp32, the bench batches)", ""] + settings_table(speed["settings"]) + [""]
    return out


def inference_table(result: dict) -> list[str]:
    """One results file of `bench/speed_inference.py`: each variant's speed, memory and F1."""
    variants = result["variants"]
    labelled = "test_f1" in variants["fp32"]
    rows = [[name, f"{v['documents_per_s']:.2f}", f"{v['documents_per_s'] / variants['fp32']['documents_per_s']:.2f}x",
             f"{v['encoder_documents_per_s']:.2f}", f"{v['peak_mib']:.0f}", f"{v['agreement_f1_with_fp32']:.2f}"]
            + ([f"{v['test_f1']:.2f}", f"{v['test_ign_f1']:.2f}"] if labelled else []) for name, v in variants.items()]
    header = ["variant", "docs/s", "vs fp32", "encoder alone docs/s", "peak MiB", "facts as fp32 (F1)"]
    return markdown_table(header + (["test F1", "test Ign F1"] if labelled else []), rows)


def inference_section() -> list[str]:
    out = []
    for path in sorted(RESULTS.glob("inference*.json")):
        result = json.loads(path.read_text())
        machine = result["machine"]
        out += [f"`{path.relative_to(RESULTS)}`: {result['documents']} "
                f"{'test' if 'test_f1' in result['variants']['fp32'] else 'held-out'} documents, batches of "
                f"{result['batch_size']}, {machine['torch_threads']} thread(s), {machine['cpu']} "
                f"({'/'.join(machine['cpu_flags'])}).", ""] + inference_table(result) + [""]
    return ["### Inference precision (bench/speed_inference.py)", ""] + out if out else []


# ------------------------------------------------------------------------------------------ evidence
def evidence_summaries(runs: dict[float, list[dict]]) -> dict:
    """Per weight: its threshold chosen on the held-out documents, the per-seed scores there and the heuristic's;
    then the weight the decision rule of `experiments.py` chooses."""
    weights = {}
    for weight, records in sorted(runs.items()):
        records = by_seed(records)

        def scores(split, metric, threshold=None):
            return [r["evidence"][split]["thresholds"][str(threshold)][metric] if threshold is not None
                    else r["evidence"][split]["mention_sentences"][metric] for r in records]

        threshold = max(EVIDENCE_THRESHOLDS, key=lambda t: statistics.fmean(scores("validation", "evi_f1", t)))
        weights[weight] = {
            "seeds": [r["seed"] for r in records], "threshold": threshold,
            **{f"{name}_{metric}": scores(split, metric, threshold)
               for name, split in (("held_out", "validation"), ("test", "test"))
               for metric in ("f1", "ign_f1", "evi_f1", "evi_p", "evi_r")},
            "held_out_heuristic_evi_f1": scores("validation", "evi_f1"),
            "test_heuristic_evi_f1": scores("test", "evi_f1"),
            "minutes_per_run": round(statistics.fmean(r["minutes"] for r in records), 1),
        }
    complete = all(len(weights.get(w, {}).get("seeds", [])) >= len(EVIDENCE_SEEDS) for w in EVIDENCE_WEIGHTS)
    chosen = None
    if complete:
        def mean(weight, key):
            return statistics.fmean(weights[weight][key])

        qualifying = [w for w in EVIDENCE_WEIGHTS
                      if w > 0 and mean(w, "held_out_evi_f1") > mean(w, "held_out_heuristic_evi_f1")
                      and mean(w, "held_out_f1") >= mean(0.0, "held_out_f1") - EVIDENCE_MAX_RELATION_COST]
        chosen = max(qualifying, default=0.0, key=lambda w: (mean(w, "held_out_f1"), mean(w, "held_out_evi_f1")))
    return {"weights": {str(w): v for w, v in weights.items()}, "complete": complete, "chosen_weight": chosen,
            "chosen_threshold": weights[chosen]["threshold"] if chosen is not None else None}


def evidence_section(summary: dict) -> list[str]:
    if not summary["weights"]:
        return []
    columns = ("held_out_f1", "held_out_evi_f1", "held_out_heuristic_evi_f1", "test_f1", "test_ign_f1", "test_evi_f1",
               "test_heuristic_evi_f1")
    rows = [[weight, str(len(v["seeds"])), f"{v['threshold']:g}", *(mean_spread(v[key]) for key in columns),
             f"{v['minutes_per_run']:.0f}"] for weight, v in summary["weights"].items()]
    header = ["evidence_weight", "seeds", "threshold (held-out)", "held-out F1", "held-out evi F1",
              "heuristic held-out evi F1", "test F1", "test Ign F1", "test evi F1", "heuristic test evi F1", "minutes"]
    if summary["complete"]:
        base = statistics.fmean(summary["weights"]["0.0"]["held_out_f1"])
        reasons = "; ".join(
            f"{weight}: held-out evidence F1 {statistics.fmean(v['held_out_evi_f1']):.2f} against the heuristic's "
            f"{statistics.fmean(v['held_out_heuristic_evi_f1']):.2f}, held-out relation F1 "
            f"{statistics.fmean(v['held_out_f1']) - base:+.2f} against weight 0 (at most -{EVIDENCE_MAX_RELATION_COST} "
            "allowed)" for weight, v in summary["weights"].items() if weight != "0.0")
        decision = (f"By the rule of `bench/experiments.py` (written before the runs), the default is `evidence_weight "
                    f"{summary['chosen_weight']:g}` with `evidence_threshold {summary['chosen_threshold']:g}` "
                    f"({reasons})."
                    + (" Evidence supervision costs relation F1 at this scale, so it stays off by default."
                       if summary["chosen_weight"] == 0 else ""))
    else:
        decision = (f"Runs still missing (every weight of {list(EVIDENCE_WEIGHTS)} needs seeds {EVIDENCE_SEEDS}): no "
                    "default is chosen yet.")
    return ["## Evidence (bench/evidence.py)", "",
            "The recipe with 50 training documents held out; each weight's evidence threshold chosen on them (best "
            "held-out evidence F1, seed mean); the heuristic's evidence is every sentence that mentions the head or "
            "the tail, on the same predicted relations. Evidence scores as the official DocRED scorer computes them. "
            "Mean ± standard deviation over seeds.", ""] + markdown_table(header, rows) + ["", decision, ""]


# ------------------------------------------------------------------------------------------ the released recipe
def speed_defaults_f1_verdict(same_recipe_runs: dict[str, list[dict]]) -> list[str]:
    result = paired_difference(same_recipe_runs, "default", "default+eager_random")
    if result is None or len(result[2]) < 2:
        return []
    bound = noise_bound(result)
    return [f"- The speed defaults (SDPA encoder with an explicit last layer, length-grouped batches) against eager "
            f"attention with shuffled batches, on the recipe: test F1 {describe_difference(result)}; "
            f"{'within' if abs(result[0]) < bound else 'outside'} seed noise (twice the standard error of the mean: "
            f"{bound:.2f})."]


def measured_recipe_verdicts(idle_runs: dict[str, list[dict]]) -> list[str]:
    lines = []
    for record in (run for runs in idle_runs.values() for run in runs):
        metrics = record["metrics"]
        predicted, runtime = metrics["test_samples_per_second"], metrics["train_runtime"]
        cpu = f", CPU {record['cpu_capability']}" if record.get("cpu_capability") else ""
        lines.append(
            f"- The recipe run end to end (`{record['config']}`, seed {record['seed']}, fp32, "
            f"{record['torch_threads']} threads alone{cpu}): `train_runtime` {runtime:,.0f} s, "
            f"{RELEASE_TRAIN_S / runtime:.1f}x faster than the released code's {RELEASE_TRAIN_S:,} s (target at most "
            f"{TRAIN_TARGET_S:.0f} s: {'met' if runtime <= TRAIN_TARGET_S else 'missed'}); its test prediction "
            f"{predicted:.1f} docs/s including the scoring (target {PREDICT_TARGET_DOCS_PER_S:.0f}: "
            f"{'met' if predicted >= PREDICT_TARGET_DOCS_PER_S else 'missed'}); test F1 {metrics['test_f1']:.2f}.")
    return lines


def diagnostic_table(runs: dict[str, list[dict]]) -> list[str]:
    if not runs:
        return []
    by_name = {name: {r["seed"]: r["metrics"] for r in records} for name, records in runs.items()}
    order = DIAGNOSTIC + sorted((name for name in by_name if name not in DIAGNOSTIC), key=lambda n: (len(n), n))
    rows = []
    for name in (name for name in order if name in by_name):
        metrics = by_name[name]
        # Compared with itself without as many of its last changes as it takes to reach a measured configuration.
        cuts = [index for index, char in enumerate(name) if char in "+-"]
        start = next((name[:cut] for cut in reversed(cuts) if name[:cut] in by_name), name[:cuts[0]] if cuts else name)
        change, compared = "-", "-"
        if start != name and start in by_name:
            compared, paired = start, sorted(metrics.keys() & by_name[start].keys())
            change = mean_spread([metrics[s]["eval_f1"] - by_name[start][s]["eval_f1"] for s in paired])
            change = f"{change} ({len(paired)})" if paired else "-"
        rows.append([name, *parse_configuration(name).values(), len(metrics),
                     mean_spread([m["eval_f1"] for m in metrics.values()]), compared, change,
                     mean_spread([m["test_f1"] for m in metrics.values()])])
    return markdown_table(["configuration", "d1", "head init", "anchors", "average", "NA prior", "seeds",
                           "held-out F1", "compared with (itself without its last changes)",
                           "change, paired by seed (seeds)", "test F1 (not used to decide)"], rows)


def diagnostic_stuck_note(runs: dict[str, list[dict]]) -> list[str]:
    stuck = [(name, r) for name in sorted(runs) for r in by_seed(runs[name]) if is_stuck(r)]
    if not stuck:
        return []
    named = ", ".join(f"{name} seed {r['seed']} ({r['metrics']['eval_f1']:.2f})" for name, r in stuck)
    with_prior = [r for name, records in runs.items() if "+prior" in name for r in records]
    prior_note = (f" Every one of the {len(with_prior)} runs with the NA prior left it."
                  if with_prior and not any("+prior" in name for name, _ in stuck) else "")
    return [f"Never left the all-NA state within the budget (held-out F1 below {STUCK_DEV_F1:g} after "
            f"every epoch; final held-out F1 in brackets): {named}.{prior_note}", ""]


def decision_rows(runs: dict[str, list[dict]]) -> list[tuple[str, list[float], str]]:
    """(configuration, held-out change per seed against `DECISION_BASE`, verdict) for every `release+prior-...`:
    "costs F1", "tie", or "pending" (fewer than `DECISION_SEEDS` seeds, every one lower so far)."""
    base = {r["seed"]: r["metrics"]["eval_f1"] for r in runs.get(DECISION_BASE, [])}
    out = []
    for name in sorted((n for n in runs if n.startswith(DECISION_BASE + "-")), key=lambda n: (len(n), n)):
        changes = [r["metrics"]["eval_f1"] - base[r["seed"]] for r in by_seed(runs[name]) if r["seed"] in base]
        if any(change >= 0 for change in changes):
            verdict = "tie"  # "costs F1" needs every seed lower
        elif len(changes) < DECISION_SEEDS:
            verdict = "pending"
        else:
            verdict = "costs F1" if statistics.fmean(changes) <= -DECISION_MIN_COST else "tie"
        out.append((name, changes, verdict))
    return out


def chosen_default(rows: list[tuple[str, list[float], str]]) -> str | None:
    """The most paper-like tie of `DEFAULT_CANDIDATES`; None while a more paper-like one is pending."""
    verdicts = {name: verdict for name, _, verdict in rows}
    for name in reversed(DEFAULT_CANDIDATES):
        if verdicts.get(name, "pending") != "costs F1":
            return name if verdicts.get(name, "pending") == "tie" else None
    return None


def decision_table(runs: dict[str, list[dict]]) -> list[str]:
    if not (rows := decision_rows(runs)):
        return []
    out = [f"Each configuration against `{DECISION_BASE}`, paired by seed (held-out F1). The rule, fixed before the "
           f"combinations ran: going back to the paper's setting costs F1 only if it lowers held-out F1 at every one "
           f"of {DECISION_SEEDS} seeds and by at least {DECISION_MIN_COST:g} on average; otherwise it is a tie, and "
           "ties go to the paper as printed. The defaults are the most paper-like combination whose change is a tie.",
           ""] + markdown_table(["configuration", "change per seed", "mean ± sd", "verdict"], [
               [name, ", ".join(f"{c:+.2f}" for c in changes), mean_spread(changes), verdict]
               for name, changes, verdict in rows])
    if chosen := chosen_default(rows):
        factors = parse_configuration(chosen)
        return out + ["", f"Selected defaults: `{chosen}`: d1 = {factors['d1']}, head init `{factors['init']}`, "
                          f"`{factors['anchors']}` anchors, `{factors['average']}` average, and the NA prior (shipped "
                          "as `relation_bias_init=\"auto\"`, log 96 = 4.56)."]
    return out + ["", "Selected defaults: pending (a candidate still runs)."]


def same_recipe_summary(runs: dict[str, list[dict]], config: str = "default") -> dict | None:
    if not (records := by_seed(runs.get(config, []))):
        return None
    return {"config": config, "seeds": [r["seed"] for r in records],
            **{key: [round(r["metrics"][metric], digits) for r in records] for key, metric, digits in (
                ("test_f1", "test_f1", 2), ("test_ign_f1", "test_ign_f1", 2), ("train_runtime_s", "train_runtime", 1))},
            "torch_threads": [r.get("torch_threads") for r in records]}


def demo_summary(runs: dict[str, list[dict]]) -> dict | None:
    """The `demo` entry of summary.json: one run per seed of `run_docre.py --demo` as it ships (`DEMO_EPOCHS`)."""
    records = [r for r in by_seed(runs.get("default", []))
               if flag_value(r.get("recipe", []), "--num_train_epochs") == DEMO_EPOCHS]
    if not records:
        return None
    test_f1 = [round(r["metrics"]["test_f1"], 2) for r in records]
    return {"seeds": [r["seed"] for r in records], "test_f1": test_f1, "spread": round(max(test_f1) - min(test_f1), 2),
            "minutes": [r["minutes"] for r in records], "torch_threads": [r.get("torch_threads") for r in records],
            "num_train_epochs": float(DEMO_EPOCHS)}


def demo_verdict(demo: dict | None) -> list[str]:
    if not demo:
        return []
    runs = ", ".join(f"{f1:.2f} (seed {seed})" for seed, f1 in zip(demo["seeds"], demo["test_f1"]))
    verdict = ("does not hold yet" if len(demo["seeds"]) < 3
               else "holds" if demo["spread"] <= DEMO_SPREAD_TARGET else "missed")
    alone = all(threads == 2 for threads in demo["torch_threads"])
    return [f"- `run_docre.py --demo` ({demo['num_train_epochs']:g} epochs): test F1 {runs}, "
            f"spread {demo['spread']:.2f} (target at most {DEMO_SPREAD_TARGET}, 3 seeds): {verdict}; "
            f"{max(demo['minutes']):.1f} minutes at most"
            + (f" on 2 threads alone (target under {DEMO_MINUTES_TARGET})." if alone else
               " with 1 thread beside another run (an upper bound for 2 cores alone; target under "
               f"{DEMO_MINUTES_TARGET}).")]


def same_recipe_table(same_recipe: dict[str, dict]) -> list[str]:
    default = same_recipe.get("default")
    base = dict(zip(default["seeds"], default["test_f1"])) if default else {}
    rows = []
    for config, entry in same_recipe.items():
        paired = [f - base[s] for s, f in zip(entry["seeds"], entry["test_f1"]) if s in base]
        rows.append([config, ", ".join(map(str, entry["seeds"])), mean_spread(entry["test_f1"]),
                     mean_spread(entry["test_ign_f1"]), f"{mean_spread(entry['train_runtime_s'])}; "
                     f"{'/'.join(sorted({str(t) for t in entry['torch_threads']}))}",
                     "-" if config == "default" or not paired else f"{mean_spread(paired)} ({len(paired)})"])
    if seeds := [s for s in (default or {}).get("seeds", []) if s in RELEASE_TEST_F1]:
        rows.append(["the released code", ", ".join(map(str, seeds)), mean_spread([RELEASE_TEST_F1[s] for s in seeds]),
                     "-", f"{RELEASE_TRAIN_S:,} (2 threads, idle machine)", "-"])
    return markdown_table(["configuration", "seeds", "test F1", "test Ign F1", "train runtime (s; torch threads)",
                           "change in test F1 vs `default`"], rows)


def recipe_sections(diagnostic: dict[str, list[dict]], same_recipe: dict[str, dict]) -> list[str]:
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
                    "`release+prior-X` is `release+prior` with factor X back to the project's (the paper's) "
                    "setting.", ""]
        if decision := decision_table(diagnostic):
            out += ["### Choosing the defaults", ""] + decision + [""]
    if same_recipe:
        out += ["### The defaults on the full recipe", "",
                "All 500 documents of `dev_revised.json`, tested on `test_revised.json`. `default` is the shipped "
                "configuration; `default+eager_random` runs the encoder eagerly and shuffles batches without "
                "grouping by length (what the speed defaults replace), `default+bf16` trains under bf16 autocast. "
                "The change is paired by seed against `default`.", ""] + same_recipe_table(same_recipe) + [""]
    return out


# ------------------------------------------------------------------------------------------ figures
def figure(width: float, height: float, columns: int = 1):
    import matplotlib.pyplot as plt

    if columns > 1:
        return plt.subplots(1, columns, figsize=(width, height), sharey=True)
    return plt.subplots(figsize=(width, height))


def save_figure(fig, path) -> bool:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_sweep(rows, path) -> bool:
    """Test F1 against the sampling ratio, one line per seed (seeds cover different ratios), with each seed's
    clean-label PEMSCL dashed. False (nothing written) before any dropped-label row has finished."""
    seeds = sorted({r["seed"] for r in rows.get("drop50_pemscl_nls0.1", []) + rows.get("drop50_pemscl", [])})
    if not seeds:
        return False
    fig, ax = figure(8.2, 3.8)
    for index, seed in enumerate(seeds):
        color = f"C{index}"
        points = [(ratio, per_seed(rows, f"drop50_pemscl_nls{ratio}").get(seed)) for ratio in SWEEP_RATIOS]
        if points := [(ratio, f1) for ratio, f1 in points if f1 is not None]:
            ax.plot(*zip(*points), marker="o", color=color, label=f"PEMSCL, 50% dropped, seed {seed}")
        if (atlop := per_seed(rows, "drop50_atlop_nls0.1").get(seed)) is not None:
            ax.plot([0.1], [atlop], marker="s", linestyle="none", color=color, markeredgecolor="black",
                    label=f"ATLOP, 50% dropped, ratio 0.1, seed {seed}")
        if (clean := per_seed(rows, "pemscl").get(seed)) is not None:
            ax.axhline(clean, color=color, linestyle="--", linewidth=0.9, label=f"PEMSCL, clean labels, seed {seed}")
    ax.set_xscale("log")
    ax.set_xticks(SWEEP_RATIOS, [str(r) for r in SWEEP_RATIOS])
    ax.set(xlabel="negative label sampling ratio (1.0 = no sampling)", ylabel="Re-DocRED test F1 (%)",
           title="Negative label sampling (cf. paper Figure 2)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save_figure(fig, path)


def bucket_f1(counts: dict[str, list[int]], relations: list[str]) -> float:
    """F1 over a group of relations from per-relation [true positives, predicted, gold] counts."""
    tp, predicted, gold = (sum(counts.get(r, [0, 0, 0])[i] for r in relations) for i in range(3))
    return 200 * tp / (predicted + gold) if predicted + gold else 0.0


def plot_frequency_f1(rows, path) -> bool:
    if "atlop" not in rows and "pemscl" not in rows:
        return False
    frequencies: Counter = Counter()
    if TRAIN_FILE.exists():
        documents = json.loads(TRAIN_FILE.read_text())
        frequencies.update(label["r"] for document in documents for label in document["labels"])
    ranked = [r for r, _ in frequencies.most_common()]
    buckets = [("top 10", ranked[:10]), ("11-30", ranked[10:30]), ("31-60", ranked[30:60]), ("rest", ranked[60:])]
    fig, ax = figure(5.5, 3.6)
    width = 0.38
    for offset, name in ((-width / 2, "atlop"), (width / 2, "pemscl")):
        if name not in rows:
            continue
        scores = [statistics.fmean(bucket_f1(record["per_relation_test"], relations) for record in rows[name])
                  for _, relations in buckets]
        ax.bar([i + offset for i in range(len(buckets))], scores, width, label=name.upper())
    ax.set_xticks(range(len(buckets)), [b for b, _ in buckets])
    ax.set(xlabel="relations ranked by training frequency", ylabel="test F1 (%)", title="F1 by relation frequency")
    ax.legend()
    return save_figure(fig, path)


def plot_dev_curves(rows, variants: dict[str, dict], path) -> bool:
    runs = [("", "-", rows)] + [(f" {name}", "--", variant_rows) for name, variant_rows in variants.items()]
    curves = [(suffix, style, color, name, record) for suffix, style, source in runs
              for color, name in (("C0", "pemscl"), ("C3", "atlop"))
              for record in source.get(name, []) if record.get("dev_f1_per_epoch")]
    if not curves:
        return False
    fig, ax = figure(6, 3.8)
    for suffix, style, color, name, record in curves:
        epochs, f1 = zip(*record["dev_f1_per_epoch"])
        ax.plot(epochs, f1, style, color=color, marker="o", markersize=3, alpha=0.8,
                label=f"{name.upper()}{suffix} seed {record['seed']}")
        ax.annotate(str(record["seed"]), (epochs[-1], f1[-1]), fontsize=7, xytext=(3, 0), textcoords="offset points",
                    color=color)
    ax.set(xlabel="epoch", ylabel="dev F1 (%), 50 held-out documents")
    ax.set_title("Model-selection curves: PEMSCL (blue) vs ATLOP (red)\nsolid: main budget, dashed: variants",
                 fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def plot_margins(rows, path) -> bool:
    if not any("test_margins" in r for name in ("atlop", "pemscl") for r in rows.get(name, [])):
        return False
    fig, axes = figure(8, 3.4, columns=2)
    for ax, name in zip(axes, ("atlop", "pemscl")):
        margins = next((r["test_margins"] for r in rows.get(name, []) if "test_margins" in r), None)
        if margins is None:
            ax.set_title(f"{name.upper()}: not run yet")
            continue
        ax.hist(margins["negative"], bins=60, alpha=0.6, density=True, label="negative relations")
        ax.hist(margins["positive"], bins=60, alpha=0.6, density=True, label="gold relations")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set(title=f"{name.upper()}: logit - threshold logit", xlabel="f_r - f_NA on test pairs")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    return save_figure(fig, path)


PRIOR_CURVES = (("project", "C0", "--"), ("release", "C3", "--"), ("project+prior", "C0", "-"),
                ("release+prior", "C3", "-"))


def plot_prior_curves(runs: dict[str, list[dict]], path) -> bool:
    """Held-out F1 per epoch of the diagnostic's starting configurations without (dashed) and with (solid) the NA
    prior: every seed faint, the mean bold. False (nothing written) without curves."""
    drawn = [(name, color, style, curves) for name, color, style in PRIOR_CURVES
             if (curves := [dict(r["dev_f1_per_epoch"]) for r in runs.get(name, []) if r.get("dev_f1_per_epoch")])]
    if not drawn:
        return False
    fig, ax = figure(6, 3.8)
    for name, color, style, curves in drawn:
        epochs = sorted(set.intersection(*(set(curve) for curve in curves)))
        for curve in curves:
            ax.plot(epochs, [curve[e] for e in epochs], style, color=color, alpha=0.25, linewidth=1)
        ax.plot(epochs, [statistics.fmean(curve[e] for curve in curves) for e in epochs], style, color=color,
                marker="o", markersize=4, linewidth=2, label=f"{name} (mean of {len(curves)} seeds)")
        ax.set_xticks(epochs)
    ax.set(xlabel="epoch", ylabel="held-out F1 (%), 50 documents")
    ax.set_title("The released code's recipe: the all-NA start and the NA prior\n(dashed: relation biases as "
                 "drawn; solid: 4.6 below the threshold)", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ the report
def variant_sections(main_rows, variants: dict[str, dict[str, list[dict]]]) -> list[str]:
    """One small table per variant next to the same rows and seeds of the main budget; for a variant of model
    settings only, what the change does to each row."""
    out = []
    for variant, rows in variants.items():
        out += [f"### Variant `{variant}`", ""] + ([VARIANT_NOTES[variant], ""] if variant in VARIANT_NOTES else [])
        out += [f"Budget: `{' '.join(next(iter(rows.values()))[0]['budget'])}`.", ""]
        table = []
        for name in (name for name in ROWS if name in rows and name not in ALIASES):
            same_seeds = [r for r in main_rows.get(name, []) if r["seed"] in {r["seed"] for r in rows[name]}]
            table.append([name, result_cells(aggregate(rows[name])),
                          cell(aggregate(same_seeds) if same_seeds else None, "test_f1")])
        out += markdown_table(["row", *RESULT_COLUMNS, "test F1, main budget, same seeds"], table)
        if gap := paired_difference(rows, "pemscl", "atlop"):
            out += ["", f"PEMSCL - ATLOP test F1 in this variant: {describe_difference(gap)}."]
        if gap := baseline_variant_gap(main_rows, rows):
            out += ["", f"PEMSCL (main budget) - ATLOP of this variant, test F1: {describe_difference(gap)}."]
        if changed := changed_settings(main_rows, rows):
            change = ", ".join(f"`{flag} {main}` -> `{variant}`" for flag, (main, variant) in changed.items())
            out += ["", f"Changed against the main table: {change}; everything else as there."]
            for name in (n for n in ROWS if n not in ALIASES and n in rows and n in main_rows):
                if effect := paired_difference({"variant": rows[name], "main": main_rows[name]}, "variant", "main"):
                    out.append(f"- {name}, this variant - main table, test F1: {describe_difference(effect)}.")
        out.append("")
    return (["## Diagnostic variants", ""] + out) if out else []


def per_seed_table(rows) -> list[str]:
    seeds = sorted({record["seed"] for records in rows.values() for record in records})
    if not seeds:
        return []

    def run_cell(record):
        if record is None:
            return "-"
        threads = record.get("torch_threads", 2)  # records without the field ran on 2 threads
        stuck = " †" if is_stuck(record) else ""
        return f"{record['metrics']['test_f1']:.2f}{stuck} ({record['minutes']:.0f} min, {threads})"

    table = [[name, *(run_cell({r["seed"]: r for r in rows.get(name, [])}.get(seed)) for seed in seeds)]
             for name in ROWS if name not in ALIASES]
    return ["## Every run", "",
            "Test F1 per seed (minutes, torch threads). Seed 0 ran one row at a time with 2 threads; later seeds "
            "ran two rows at once with one thread each, which is why their wall time is longer. Each seed also "
            "draws its own 50 held-out documents. † = never left the all-NA state within the budget "
            f"(best dev F1 < {STUCK_DEV_F1:g}).", ""] + markdown_table(["row", *(f"seed {s}" for s in seeds)], table)


def results_tables(rows, summaries, variants) -> list[str]:
    out = ["## Main results and ablations (Tables 2 and 3)", ""]
    table = []
    for name in TABLE_ROWS:
        paper = PAPER.get(name, {})
        groups = " / ".join(f"{paper[k]:.2f}" for k in ("head_f1", "mid_f1", "tail_f1") if k in paper) or "-"
        table.append([name, result_cells(summaries.get(name)), paper.get("test_f1", paper.get("dev_f1", "-")), groups])
    out += markdown_table(["row", *RESULT_COLUMNS, "paper test F1", "paper head / mid / tail"], table)
    out += ["", "The paper's ablation numbers (Table 3) are dev F1 with RoBERTa-large.", "",
            "## Incomplete training labels (Table 4, Figure 2)", "",
            "Half of the training triples dropped (seeded): about DocRED's degree of incompleteness relative to "
            "Re-DocRED. Paper (OOG regime, Gold-Test F1): ATLOP 47.65, PEMSCL 51.10, PEMSCL with sampling 0.1: "
            "64.03.", ""]
    table = [[f"{name} (= {ALIASES[name]}: ratio 1.0 keeps every negative label)" if name in ALIASES else name,
              seeds_cell(summaries.get(name)),
              *(cell(summaries.get(name), m) for m in ("test_f1", "test_ign_f1", "eval_f1"))]
             for name in ROWS if name not in TABLE_ROWS]
    out += markdown_table(["row", "seeds", "test F1", "test Ign F1", "dev F1"], table) + [""]
    # A figure with nothing to draw yet is removed: a stale figure of another budget must not stand in for it.
    for title, name, plot in (("sampling ratio", "sampling_ratio.png", plot_sweep),
                              ("F1 by relation frequency", "f1_by_frequency.png", plot_frequency_f1),
                              ("margins", "margins.png", plot_margins)):
        if plot(rows, RESULTS / name):
            out += [f"![{title}](results/{name})", ""]
        else:
            (RESULTS / name).unlink(missing_ok=True)
    if plot_dev_curves(rows, variants, RESULTS / "dev_curves.png"):
        out += ["![dev F1 per epoch](results/dev_curves.png)", ""]
    return out + per_seed_table(rows) + [""] + variant_sections(rows, variants)


def write_summary(rows, summaries, speed, diagnostic, same_recipe, demo, budget, evidence) -> None:
    summary = {"rows": {name: summaries[name] for name in ROWS if name in summaries},
               "speed": {k: speed[k] for k in ("train_step_ratio_vs_encoder", "infer_ratio_vs_encoder",
                                                "train_docs_per_s", "infer_docs_per_s") if k in speed}}
    if diagnostic:
        summary["diagnostic"] = {name: {"seeds": [r["seed"] for r in records],
                                        "held_out_f1": [round(r["metrics"]["eval_f1"], 2) for r in records],
                                        "test_f1": [round(r["metrics"]["test_f1"], 2) for r in records]}
                                 for name, records in sorted(diagnostic.items())}
    if "default" in same_recipe:
        summary["same_recipe"] = same_recipe["default"]
    if variants_of_default := {config: entry for config, entry in same_recipe.items() if config != "default"}:
        summary["same_recipe_variants"] = variants_of_default
    if demo:
        summary["demo"] = demo
    summary["main_budget"] = budget_summary(budget)
    if evidence["weights"]:
        summary["evidence"] = evidence
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1))


def main():
    rows, variants = load_rows(), load_variants()
    summaries = {name: aggregate(records) for name, records in rows.items()}
    speed = json.loads((RESULTS / "speed.json").read_text()) if (RESULTS / "speed.json").exists() else {}
    recipe = {stage: load_runs(RESULTS / "recipe" / stage, "config")
              for stage in ("diagnostic", "same_recipe", "demo", "idle_timing")}
    same_recipe = {config: same_recipe_summary(recipe["same_recipe"], config) for config in SAME_RECIPE_CONFIGS
                   if config in recipe["same_recipe"]}
    demo = demo_summary(recipe["demo"])
    # The budget the main rows ran with; before the first one finishes, the one `bench/reproduce.py` will run.
    budget = next((records[0]["budget"] for records in rows.values() if records), None) or budget_flags()
    RESULTS.mkdir(parents=True, exist_ok=True)
    evidence = evidence_summaries(load_runs(RESULTS / "evidence", "weight"))
    write_summary(rows, summaries, speed, recipe["diagnostic"], same_recipe, demo, budget, evidence)
    out = ["# Reproducing PEMSCL at CPU scale", "",
           "Generated by `bench/report.py` from `bench/results/` (rows by `bench/reproduce.py`, speed by "
           "`bench/speed.py`). Encoder: MiniLM-L6 (22M parameters) instead of RoBERTa-large; training data: "
           "Re-DocRED `dev_revised.json` (450 documents, 50 held out for model selection) instead of the 3,053 "
           "training documents; test: Re-DocRED `test_revised.json` (500 documents). Absolute F1 is therefore far "
           "below the paper's; the comparisons between rows are what this reproduces. Mean ± standard deviation over "
           "seeds.", "", f"Budget of every row{'' if rows else ' (none has finished yet)'}: `{' '.join(budget)}`.", ""]
    out += paper_claims_table(rows, variants)
    out += (["## Claims", ""] + verdicts(rows, speed, variants) + speed_defaults_f1_verdict(recipe["same_recipe"])
            + measured_recipe_verdicts(recipe["idle_timing"]) + demo_verdict(demo) + [""])
    out += recipe_sections(recipe["diagnostic"], same_recipe) + results_tables(rows, summaries, variants)
    out += (speed_section(speed) if speed else []) + inference_section() + evidence_section(evidence)
    if NOTES.exists():
        out += ["## Diagnosis and notes", "", NOTES.read_text().strip(), ""]
    REPORT.write_text("\n".join(out))
    print(f"wrote {REPORT} and {RESULTS / 'summary.json'}")


if __name__ == "__main__":
    main()
