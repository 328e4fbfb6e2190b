"""Inference in every precision a user can choose, side by side on the same batches of Re-DocRED test documents:
documents/s of the whole model and of its encoder alone, peak memory, test F1 / Ign F1.

    python bench/speed_inference.py --model DIR [--documents 500] [--threads 2] [--onnx FILE] [--onnx_int8 FILE]
    python bench/speed_inference.py --model DIR --documents_file UNLABELLED.json --int8_candidates

DIR is a trained model folder; `--onnx` / `--onnx_int8` are files of `python -m modeling_pemscl.export_onnx`.
Variants take turns on every batch (the order rotated), so a noisy machine slows them alike. Without labels
(`--documents_file`) the score is the agreement F1 of each variant's facts with fp32's; `--int8_candidates` adds int8
variants that keep other encoder layers in float, to choose `INT8_KEEP_FLOAT` without test labels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.harness import PeakRSS, log, machine, read_documents, write_json  # noqa: E402
from bench.report import inference_table  # noqa: E402
from data_collators import DataCollatorForDocRE, featurize_document  # noqa: E402
from docre_training.metrics import load_train_documents, official_scores  # noqa: E402
from docre_training.trainer import decoded_facts, official_predictions  # noqa: E402
from modeling_pemscl import PemsclModel, optimize_for_inference, prepare_for_inference  # noqa: E402
from modeling_pemscl.modeling_pemscl import INT8_KEEP_FLOAT  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
# Encoder layers int8 may leave in float (regular expressions on their names; {last} is the last layer's index).
INT8_CANDIDATES = {
    "nothing": (),
    "FFN output": (r"layer\.\d+\.output\.dense$",),
    "attention output": (r"attention\.output\.dense$",),
    "last layer": (r"layer\.{last}\.",),
    "last-layer query/key": (r"layer\.{last}\.attention\.self\.(query|key)$",),
    "FFN output + last layer": (r"layer\.\d+\.output\.dense$", r"layer\.{last}\."),
}


def load_variant(folder: str, precision: str, onnx_file: str | None = None,
                 keep_float: tuple[str, ...] = INT8_KEEP_FLOAT) -> PemsclModel:
    model = PemsclModel.from_pretrained(folder)
    if onnx_file:  # the encoder from the file, the head in `precision`
        return prepare_for_inference(model, precision, onnx_file, onnx_threads=torch.get_num_threads())
    last = model.config.encoder.num_hidden_layers - 1
    return optimize_for_inference(model, precision, int8_keep_float=tuple(p.format(last=last) for p in keep_float))


def batches_of(documents, tokenizer, config, batch_size):
    """Collated batches of the documents sorted by length (as the Trainer predicts), with their row indices."""
    features = [featurize_document(document, tokenizer, config.label2id, entity_marker=config.entity_marker,
                                   word_prefix_space=config.word_prefix_space) for document in documents]
    order = sorted(range(len(features)), key=lambda row: -len(features[row]["input_ids"]))
    collator = DataCollatorForDocRE(tokenizer=tokenizer)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = collator([features[row] for row in rows])
        batch.pop("labels", None)  # inference: no loss
        yield torch.tensor(rows), batch


def timed(run):
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx")
    parser.add_argument("--onnx_int8")
    parser.add_argument("--documents_file", help="default: Re-DocRED test_revised.json of the data folder")
    parser.add_argument("--int8_candidates", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    documents = (read_documents(Path(args.documents_file).parent, Path(args.documents_file).name, args.documents)
                 if args.documents_file else read_documents(None, "re-docred/test_revised.json", args.documents))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    specs = {"fp32": ("fp32", None, INT8_KEEP_FLOAT), "bf16": ("bf16", None, INT8_KEEP_FLOAT)}
    if args.int8_candidates:
        specs.update({f"int8 keeping {name}": ("int8", None, keep) for name, keep in INT8_CANDIDATES.items()})
    else:
        specs["int8"] = ("int8", None, INT8_KEEP_FLOAT)
    specs.update({name: (head, onnx, ()) for name, head, onnx in (
        ("onnx fp32", "fp32", args.onnx), ("onnx int8", "fp32", args.onnx_int8),
        ("onnx int8 + int8 head", "int8", args.onnx_int8)) if onnx})
    models = {name: load_variant(args.model, *spec) for name, spec in specs.items()}
    config = next(iter(models.values())).config
    model_s, encoder_s = dict.fromkeys(models, 0.0), dict.fromkeys(models, 0.0)
    facts, peak = {name: [] for name in models}, {}
    with torch.inference_mode():
        for number, (rows, batch) in enumerate(batches_of(documents, tokenizer, config, args.batch_size)):
            names = list(models)[number % len(models):] + list(models)[:number % len(models)]
            for name in names:
                model = models[name]
                inputs = (batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
                if number == 0:  # the longest batch: the peak memory of each variant
                    with PeakRSS() as memory:
                        model(**batch)
                    peak[name] = memory.mib
                seconds, output = timed(lambda: model(**batch, return_predictions=True))
                model_s[name] += seconds
                with model.inference_autocast(batch["input_ids"].device):
                    encoder_s[name] += timed(lambda: model.encode(*inputs))[0]
                facts[name].append(decoded_facts(output.logits, output.predictions, batch["hts"],
                                                 batch["pair_document_index"], rows, config.loss).numpy())
            if number % 10 == 0:
                log(f"batch {number}: " + ", ".join(f"{name} {model_s[name]:.0f} s" for name in models))
    train_documents = load_train_documents(args.model)
    relations = [label for index, label in sorted(config.id2label.items()) if index]
    titles = [f"{row}" for row in range(len(documents))]  # titles repeat in DocRED's test set; rows do not
    labelled = all("labels" in document for document in documents)
    predictions = {name: official_predictions([row for found in facts[name] for row in found.reshape(-1, 5)],
                                              titles, config.id2label) for name in models}
    fact_sets = {name: {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in found}
                 for name, found in predictions.items()}
    results = {"machine": machine(), "model": args.model, "documents": len(documents),
               "batch_size": args.batch_size, "variants": {}}
    for name in models:
        result = {"documents_per_s": len(documents) / model_s[name],
                  "encoder_documents_per_s": len(documents) / encoder_s[name],
                  "model_s": model_s[name], "encoder_s": encoder_s[name], "peak_mib": peak[name],
                  "agreement_f1_with_fp32": 200 * len(fact_sets[name] & fact_sets["fp32"])
                  / max(len(fact_sets[name]) + len(fact_sets["fp32"]), 1)}
        if labelled:
            gold = [{**document, "title": title} for document, title in zip(documents, titles)]
            scores = official_scores(predictions[name], gold, train_documents=train_documents,
                                     relation_vocabulary=relations)
            result.update(test_f1=scores["f1"], test_ign_f1=scores["ign_f1"])
        results["variants"][name] = result
    write_json(Path(args.out), results, indent=2)
    log("\n".join(inference_table(results)))
    return results


if __name__ == "__main__":
    main()
