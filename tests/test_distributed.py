"""PEMSCL under torch.distributed (2 CPU processes, gloo): the contrastive loss over the global batch, the loss and
the DDP gradients equal to the single-process ones on the concatenated batch; and a 2-process `run_docre.py` smoke
run through `torchrun`."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model_helpers import make_batch, random_document, tiny_model
from train_helpers import COMMON_ARGUMENTS, DATA_ARGUMENTS, HEAD_ARGUMENTS, read_json, save_tiny_encoder

WORLD_SIZE = 2
REPOSITORY = Path(__file__).resolve().parents[1]
# Every connection stays on the loopback: by default gloo binds to, and torchrun advertises, the address the
# machine's host name resolves to, which may be unreachable or unresolvable (a CI machine named `vm` with no
# such entry in /etc/hosts made both hang). Gloo takes its interface from here; torchrun's address is its
# `--local-addr` flag (it sets MASTER_ADDR for its workers itself, and the file:// init uses none).
LOOPBACK_ENVIRONMENT = {"GLOO_SOCKET_IFNAME": "lo"}
PROCESS_GROUP_TIMEOUT = timedelta(seconds=120)
SPAWN_TIMEOUT_S = 300


def documents_and_labels():
    """Four documents (unequal pair counts: 3, 4, 5 and 2 entities) with labels; ranks 0 and 1 hold two each."""
    generator = torch.Generator().manual_seed(7)
    documents = [random_document(generator, length, entities)
                 for length, entities in ((30, 3), (41, 4), (35, 5), (22, 2))]
    labels = make_batch(documents, generator=generator)["labels"]
    return documents, labels


def local_batch(rank: int | None):
    """The batch of `rank` (its two documents, their rows of the global labels), or the whole batch for None."""
    documents, labels = documents_and_labels()
    if rank is None:
        batch = make_batch(documents, with_labels=False)
        batch["labels"] = labels
        return batch
    full = make_batch(documents, with_labels=False)
    mine = (full["pair_document_index"] // 2) == rank
    batch = make_batch(documents[2 * rank : 2 * rank + 2], with_labels=False)
    batch["labels"] = labels[mine]
    return batch


def _worker(rank: int, init_file: str, output_folder: str) -> None:
    os.environ.update(LOOPBACK_ENVIRONMENT)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=PROCESS_GROUP_TIMEOUT)
    try:
        model = tiny_model(seed=0).train()  # same seed: the same weights on every process
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
        outputs = ddp_model(**local_batch(rank))
        outputs.loss.backward()
        torch.save(
            {
                "loss": outputs.loss.detach(),
                "contrastive_loss": outputs.contrastive_loss.detach(),
                "gradients": {name: parameter.grad.clone() for name, parameter in model.named_parameters()},
            },
            os.path.join(output_folder, f"rank{rank}.pt"),
        )
        # DDP's reducer holds the process group: release it while the group is alive. Left to the end of the
        # function it was destroyed after the group, and about one run in six hung in that teardown.
        del outputs, ddp_model
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=5):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD_SIZE} gloo workers did not finish within {SPAWN_TIMEOUT_S} s")
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single_process():
    model = tiny_model(seed=0).train()
    outputs = model(**local_batch(None))
    outputs.loss.backward()
    return outputs, {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def test_the_halves_share_relations():
    """The contrastive positives of an anchor lie on both processes."""
    relations = [set(local_batch(rank)["labels"][:, 1:].nonzero()[:, 1].tolist()) for rank in range(WORLD_SIZE)]
    assert len(relations[0] & relations[1]) >= 3
    assert local_batch(0)["labels"].shape[0] != local_batch(1)["labels"].shape[0]  # unequal pair counts


def test_mean_of_process_losses_is_the_global_batch_loss(distributed_results, single_process):
    outputs, _ = single_process
    losses = torch.stack([result["loss"] for result in distributed_results])
    torch.testing.assert_close(losses.mean(), outputs.loss.detach(), rtol=1e-5, atol=1e-5)
    contrastive = torch.stack([result["contrastive_loss"] for result in distributed_results])
    torch.testing.assert_close(contrastive.mean(), outputs.contrastive_loss.detach(), rtol=1e-5, atol=1e-5)


def test_ddp_gradients_are_the_single_process_gradients(distributed_results, single_process):
    _, gradients = single_process
    for result in distributed_results:
        assert set(result["gradients"]) == set(gradients)
        for name, gradient in gradients.items():
            torch.testing.assert_close(result["gradients"][name], gradient, rtol=1e-4, atol=1e-5, msg=name)
    assert any(gradient.abs().max() > 1e-3 for gradient in gradients.values())


def test_local_contrastive_loss_differs_from_the_gathered_one(distributed_results, single_process):
    """Without the gather (each process on its own half) the losses differ: the test above can fail."""
    outputs, _ = single_process
    local = []
    for rank in range(WORLD_SIZE):
        model = tiny_model(seed=0).train()
        with torch.no_grad():
            local.append(model(**local_batch(rank)).contrastive_loss)
    local_mean = torch.stack(local).mean()
    assert abs(float(local_mean) - float(outputs.contrastive_loss.detach())) > 1e-3


# ------------------------------------------------------------------ run_docre.py on two processes
def run_process_group(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` that, on timeout, kills the launcher's workers too and fails the test. (`subprocess.run`
    kills only the launcher, then waits forever for the output pipes its workers still hold open.)"""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{command[:6]} did not finish within {timeout} s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_run_docre_on_two_processes_trains_like_one_process(tmp_path):
    """`torchrun --nproc_per_node 2` with 1 document per process and step trains like 1 process with 2 documents
    a step (no dropout, no negative sampling: the same global batches in the same order); its predictions,
    gathered over the processes, are those of the saved model evaluated on one process."""
    import run_docre
    from safetensors.torch import load_file

    encoder = save_tiny_encoder(tmp_path / "encoder", dropout=0.0)
    arguments = [
        "--model_name_or_path", str(encoder), *DATA_ARGUMENTS, "--max_predict_documents", "3",  # 3: uneven shards
        *HEAD_ARGUMENTS, *COMMON_ARGUMENTS,
        "--do_train", "--do_eval", "--do_predict", "--max_steps", "3", "--logging_steps", "1", "--save_strategy", "no",
    ]
    two, one, evaluation = tmp_path / "two-processes", tmp_path / "one-process", tmp_path / "evaluation"
    environment = {**os.environ, **LOOPBACK_ENVIRONMENT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_OFFLINE": "1"}
    launched = run_process_group(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr", "127.0.0.1",
         "--nproc_per_node", str(WORLD_SIZE), str(REPOSITORY / "run_docre.py"), *arguments,
         "--per_device_train_batch_size", "1", "--output_dir", str(two)],
        cwd=REPOSITORY, env=environment, timeout=240,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    run_docre.main([*arguments, "--per_device_train_batch_size", "2", "--output_dir", str(one)])

    weights, expected = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    logged = [e for e in read_json(two / "trainer_state.json")["log_history"] if "loss" in e]
    expected_logged = [e for e in read_json(one / "trainer_state.json")["log_history"] if "loss" in e]
    assert [e["step"] for e in logged] == [1, 2, 3]
    for entry, expected_entry in zip(logged, expected_logged):
        assert entry["loss"] == pytest.approx(expected_entry["loss"], rel=1e-5)
        for name in ("pmt_loss", "entropy_loss", "contrastive_loss"):  # global means, not rank 0's share
            assert entry[name] == pytest.approx(expected_entry[name], abs=2e-4), name

    run_docre.main([
        "--model_name_or_path", str(two), *DATA_ARGUMENTS, "--max_predict_documents", "3", *COMMON_ARGUMENTS,
        "--do_eval", "--do_predict", "--output_dir", str(evaluation),
    ])
    for name in ("predictions_eval.json", "predictions_test.json"):
        assert read_json(two / name) == read_json(evaluation / name), name
    assert len({p["title"] for p in read_json(two / "predictions_test.json")}) == 3
    expected_results = read_json(evaluation / "all_results.json")
    for key, value in read_json(two / "all_results.json").items():
        if key.startswith(("eval_", "test_")) and not key.endswith(("_runtime", "_per_second")):
            assert expected_results[key] == pytest.approx(value, abs=1e-9), key
