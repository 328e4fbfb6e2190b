#!/usr/bin/env python
"""Evidence on the released code's recipe: `evidence_weight` 0 against `experiments.EVIDENCE_WEIGHTS`, 50 training
documents held out. Each job trains (resumable), predicts the held-out and test documents once and scores the evidence
at every threshold of `EVIDENCE_THRESHOLDS`, next to the sentences that mention the head or the tail. One record per
(weight, seed) under `bench/results/evidence/`; `report.py` applies the decision rule of `experiments.py`.

    OMP_NUM_THREADS=1 python bench/evidence.py &
    OMP_NUM_THREADS=1 python bench/evidence.py &
    python bench/report.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.experiments import EVIDENCE_SEEDS, EVIDENCE_THRESHOLDS, EVIDENCE_WEIGHTS, RECIPE_FLAGS  # noqa: E402
from bench.harness import encoder_path  # noqa: E402
from bench.jobs import WORK, add_queue_arguments, run_docre_flags, run_queue, train_resumably  # noqa: E402

RESULTS = REPO / "bench" / "results" / "evidence"
HELD_OUT = ["--validation_split_size", "50", "--do_eval", "--eval_strategy", "no"]


def job_name(weight: float) -> str:
    return f"evidence_weight{weight:g}"


def predicted_evidence(model, features, batch_size: int = 8) -> list[tuple[int, int, int, str, list[float]]]:
    """`(document, head, tail, relation, sentence shares)` of every predicted relation."""
    import torch

    from data_collators import DataCollatorForDocRE

    collator = DataCollatorForDocRE(pad_token_id=model.config.pad_token_id or 0)
    facts = []
    model.eval()
    for start in range(0, len(features), batch_size):
        rows = [features[i] for i in range(start, min(start + batch_size, len(features)))]
        batch = {k: v for k, v in collator(rows).items() if k not in ("labels", "evidence_labels")}
        with torch.no_grad():
            output = model(**batch, return_predictions=True)
        for pair, column in output.predictions[:, 1:].nonzero().tolist():
            document = int(batch["pair_document_index"][pair])
            shares = output.evidence[pair, : len(rows[document]["sentence_spans"])].tolist()
            head, tail = batch["hts"][pair].tolist()
            facts.append((start + document, head, tail, model.config.id2label[column + 1], shares))
    return facts


def evidence_scores(output_dir: Path, flags: list[str]) -> dict:
    """Relation and evidence scores of the trained model on the held-out and test documents, at every threshold and
    with the mention-sentence heuristic (on the same relations)."""
    import run_docre
    from data_collators import featurize_dataset
    from docre_training.metrics import official_scores
    from modeling_pemscl import PemsclModel

    _, data_args, training_args = run_docre.parse_arguments(flags + ["--output_dir", str(output_dir)])
    raw = run_docre.load_splits(data_args, training_args.seed)
    model = PemsclModel.from_pretrained(str(output_dir))
    tokenizer = run_docre.load_tokenizer(str(output_dir), model.config.word_prefix_space)
    train = list(raw["train"])
    relations = [label for index, label in sorted(model.config.id2label.items()) if index]
    scores = {}
    for split in ("validation", "test"):
        documents = list(raw[split])
        features = featurize_dataset(raw[split], tokenizer, model.config.label2id)
        facts = predicted_evidence(model, features)

        def score(evidence_of) -> dict:
            predictions = [{"title": documents[d]["title"], "h_idx": h, "t_idx": t, "r": r,
                            "evidence": evidence_of(d, h, t, shares)} for d, h, t, r, shares in facts]
            result = official_scores(predictions, documents, train_documents=train, relation_vocabulary=relations)
            return {key: round(result.get(key, 0.0), 2) for key in ("f1", "ign_f1", "evi_p", "evi_r", "evi_f1")}

        scores[split] = {
            "thresholds": {str(threshold): score(lambda d, h, t, shares, threshold=threshold: [
                s for s, share in enumerate(shares) if share >= threshold]) for threshold in EVIDENCE_THRESHOLDS},
            # The heuristic: every sentence holding a mention of the head or the tail.
            "mention_sentences": score(lambda d, h, t, shares: sorted(
                {mention["sent_id"] for entity in (h, t) for mention in documents[d]["vertexSet"][entity]})),
        }
    return scores


def run_job(weight: float, seed: int, args) -> dict:
    output_dir = WORK / "evidence" / f"{job_name(weight)}__seed{seed}"
    flags = (run_docre_flags(args, seed, "--do_train", "--do_predict") + RECIPE_FLAGS + HELD_OUT
             + ["--evidence_weight", str(weight)])
    record = {"weight": weight, "seed": seed, "recipe": RECIPE_FLAGS + HELD_OUT,
              **train_resumably(output_dir, flags, f"evidence weight {weight:g} seed {seed}")}
    record["evidence"] = evidence_scores(output_dir, flags)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*", type=float, default=list(EVIDENCE_WEIGHTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=EVIDENCE_SEEDS)
    add_queue_arguments(parser)
    args = parser.parse_args(argv)
    args.model_name_or_path = args.model_name_or_path or encoder_path()
    weight_of = {job_name(weight): weight for weight in args.weights}
    jobs = [(name, seed) for seed in args.seeds for name in weight_of]  # seed-major: every weight a first seed
    run_queue(jobs, RESULTS, WORK / "evidence", lambda name, seed: run_job(weight_of[name], seed, args), args,
              label="evidence ")


if __name__ == "__main__":
    main()
