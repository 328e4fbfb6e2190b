"""bench/gpu_check.py: the packed encoder unpacks to the rounded weights (float16 rounding is the oracle), and the
script prepared as for the device machine runs every part at toy size on the CPU and writes every measurement."""

import json
import lzma
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from bench.gpu_check import (
    PACKED_MANIFEST,
    main,
    read_documents,
    read_rel2id,
    resolve_data_dir,
    round_mantissa,
    step_plan,
    unpack_encoder,
    used_token_ids,
)
from data_helpers import dataset_folder
from train_helpers import save_tiny_encoder

REPOSITORY = Path(__file__).resolve().parents[1]
BATCHES = ("median", "longest", "median_unpadded")


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    return dataset_folder(tmp_path_factory.mktemp("fixtures") / "re-docred")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, fixture_data):
    """`--prepare` as the device run needs it, on the fixture documents and a tiny random BERT encoder."""
    encoder = save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))
    target = tmp_path_factory.mktemp("prepared")
    main(["--prepare", str(target), "--data_dir", str(fixture_data), "--encoder_dir", str(encoder)])
    return {"encoder": encoder, "data": target / "re-docred", "packed": target / "minilm"}


@pytest.fixture(scope="module")
def tiny_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "gpu.json"
    command = [sys.executable, str(REPOSITORY / "bench" / "gpu_check.py"), "--tiny",
               "--data_dir", str(prepared["data"]), "--encoder_dir", str(prepared["packed"]), "--out", str(out),
               "--work_dir", str(tmp_path_factory.mktemp("work"))]
    finished = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return {"results": json.loads(out.read_text()), "out": out}


def test_mantissa_rounding_matches_float16_rounding_in_its_range():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(100_000) * rng.choice([1e-3, 0.05, 3.0, 900.0], 100_000)).astype(np.float32)
    values = values[(np.abs(values) > 1e-4) & (np.abs(values) < 6e4)]  # float16's normal range
    rounded = round_mantissa(values.view(np.uint32), 10).view(np.float32)
    np.testing.assert_array_equal(rounded, values.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(round_mantissa(values.view(np.uint32), 23), values.view(np.uint32))


def test_packed_encoder_unpacks_to_the_rounded_weights_with_unused_rows_zeroed(prepared, fixture_data, tmp_path):
    manifest = json.loads((prepared["packed"] / PACKED_MANIFEST).read_text())
    unpack_encoder(prepared["packed"], tmp_path)
    original = load_file(str(prepared["encoder"] / "model.safetensors"))
    unpacked = load_file(str(tmp_path / "model.safetensors"))
    documents = read_documents(fixture_data, "dev_revised.json") + read_documents(fixture_data, "test_revised.json")
    kept = used_token_ids(prepared["encoder"], documents, read_rel2id(fixture_data))
    assert set(unpacked) == set(original)
    for name, source in original.items():
        expected = source
        if source.dtype == np.float32:
            expected = round_mantissa(source.view(np.uint32), manifest["mantissa_bits"]).view(np.float32)
        if name.endswith("word_embeddings.weight"):
            np.testing.assert_array_equal(unpacked[name][kept], expected[kept])
            unused = np.ones(len(source), bool)
            unused[kept] = False
            assert unused.any() and not unpacked[name][unused].any()
        else:
            np.testing.assert_array_equal(unpacked[name], expected)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "config.json").exists()


def test_compressed_data_folder_resolves_to_the_published_files(prepared, fixture_data, tmp_path):
    assert not (prepared["data"] / "dev_revised.json").exists()
    resolved = resolve_data_dir(prepared["data"], tmp_path)
    for name in ("dev_revised.json", "test_revised.json"):
        assert (resolved / name).read_bytes() == (fixture_data / name).read_bytes()
        assert lzma.decompress((prepared["data"] / f"{name}.xz").read_bytes()) == (fixture_data / name).read_bytes()


