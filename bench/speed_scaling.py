"""Speed section `scaling`: single documents by token length (< 256, 256-512, 512-768, > 768; the last bucket from 2
concatenated real documents, which exercises the sliding windows) spread over their pair counts, fp32, with the
head's cost per 1,000 pairs (least squares) and `speed_scaling.png`."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

from bench.harness import cpu_pressure_total, featurize, fmt_s, interleaved, log, read_documents
from bench.speed_batches import MODES, describe, step_kinds
from data_collators import DataCollatorForDocRE

TOKEN_BUCKETS = ((0, 256), (256, 512), (512, 768), (768, None))


def concatenate(documents: list[dict]) -> dict:
    """One longer document made of real ones: sentences, entities and labels appended with shifted indices."""
    merged = {"title": " + ".join(doc["title"] for doc in documents), "sents": [], "vertexSet": [], "labels": []}
    for doc in documents:
        sent_offset, entity_offset = len(merged["sents"]), len(merged["vertexSet"])
        word_offset = sum(len(sent) for sent in merged["sents"])
        for entity in doc["vertexSet"]:
            mentions = copy.deepcopy(entity)
            for mention in mentions:
                mention["sent_id"] += sent_offset
                if "global_pos" in mention:
                    mention["global_pos"] = [p + word_offset for p in mention["global_pos"]]
                if "index" in mention:
                    entity_index, _, mention_index = str(mention["index"]).partition("_")
                    mention["index"] = f"{int(entity_index) + entity_offset}_{mention_index}"
            merged["vertexSet"].append(mentions)
        merged["labels"] += [{**label, "h": label["h"] + entity_offset, "t": label["t"] + entity_offset,
                              "evidence": [e + sent_offset for e in label.get("evidence", [])]}
                             for label in doc.get("labels", [])]
        merged["sents"].extend(doc["sents"])
    return merged


def bucket_name(low: int, high: int | None) -> str:
    return f"<{high}" if low == 0 else (f">{low}" if high is None else f"{low}-{high}")


def pick_spread(candidates: list[dict], count: int) -> list[dict]:
    """`count` candidates evenly spread over their pair counts (smallest and largest included)."""
    ordered = sorted(candidates, key=lambda c: (len(c["hts"]), len(c["input_ids"])))
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [ordered[len(ordered) // 2]]
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def scaling_documents(tokenizer, vocab, data_dir, per_bucket: int) -> list[dict]:
    """Single labelled documents per token-length bucket; the > 768 bucket from 2 concatenated documents."""
    raw = read_documents(data_dir, "re-docred/test_revised.json") + read_documents(data_dir, "re-docred/dev_revised.json")
    features = [{**f, "source": "real", "title": doc["title"]} for f, doc in zip(featurize(raw, tokenizer, vocab), raw)]
    chosen = []
    for low, high in TOKEN_BUCKETS:
        candidates = [f for f in features if low <= len(f["input_ids"]) < (high or 10**9)]
        if high is None and len(candidates) < per_bucket:
            merged = [concatenate(raw[i : i + 2]) for i in range(0, 400, 2)]
            candidates += [{**f, "source": "concatenated", "title": doc["title"]}
                           for f, doc in zip(featurize(merged, tokenizer, vocab), merged) if len(f["input_ids"]) >= low]
        chosen += [{**feature, "bucket": bucket_name(low, high)} for feature in pick_spread(candidates, per_bucket)]
    return chosen


def section_scaling(model, eager_model, tokenizer, vocab, args, plot_path: Path, label: str) -> dict:
    log(f"\n== scaling: single documents by token length and pair count, fp32, median of {args.scaling_repeats} ==")
    documents = scaling_documents(tokenizer, vocab, args.data_dir, args.scaling_docs_per_bucket)
    started, pressure_before = time.perf_counter(), cpu_pressure_total()
    collator = DataCollatorForDocRE(tokenizer)
    rows = []
    for feature in documents:
        batch = collator([feature])
        shape = describe(model, batch)
        seconds, _ = interleaved(step_kinds(model, eager_model, batch, "fp32"), args.scaling_repeats, warmup=0)
        rows.append({"bucket": feature["bucket"], "source": feature["source"], "title": feature["title"],
                     **{key: shape[key] for key in ("tokens", "entities", "pairs", "windows")},
                     **{f"{kind}_s": statistics.median(times) for kind, times in seconds.items()}})
        log(f"{len(rows)}/{len(documents)} [{feature['bucket']}]: {shape['tokens']} tokens, {shape['pairs']} pairs: "
            f"train {fmt_s(rows[-1]['full_train_s'])}, infer {fmt_s(rows[-1]['full_infer_s'])}")
    model.zero_grad(set_to_none=True)
    buckets = []
    for name in (bucket_name(low, high) for low, high in TOKEN_BUCKETS):
        if members := [row for row in rows if row["bucket"] == name]:
            mean = {key: statistics.mean(row[key] for row in members) for key in members[0] if key.endswith("_s")}
            buckets.append({"bucket": name, "docs": len(members), "tokens": statistics.mean(r["tokens"] for r in members),
                            "pairs": statistics.mean(r["pairs"] for r in members),
                            "pairs_range": [min(r["pairs"] for r in members), max(r["pairs"] for r in members)], **mean,
                            **{f"{m}_ratio": mean[f"full_{m}_s"] / mean[f"encoder_{m}_s"] for m in MODES}})
    for b in buckets:
        log(f"{b['bucket']} tokens: {b['docs']} documents, {b['pairs']:.0f} pairs on average, training "
            f"x{b['train_ratio']:.2f} and inference x{b['infer_ratio']:.2f} the encoder alone")
    fits = {}  # the head and loss's cost (full - encoder) against pairs: least-squares line
    for mode in MODES:
        xs, ys = [r["pairs"] for r in rows], [r[f"full_{mode}_s"] - r[f"encoder_{mode}_s"] for r in rows]
        if len(set(xs)) > 1:
            slope, intercept = statistics.linear_regression(xs, ys)
            fits[mode] = {"ms_per_1000_pairs": slope * 1e6, "intercept_ms": intercept * 1000}
            log(f"head + loss ({mode}) ~ {intercept * 1000:.0f} ms + {slope * 1e6:.0f} ms per 1,000 pairs")
    contention = None
    if pressure_before is not None and (pressure_after := cpu_pressure_total()) is not None:
        contention = (pressure_after - pressure_before) / 1e6 / (time.perf_counter() - started)
        label += f" | CPU pressure during the measurement {contention:.0%}"
    plot_scaling(rows, fits, plot_path, label)
    return {"documents": rows, "buckets": buckets, "head_cost_fit": fits, "plot": str(plot_path), "cpu_pressure": contention}


def plot_scaling(rows: list[dict], fits: dict, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors, markers, names = {"train": "tab:red", "infer": "tab:blue"}, {"train": "o", "infer": "s"}, {
        "train": ("training step", "training"), "infer": ("inference", "inference")}
    figure, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for axis, x_key, x_label in ((axes[0], "tokens", "tokens per document"), (axes[1], "pairs", "entity pairs per document")):
        for mode in MODES:
            for who, filled in (("full", True), ("encoder", False)):
                axis.scatter([r[x_key] for r in rows], [r[f"{who}_{mode}_s"] * 1000 for r in rows],
                             label=f"{who if who == 'full' else 'encoder-only'} {names[mode][0]}", color=colors[mode],
                             marker=markers[mode], facecolors=colors[mode] if filled else "none", s=36, alpha=0.85)
        axis.set(xlabel=x_label, ylabel="time per document (ms)")
        axis.grid(alpha=0.3)
    for boundary in (256, 512, 768):
        axes[0].axvline(boundary, color="grey", lw=0.8, ls=":")
    axes[0].text(512, axes[0].get_ylim()[1] * 0.97, " > 512: sliding windows", fontsize=8, va="top", color="grey")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_title("step time vs document length")
    axes[1].set_title("step time vs pair count")
    for mode in MODES:
        axes[2].scatter([r["pairs"] for r in rows], [(r[f"full_{mode}_s"] - r[f"encoder_{mode}_s"]) * 1000 for r in rows],
                        color=colors[mode], marker=markers[mode], label=f"{names[mode][1]}: full - encoder", s=36)
    for mode, fit in fits.items():
        xs = [0, max(r["pairs"] for r in rows)]
        axes[2].plot(xs, [fit["intercept_ms"] + fit["ms_per_1000_pairs"] * x / 1000 for x in xs], color=colors[mode],
                     lw=1, ls="--", label=f"{names[mode][1]} fit: {fit['ms_per_1000_pairs']:.0f} ms per 1,000 pairs")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set(xlabel="entity pairs per document", ylabel="head + loss time per document (ms)",
                title="pair head + losses (full minus encoder)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8, loc="upper left")
    figure.suptitle(f"PEMSCL on MiniLM-L6, fp32, batch of 1 document; median per point\n{label}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
