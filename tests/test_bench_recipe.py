"""bench/recipe.py: every diagnostic configuration trains what its name (and the report's reading of it) says."""

from types import SimpleNamespace

import pytest

import run_docre
from bench.experiments import CONFIGURATIONS, RECIPE_FLAGS, parse_configuration, stage_flags
from bench.recipe import job_flags

DIAGNOSTIC = [name for name in CONFIGURATIONS if name.startswith(("project", "release"))]


def parsed(flags, tmp_path):
    return run_docre.parse_arguments(["--model_name_or_path", "encoder", "--output_dir", str(tmp_path)] + flags)


@pytest.mark.parametrize("name", DIAGNOSTIC)
def test_diagnostic_configuration_sets_the_factors_its_name_says(name, tmp_path):
    flags = RECIPE_FLAGS + stage_flags("diagnostic") + CONFIGURATIONS[name]
    model_args, _, training_args = parsed(flags, tmp_path)
    factors = parse_configuration(name)
    assert str(model_args.pair_embedding_size) == factors["d1"]
    assert model_args.head_init == factors["init"]
    assert model_args.contrastive_anchors == factors["anchors"]
    assert model_args.contrastive_average == factors["average"]
    # Spelled out, not left to the package default (which may change while the queue runs).
    assert CONFIGURATIONS[name].count("--relation_bias_init") == 1
    assert model_args.relation_bias_init == float(factors["prior"])
    assert model_args.encoder_attention == "eager" and training_args.train_sampling_strategy == "random"


def test_same_recipe_jobs_use_the_whole_training_file_and_no_evaluation(tmp_path):
    flags = job_flags("same_recipe", "default", 66, SimpleNamespace(model_name_or_path="encoder", data_dir=tmp_path))
    _, data_args, training_args = run_docre.parse_arguments(flags + ["--output_dir", str(tmp_path)])
    assert data_args.validation_split_size in (None, 0)
    assert training_args.eval_strategy == "no" and training_args.seed == 66
    assert training_args.num_train_epochs == 3 and training_args.learning_rate == 5e-5


def test_a_demo_record_carries_the_budget_the_demo_ran_with_and_no_paths(monkeypatch, tmp_path):
    from bench.recipe import demo_budget

    monkeypatch.setattr(run_docre, "demo_data_files", lambda data_dir: (f"{data_dir}/dev.json", f"{data_dir}/test.json"))
    flags = job_flags("demo", "default", 43, SimpleNamespace(data_dir=tmp_path))
    budget = demo_budget(flags)
    assert not any(str(tmp_path) in flag or "minilm" in flag.lower() for flag in budget)
    _, _, training_args = run_docre.parse_arguments(["--model_name_or_path", "m", "--output_dir", "o"] + budget)
    _, _, demo_args = run_docre.parse_arguments(flags)
    for name in ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "seed", "eval_strategy"):
        assert getattr(training_args, name) == getattr(demo_args, name), name
    assert training_args.seed == 43


def test_bf16_jobs_are_skipped_where_bf16_is_emulated(tmp_path, monkeypatch, capsys):
    import bench.recipe as recipe

    monkeypatch.setattr(recipe, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(recipe, "WORK", tmp_path / "work")
    ran = []
    monkeypatch.setattr(recipe, "run_job", lambda stage, config, seed, args: ran.append((config, seed)) or {
        "metrics": {"test_f1": 1.0}, "minutes": 0.0})
    argv = ["same_recipe", "--configs", "default+bf16", "default", "--seeds", "66"]
    monkeypatch.setattr(recipe, "bf16_would_be_emulated", lambda: True)
    recipe.main(argv)
    assert ran == [("default", 66)] and "Skipping default+bf16: this CPU has no bf16" in capsys.readouterr().out
    monkeypatch.setattr(recipe, "bf16_would_be_emulated", lambda: False)
    recipe.main(argv)
    assert ran == [("default", 66), ("default+bf16", 66)]
