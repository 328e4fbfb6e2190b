"""bench/reproduce.py: the main table's budget is the paper's 8 epochs with every model setting spelled out."""

import run_docre
from bench.reproduce import MODEL_SETTINGS, ROWS, main_budget_flags


def parsed(flags, tmp_path):
    return run_docre.parse_arguments(["--model_name_or_path", "encoder", "--output_dir", str(tmp_path)] + flags)


def test_main_budget_trains_eight_epochs_with_the_pinned_settings(tmp_path):
    model_args, data_args, training_args = parsed(main_budget_flags(), tmp_path)
    assert training_args.num_train_epochs == 8 and training_args.bf16 and data_args.validation_split_size == 50
    assert training_args.train_sampling_strategy == "group_by_length"
    pinned = dict(zip(MODEL_SETTINGS[::2], MODEL_SETTINGS[1::2]))
    assert model_args.contrastive_anchors == pinned["--contrastive_anchors"] == "all"
    assert model_args.relation_bias_init == pinned["--relation_bias_init"] == "auto"
    assert str(model_args.pair_embedding_size) == pinned["--pair_embedding_size"]


def test_pinned_settings_are_the_package_defaults(tmp_path):
    """The main table ran with the defaults a user gets: when a default changes, this fails until the table is rerun
    (and MODEL_SETTINGS follows)."""
    pinned, _, pinned_training = parsed(MODEL_SETTINGS, tmp_path)
    default, _, default_training = parsed([], tmp_path)
    names = [flag[2:] for flag in MODEL_SETTINGS[::2]]
    model_names = [name for name in names if hasattr(pinned, name)]
    assert {name: getattr(pinned, name) for name in model_names} == {name: getattr(default, name) for name in model_names}
    for flags, training_args in ((MODEL_SETTINGS, pinned_training), ([], default_training)):
        run_docre.apply_training_defaults(training_args, run_docre.passed_flags(flags))
    assert pinned_training.train_sampling_strategy == default_training.train_sampling_strategy


def test_rows_change_only_what_their_names_say(tmp_path):
    base, _, _ = parsed(main_budget_flags(), tmp_path)
    no_contrastive, _, _ = parsed(main_budget_flags() + ROWS["pemscl_no_contrastive"], tmp_path)
    atlop, _, _ = parsed(main_budget_flags() + ROWS["atlop"], tmp_path)
    assert base.loss == "pemscl" and base.use_contrastive and not no_contrastive.use_contrastive
    assert atlop.loss == "atlop" and atlop.relation_bias_init == base.relation_bias_init
