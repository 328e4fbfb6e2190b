"""bench/reproduce.py: the main table's budget is the paper's 8 epochs with every model setting spelled out."""

import contextlib
import json
import os
import subprocess
import sys

import pytest

import run_docre
from bench.experiments import MODEL_SETTINGS, ROWS, budget_flags
from bench.reproduce import parse_arguments, row_budget


def parsed(flags, tmp_path):
    return run_docre.parse_arguments(["--model_name_or_path", "encoder", "--output_dir", str(tmp_path)] + flags)


def test_main_budget_trains_eight_epochs_with_the_pinned_settings(tmp_path):
    model_args, data_args, training_args = parsed(budget_flags(), tmp_path)
    assert training_args.num_train_epochs == 8 and training_args.bf16 and data_args.validation_split_size == 50
    assert training_args.train_sampling_strategy == "group_by_length"
    pinned = dict(zip(MODEL_SETTINGS[::2], MODEL_SETTINGS[1::2]))
    assert model_args.contrastive_anchors == pinned["--contrastive_anchors"] == "all"
    assert model_args.relation_bias_init == pinned["--relation_bias_init"] == "auto"
    assert str(model_args.pair_embedding_size) == pinned["--pair_embedding_size"]


def test_pinned_settings_are_the_package_defaults(tmp_path):
    """The main table ran with the defaults a user gets: when a default changes, this fails until the table is rerun
    (and MODEL_SETTINGS follows)."""
    from modeling_pemscl import PemsclConfig

    pinned, _, pinned_training = parsed(MODEL_SETTINGS, tmp_path)
    _, _, default_training = parsed([], tmp_path)
    defaults = PemsclConfig()
    model_names = [name for name in (flag[2:] for flag in MODEL_SETTINGS[::2]) if hasattr(defaults, name)]
    assert model_names  # the pinned flags name config settings
    assert {name: getattr(pinned, name) for name in model_names} == {name: getattr(defaults, name) for name in model_names}
    assert pinned_training.train_sampling_strategy == default_training.train_sampling_strategy


def test_rows_change_only_what_their_names_say(tmp_path):
    base, _, _ = parsed(budget_flags(), tmp_path)
    no_contrastive, _, _ = parsed(budget_flags() + ROWS["pemscl_no_contrastive"], tmp_path)
    atlop, _, _ = parsed(budget_flags() + ROWS["atlop"], tmp_path)
    from modeling_pemscl import PemsclConfig

    def setting(arguments, name):  # what the model gets: the flag when given, else the config's default
        return arguments.config_settings().get(name, getattr(PemsclConfig, name))

    assert setting(base, "loss") == "pemscl" and setting(base, "use_contrastive")
    assert not setting(no_contrastive, "use_contrastive")
    assert setting(atlop, "loss") == "atlop" and setting(atlop, "relation_bias_init") == setting(base, "relation_bias_init")


def test_a_variant_changes_one_model_setting_and_only_under_its_own_name(tmp_path, capsys):
    args = parse_arguments(["--model_setting", "relation_bias_init=0", "--variant", "prior_off"])
    changed, _, _ = parsed(row_budget(args), tmp_path)
    base, _, _ = parsed(budget_flags(), tmp_path)
    assert changed.relation_bias_init == 0.0 and base.relation_bias_init == "auto"
    differing = {name for name in vars(base) if getattr(base, name) != getattr(changed, name)}
    assert differing == {"relation_bias_init"}
    with pytest.raises(SystemExit):  # without --variant its rows would land in the main table
        parse_arguments(["--model_setting", "relation_bias_init=0"])
    with pytest.raises(SystemExit):
        parse_arguments(["--model_setting", "learning_rate=1", "--variant", "x"])
    assert "relation_bias_init" in capsys.readouterr().err


@contextlib.contextmanager
def live_process():
    """The pid of another process alive for the block: the owner of a claim held by some other worker."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield other.pid
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def fake_queue(tmp_path, monkeypatch):
    """reproduce.py's queue in `tmp_path` with training replaced: returns the (row, seed) jobs it ran."""
    import bench.reproduce as reproduce

    monkeypatch.setattr(reproduce, "RESULTS", tmp_path / "rows")
    monkeypatch.setattr(reproduce, "VARIANTS", tmp_path / "variants")
    monkeypatch.setattr(reproduce, "WORK", tmp_path / "work")
    monkeypatch.setattr(reproduce, "bf16_would_be_emulated", lambda: False)  # the same on every host
    ran = []
    monkeypatch.setattr(reproduce, "run_row", lambda name, seed, args: ran.append((name, seed)) or {
        "metrics": {"test_f1": 1.0}, "minutes": 0.0})
    return ran