def positive_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_run_measures_every_step_configuration(tiny_run):
    results = tiny_run["results"]
    assert results["complete"] and results["parts_done"] == ["steps", "recipe", "pipeline"]
    assert results["environment"]["torch"] and results["environment"]["transformers"]
    steps = results["steps"]
    assert steps["status"] == "done"
    expected = {(c["mode"], c["precision"], c["attention"], c["checkpointing"], c["batch"]) for c in step_plan(BATCHES)}
    measured = [(c["mode"], c["precision"], c["attention"], c["checkpointing"], c["batch"])
                for c in steps["configurations"]]
    assert len(measured) == len(expected) and set(measured) == expected
    assert {"fp32", "bf16", "fp16"} <= {c[1] for c in expected} and {True, False} == {c[3] for c in expected}
    on_gpu = results["environment"]["device"].startswith("cuda")
    for configuration in steps["configurations"]:
        assert configuration["status"] == "done", configuration
        assert configuration["attention_implementation"] == (
            "pemscl_sdpa_explicit_last_layer" if configuration["attention"] == "sdpa" else "eager")
        for kind in ("full", "encoder_only"):
            measurement = configuration[kind]
            assert positive_number(measurement["step_s_median"]) and positive_number(measurement["step_s_min"])
            for field in ("peak_allocated_gib", "peak_reserved_gib", "resident_before_gib"):
                assert positive_number(measurement[field]) if on_gpu else measurement[field] is None
            if configuration["mode"] == "train":
                # fp16 losses may be non-finite (a finding the script records, not a failure of the script).
                assert isinstance(measurement["nonfinite_losses"], int)
                if configuration["precision"] != "fp16":
                    assert measurement["nonfinite_losses"] == 0 and math.isfinite(measurement["last_loss"])
            else:
                assert measurement["last_loss"] is None and measurement["nonfinite_losses"] is None
        assert positive_number(configuration["full_over_encoder_time"])
    if not on_gpu:
        assert "not measured" in steps["memory_note"] and "CPU autocast" in steps["precision_note"]
    batches = steps["batches"]
    assert set(batches) == set(BATCHES)
    assert batches["median"]["padded_length"] == batches["longest"]["padded_length"] == 1024
    # The longest fixture documents need more than one encoder window each side of a 512-token window.
    assert batches["longest"]["encoder_input_shape"][0] > len(batches["longest"]["titles"])
    assert batches["median_unpadded"]["padded_length"] == max(batches["median_unpadded"]["subwords"])


def test_tiny_run_trains_the_recipe_and_predicts_through_the_pipeline(tiny_run):
    results = tiny_run["results"]
    recipe = results["recipe"]
    assert recipe["status"] == "done" and recipe["returncode"] == 0, recipe.get("log_tail")
    assert 0 <= recipe["test_f1"] <= 100 and positive_number(recipe["train_runtime"])
    assert recipe["command"][recipe["command"].index("--seed") + 1] == "66"
    assert recipe["configuration"] == ("default+bf16" if results["environment"]["device"].startswith("cuda")
                                       else "default")
    assert recipe["cpu_reference"]["test_f1"] == pytest.approx(45.98, abs=0.01)
    assert (tiny_run["out"].parent / recipe["log"]).exists()
    assert results["encoder"]["mantissa_bits"] == 10 and results["encoder"]["word_embedding_rows_zeroed"] > 0
    pipeline = results["pipeline"]
    assert pipeline["status"] == "done" and "model_note" not in pipeline
    assert set(pipeline["variants"]) == {"fp32", "bf16_autocast", "bf16_weights"}
    for name, variant in pipeline["variants"].items():
        assert variant["status"] == "done", variant
        assert positive_number(variant["documents_per_s"]) and 0 <= variant["f1"] <= 100
        assert variant["weights_dtype"] == ("torch.bfloat16" if name == "bf16_weights" else "torch.float32")
    assert 0 <= pipeline["variants"]["bf16_autocast"]["same_facts_as_fp32"] <= 1
