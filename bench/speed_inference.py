"""Inference in every precision a user can choose, side by side: documents/s of the whole model and of its encoder
alone, peak memory, and test F1 / Ign F1, on the same batches of Re-DocRED test documents.

    python bench/speed_inference.py --model DIR [--documents 500] [--threads 2] [--onnx FILE] [--onnx_int8 FILE]

DIR is a trained model folder (e.g. one trained with `bench/recipe.py`); `--onnx` / `--onnx_int8` are files written
by `python -m modeling_pemscl.export_onnx`. Variants take turns on every batch (the order rotated), so a noisy
machine slows them alike. Results: `bench/results/inference.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.harness import PeakRSS, log, machine, markdown_table, read_documents  # noqa: E402
from bench.jobs import write_json  # noqa: E402
from data_collators import DataCollatorForDocRE, featurize_document  # noqa: E402
from docre_training.metrics import load_train_documents, official_scores  # noqa: E402
from docre_training.trainer import decoded_facts, official_predictions  # noqa: E402
from modeling_pemscl import PemsclModel, optimize_for_inference  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"


def load_variant(folder: str, precision: str, onnx_file: str | None = None) -> PemsclModel:
    model = optimize_for_inference(PemsclModel.from_pretrained(folder), precision)
    if onnx_file:
        from modeling_pemscl.export_onnx import use_onnx_encoder

        model = use_onnx_encoder(model, onnx_file)
    return model


def batches_of(documents, tokenizer, config, batch_size):
    """Collated batches of the documents sorted by length (as the Trainer predicts), with their row indices."""
    features = [featurize_document(document, tokenizer, config.label2id, entity_marker=config.entity_marker,
                                   word_prefix_space=config.word_prefix_space) for document in documents]
    order = sorted(range(len(features)), key=lambda row: -len(features[row]["input_ids"]))
    collator = DataCollatorForDocRE(tokenizer=tokenizer)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield torch.tensor(rows), collator([features[row] for row in rows])


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
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    documents = read_documents("re-docred/test_revised.json", limit=args.documents)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    specs = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8": ("int8", None),
             "onnx fp32": ("fp32", args.onnx), "onnx int8": ("fp32", args.onnx_int8)}
    models = {name: load_variant(args.model, precision, onnx) for name, (precision, onnx) in specs.items()
              if onnx or not name.startswith("onnx")}
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
    titles = [document["title"] for document in documents]
    results = {"machine": machine(), "model": args.model, "documents": len(documents),
               "batch_size": args.batch_size, "variants": {}}
    for name in models:
        predictions = official_predictions([row for batch_facts in facts[name] for row in batch_facts.reshape(-1, 5)],
                                           titles, config.id2label)
        scores = official_scores(predictions, documents, train_documents=train_documents, relation_vocabulary=relations)
        results["variants"][name] = {
            "documents_per_s": len(documents) / model_s[name], "encoder_documents_per_s": len(documents) / encoder_s[name],
            "model_s": model_s[name], "encoder_s": encoder_s[name], "peak_mib": peak[name],
            "test_f1": scores["f1"], "test_ign_f1": scores["ign_f1"]}
    write_json(Path(args.out), results, indent=2)
    reference = results["variants"]["fp32"]
    rows = [[name, f"{v['documents_per_s']:.2f}", f"{v['documents_per_s'] / reference['documents_per_s']:.2f}x",
             f"{v['encoder_documents_per_s']:.2f}", f"{v['peak_mib']:.0f}", f"{v['test_f1']:.2f}",
             f"{v['test_ign_f1']:.2f}"] for name, v in results["variants"].items()]
    log("\n".join(markdown_table(["variant", "docs/s", "vs fp32", "encoder alone docs/s", "peak MiB (longest batch)",
                                  "test F1", "test Ign F1"], rows)))
    return results


if __name__ == "__main__":
    main()