def test_a_claim_is_held_by_one_live_process_and_taken_over_from_a_dead_one(tmp_path):
    from bench.jobs import Claim

    claim = Claim(tmp_path / "queue" / "row__seed0.claim")
    assert claim.acquire() and claim.path.read_text() == str(os.getpid())
    assert claim.acquire()  # the owner may ask again
    claim.release()
    assert not claim.path.exists()

    with live_process() as other:
        claim.path.write_text(str(other))
        assert not claim.acquire() and claim.path.read_text() == str(other)
    assert claim.acquire() and claim.path.read_text() == str(os.getpid())  # its owner is gone: taken over


def test_workers_skip_the_rows_another_worker_holds(tmp_path, fake_queue):
    import bench.reproduce as reproduce

    with live_process() as holder:
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "atlop__seed0.claim").write_text(str(holder))
        reproduce.main(["--rows", "atlop", "pemscl", "--seeds", "0", "--model_name_or_path", "unused"])
    assert fake_queue == [("pemscl", 0)]
    assert json.loads((tmp_path / "rows" / "pemscl__seed0.json").read_text())["metrics"]["test_f1"] == 1.0
    assert not (tmp_path / "work" / "pemscl__seed0.claim").exists()  # released when the row finished


def test_sweep_rows_whose_names_hold_dots_have_claims_of_their_own(fake_queue):
    import bench.reproduce as reproduce

    rows = ["drop50_pemscl_nls0.05", "drop50_pemscl_nls0.3", "drop50_pemscl_nls0.5"]
    args = reproduce.parse_arguments(["--rows", *rows, "--seeds", "0"])
    from bench.jobs import Claim

    claims = {Claim.beside(reproduce.row_work_dir(args, name, 0)).path for name in rows}
    assert len(claims) == 3
    with live_process() as holder:
        held = Claim.beside(reproduce.row_work_dir(args, rows[0], 0)).path
        held.parent.mkdir(parents=True)
        held.write_text(str(holder))
        reproduce.main(["--rows", *rows, "--seeds", "0", "--model_name_or_path", "unused"])
    assert fake_queue == [(name, 0) for name in rows[1:]]  # another worker holds the first; the rest are free


def test_the_default_queue_runs_the_sweep_only_ratios_at_the_first_seed(fake_queue):
    import bench.reproduce as reproduce

    reproduce.main(["--seeds", "0", "1", "--model_name_or_path", "unused"])
    claims_rows = ["atlop", "bce", "pemscl", "pemscl_no_entropy", "pemscl_no_contrastive", "pemscl_no_both",
                   "drop50_pemscl", "drop50_atlop_nls0.1", "drop50_pemscl_nls0.1"]
    sweep_only = ["drop50_pemscl_nls0.05", "drop50_pemscl_nls0.3", "drop50_pemscl_nls0.5"]
    assert sorted(fake_queue) == sorted([(name, 0) for name in claims_rows + sweep_only]
                                        + [(name, 1) for name in claims_rows])
    assert [seed for _, seed in fake_queue] == sorted(seed for _, seed in fake_queue)  # seed-major
    # Asked for by name, a sweep ratio runs at every seed; its alias (ratio 1.0) is the same run, once.
    fake_queue.clear()
    reproduce.main(["--rows", "drop50_pemscl_nls0.3", "drop50_pemscl_nls1.0", "drop50_pemscl", "--seeds", "1", "2",
                    "--model_name_or_path", "unused"])
    # drop50_pemscl's seed 1 finished above.
    assert fake_queue == [("drop50_pemscl_nls0.3", 1), ("drop50_pemscl_nls0.3", 2), ("drop50_pemscl", 2)]


def test_a_bf16_table_refuses_to_start_where_bf16_is_emulated(fake_queue, monkeypatch):
    import bench.reproduce as reproduce

    monkeypatch.setattr(reproduce, "bf16_would_be_emulated", lambda: True)
    with pytest.raises(SystemExit, match="no bf16 instructions.*--fp32 --variant fp32"):
        reproduce.main(["--rows", "atlop", "--seeds", "0", "--model_name_or_path", "unused"])
    assert fake_queue == []
    reproduce.main(["--rows", "atlop", "--seeds", "0", "--model_name_or_path", "unused", "--fp32",
                    "--variant", "fp32"])
    assert fake_queue == [("atlop", 0)]
