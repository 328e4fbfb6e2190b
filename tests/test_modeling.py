"""PemsclModel: the vectorized ATLOP head against a per-pair loop, long documents, the bilinear kernel,
Auto-class and remote-code loading, zero-pair batches and bf16."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from model_helpers import NUM_LABELS, make_batch, random_document, tiny_config, tiny_model
from modeling_pemscl import GroupedBilinear, PemsclConfig, PemsclModel, optimize_for_inference, pemscl_objective


def reference_logits(model, batch):
    """ATLOP head (paper appendix D) written per document, per entity and per pair with plain loops."""
    config = model.config
    outputs = model.encoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True
    )
    hidden, attention = outputs.last_hidden_state, outputs.attentions[-1]
    block = config.bilinear_block_size
    logits = []
    for (h, t), doc in zip(batch["hts"].tolist(), batch["pair_document_index"].tolist()):
        def entity(e):
            positions = [p for p in batch["mention_positions"][doc, e].tolist() if p >= 0]
            embedding = torch.logsumexp(torch.stack([hidden[doc, p] for p in positions]), dim=0)
            entity_attention = torch.stack([attention[doc, :, p, :] for p in positions]).mean(0)  # [H, L]
            return embedding, entity_attention

        head_embedding, head_attention = entity(h)
        tail_embedding, tail_attention = entity(t)
        shared = (head_attention * tail_attention).mean(0)
        shared = shared / (shared.sum() + 1e-5)
        context = shared @ hidden[doc]
        z_h = torch.tanh(model.head_extractor(torch.cat([head_embedding, context])))
        z_t = torch.tanh(model.tail_extractor(torch.cat([tail_embedding, context])))
        x = torch.cat([torch.outer(z_h[g : g + block], z_t[g : g + block]).flatten() for g in range(0, len(z_h), block)])
        logits.append(model.bilinear.weight @ x + model.bilinear.bias)
    return torch.stack(logits)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def test_vectorized_head_matches_per_pair_loop(generator):
    model = tiny_model()
    documents = [random_document(generator, 40, 4), random_document(generator, 23, 3), random_document(generator, 30, 5)]
    batch = make_batch(documents, generator=generator)
    with torch.no_grad():
        output = model(**batch)
        expected = reference_logits(model, batch)
    assert output.logits.shape == (4 * 3 + 3 * 2 + 5 * 4, NUM_LABELS)
    torch.testing.assert_close(output.logits, expected, rtol=1e-4, atol=1e-5)
    # x_{h,t} of Eq. 14 (the contrastive embeddings) stands behind the factored pair embeddings.
    assert output.pair_embeddings.shape == (38, 32 * 8) == output.pair_embeddings.materialize().shape
    x = output.pair_embeddings.materialize()
    torch.testing.assert_close(x @ model.bilinear.weight.t() + model.bilinear.bias, expected, rtol=1e-4, atol=1e-5)


def test_grouped_bilinear_matches_materialized_linear():
    torch.manual_seed(0)
    layer = GroupedBilinear(pair_embedding_size=12, block_size=4, num_labels=5, block_elements=20).double()
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    head = torch.randn(11, 3, 4, dtype=torch.double, requires_grad=True)
    tail = torch.randn(11, 3, 4, dtype=torch.double, requires_grad=True)
    x = (head.unsqueeze(-1) * tail.unsqueeze(-2)).flatten(1)
    expected = F.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(layer(head, tail), expected)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad((layer(head, tail) * upstream).sum(), (head, tail, layer.weight, layer.bias))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (head, tail, layer.weight, layer.bias))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    small_head, small_tail = head[:4].detach().requires_grad_(), tail[:4].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda h, t: layer(h, t), (small_head, small_tail))


def test_one_window_encoding_equals_plain_encoding(generator):
    model = tiny_model()
    batch = make_batch([random_document(generator, 50, 4), random_document(generator, 30, 3)], generator=generator)
    positions = batch["mention_positions"]
    with torch.no_grad():
        hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], positions)
        windowed_hidden, windowed_attention = model._encode_windows(
            batch["input_ids"], batch["attention_mask"], positions.flatten(1).clamp(min=0), window=64
        )
    real_tokens = batch["attention_mask"].bool()
    real_mentions = positions.flatten(1) >= 0
    torch.testing.assert_close(windowed_hidden[real_tokens], hidden[real_tokens])
    torch.testing.assert_close(windowed_attention[real_mentions], attention[real_mentions])


def test_document_longer_than_two_windows(generator):
    model = tiny_model()
    window = model.config.encoder_window_length
    ids, entities = random_document(generator, 3 * window, 3)
    late = 2 * window + 10  # far past the first window
    entities[2] = [late]
    batch = make_batch([(ids, entities), random_document(generator, 20, 2)], generator=generator)
    model.train()
    output = model(**batch)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.bilinear.weight.grad is not None

    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        moved = dict(batch)
        moved["mention_positions"] = batch["mention_positions"].clone()
        taken = set(batch["mention_positions"][0].flatten().tolist())
        moved["mention_positions"][0, 0, 0] = next(p for p in range(late + 1, late + 20) if p not in taken)
        after_move = model(**moved).logits
        changed = dict(batch)
        changed["input_ids"] = batch["input_ids"].clone()
        changed["input_ids"][0, late] = (changed["input_ids"][0, late] + 1) % 100 + 5  # the late mention's token
        after_token = model(**changed).logits
    pairs_of_doc0 = batch["pair_document_index"] == 0
    assert not torch.allclose(before[pairs_of_doc0], after_move[pairs_of_doc0])
    assert not torch.allclose(before[pairs_of_doc0], after_token[pairs_of_doc0])
    # The second document is unaffected by edits to the first.
    torch.testing.assert_close(before[~pairs_of_doc0], after_token[~pairs_of_doc0])


def test_windows_cover_every_token_and_mention(generator):
    model = tiny_model(window_stride=17)
    window = model.config.encoder_window_length
    ids, entities = random_document(generator, 2 * window + 7, 6)
    batch = make_batch([(ids, entities)], generator=generator)
    with torch.no_grad():
        hidden, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
    assert hidden.shape == (1, len(ids), 32)
    assert (hidden.abs().sum(-1) > 0).all()  # no token left without a window
    real = batch["mention_positions"].flatten(1) >= 0
    torch.testing.assert_close(attention[real].sum(-1), torch.ones(int(real.sum()), 4))


def test_loss_is_the_objective_of_the_losses_module(generator):
    model = tiny_model().train()
    batch = make_batch([random_document(generator, 30, 4), random_document(generator, 25, 3)], generator=generator)
    output = model(**batch)
    terms = pemscl_objective(
        output.logits,
        batch["labels"],
        output.pair_embeddings,
        loss="pemscl",
        temperature=0.5,
        contrastive_weight=0.3,
        contrastive_average=model.config.contrastive_average,
        contrastive_anchors=model.config.contrastive_anchors,
    )
    torch.testing.assert_close(output.loss, terms["loss"])
    torch.testing.assert_close(output.loss, output.pmt_loss + output.entropy_loss + 0.3 * output.contrastive_loss)


@pytest.mark.parametrize("loss", ["atlop", "bce"])
def test_baseline_losses_train(generator, loss):
    model = tiny_model(loss=loss).train()
    batch = make_batch([random_document(generator, 30, 4)], generator=generator)
    output = model(**batch)
    assert output.contrastive_loss is None and torch.isfinite(output.loss)
    output.loss.backward()


def test_negative_sampling_changes_only_na_rows(generator):
    model = tiny_model(negative_sample_ratio=0.5).train()
    batch = make_batch([random_document(generator, 30, 4)], generator=generator)
    torch.manual_seed(0)
    first = model(**batch).loss
    torch.manual_seed(1)
    second = model(**batch).loss
    assert not torch.allclose(first, second)  # a new negative subset per step
    model.eval()
    with torch.no_grad():  # no sampling outside training
        assert torch.allclose(model(**batch).loss, model(**batch).loss)


def test_zero_pair_batches(generator):
    model = tiny_model().train()
    batch = make_batch([random_document(generator, 12, 1), random_document(generator, 9, 0)], generator=generator)
    assert batch["hts"].shape == (0, 2)
    output = model(**batch, return_predictions=True)
    assert output.logits.shape == (0, NUM_LABELS) and output.predictions.shape == (0, NUM_LABELS)
    assert output.loss.item() == 0.0
    output.loss.backward()

    mixed = make_batch([random_document(generator, 12, 1), random_document(generator, 20, 3)], generator=generator)
    assert model(**mixed).logits.shape == (6, NUM_LABELS)


def test_bad_batches_raise_clear_errors(generator):
    model = tiny_model()
    batch = make_batch([random_document(generator, 20, 3)], generator=generator)
    with pytest.raises(ValueError, match="labels must be"):
        model(**{**batch, "labels": batch["labels"][:, :3]})
    with pytest.raises(ValueError, match="hts holds entity index"):
        model(**{**batch, "hts": batch["hts"] + 5})
    with pytest.raises(TypeError, match="unexpected inputs"):
        model(**batch, token_type_ids=batch["input_ids"])


def test_bf16_autocast_is_finite_and_close(generator):
    model = tiny_model().train()
    batch = make_batch([random_document(generator, 40, 5), random_document(generator, 30, 3)], generator=generator)
    reference = model(**batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch.testing.assert_close(output.logits.float(), reference.logits, atol=0.15, rtol=0.05)


def test_decode_uses_threshold_and_top_k():
    model = tiny_model(max_relations_per_pair=2)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, -1.0, 0.5, -2.0], [5.0, 1.0, 2.0, 3.0, -1.0, 0.5, -2.0]])
    predictions = model.decode(logits)
    assert predictions[0].nonzero().flatten().tolist() == [2, 3]
    assert predictions[1].nonzero().flatten().tolist() == [0]


def test_from_encoder_pretrained_keeps_encoder_weights(tmp_path):
    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_config().encoder)
    encoder.save_pretrained(tmp_path / "encoder")
    model = PemsclModel.from_encoder_pretrained(str(tmp_path / "encoder"), id2label={0: "Na", 1: "P17"})
    torch.testing.assert_close(
        model.encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight
    )
    assert model.config.num_labels == 2 and model.config.encoder.hidden_size == 32
    assert model.encoder.config._attn_implementation == "pemscl_sdpa_explicit_last_layer"  # encoder_attention="sdpa"
    assert set(model.head_parameter_names()) == {
        "head_extractor.weight", "head_extractor.bias", "tail_extractor.weight", "tail_extractor.bias",
        "bilinear.weight", "bilinear.bias",
    }


@pytest.mark.parametrize("pair_embedding_size", [32, 64])
def test_head_init_scales(pair_embedding_size):
    """`normal`: transformers' normal(0, initializer_range) and zero biases; `fan_in_uniform`: nn.Linear's
    default, uniform(+-1/sqrt(fan_in)) for weights and biases (the released code)."""
    std = tiny_config().encoder.initializer_range
    normal = tiny_model(seed=5, pair_embedding_size=pair_embedding_size, bilinear_block_size=8, head_init="normal")
    uniform = tiny_model(seed=5, pair_embedding_size=pair_embedding_size, bilinear_block_size=8,
                         head_init="fan_in_uniform")
    for name in ("head_extractor", "tail_extractor", "bilinear"):
        layer_normal, layer_uniform = getattr(normal, name), getattr(uniform, name)
        fan_in = layer_uniform.weight.shape[1]
        assert fan_in == (64 if name != "bilinear" else pair_embedding_size * 8)
        bound = fan_in ** -0.5
        weight = layer_uniform.weight
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound
        assert weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.1)
        assert layer_uniform.bias.abs().max() <= bound and layer_uniform.bias.abs().min() >= 0
        assert layer_uniform.bias.abs().sum() > 0
        assert layer_normal.weight.std().item() == pytest.approx(std, rel=0.1)
        assert layer_normal.weight.mean().abs() < 0.2 * std
        assert torch.equal(layer_normal.bias, torch.zeros_like(layer_normal.bias))
    # The encoder is initialized the same way under both choices.
    for (name, a), (_, b) in zip(normal.encoder.named_parameters(), uniform.encoder.named_parameters()):
        assert torch.equal(a, b), name


def test_new_settings_are_validated_and_survive_save_and_reload(tmp_path):
    for name, value in (("head_init", "xavier"), ("contrastive_anchors", "na")):
        with pytest.raises(ValueError, match=name):
            tiny_config(**{name: value})
    model = tiny_model(seed=2, head_init="fan_in_uniform", contrastive_anchors="positive", contrastive_average="outside")
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModel.from_pretrained(tmp_path / "saved")
    config = reloaded.config
    assert (config.head_init, config.contrastive_anchors, config.contrastive_average) == ("fan_in_uniform", "positive", "outside")
    # Loading restores the trained weights; the init is not applied again.
    for (name, a), (_, b) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(a, b), name


def test_contrastive_anchors_reach_the_loss(generator):
    documents = [random_document(generator, 30, 4), random_document(generator, 25, 3)]
    batch = make_batch(documents, generator=generator)
    losses = {}
    for anchors in ("positive", "all"):
        model = tiny_model(seed=4, contrastive_anchors=anchors).train()
        output = model(**batch)
        losses[anchors] = output.contrastive_loss
        terms = pemscl_objective(output.logits, batch["labels"], output.pair_embeddings,
                                 **model.config.objective_kwargs())
        torch.testing.assert_close(output.contrastive_loss, terms["contrastive_loss"])
    assert (batch["labels"][:, 0] == 1).any()  # NA pairs are there to change the loss
    assert losses["all"] > losses["positive"]


def test_save_and_reload_with_auto_classes_and_remote_code(tmp_path, generator):
    model = tiny_model(seed=3)
    batch = make_batch([random_document(generator, 30, 4)], generator=generator, with_labels=False)
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved")
    files = sorted(os.listdir(tmp_path / "saved"))
    assert {"config.json", "model.safetensors", "modeling_pemscl.py", "configuration_pemscl.py", "losses.py"} <= set(files)
    config = AutoConfig.from_pretrained(tmp_path / "saved")
    assert isinstance(config, PemsclConfig) and config.auto_map["AutoModel"] == "modeling_pemscl.PemsclModel"

    reloaded = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(reloaded, PemsclModel)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=0)

    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_pemscl"] = None  # this project's package must not be importable here
        try:
            import modeling_pemscl
        except ImportError:
            pass
        else:
            raise SystemExit("modeling_pemscl was importable")
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            logits = model(**batch).logits
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}), rtol=0, atol=0)
        print("REMOTE-OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_truncated_weights_give_a_clear_error(tmp_path):
    tiny_model().save_pretrained(tmp_path / "saved")
    weights = tmp_path / "saved" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a save killed halfway
    with pytest.raises(ValueError, match=r"saved cannot be read .*incomplete.*Save the model again"):
        AutoModel.from_pretrained(tmp_path / "saved")


def test_only_safetensors_encoder_weights_are_loaded(tmp_path):
    encoder = AutoModel.from_config(tiny_config().encoder)
    encoder.config.save_pretrained(tmp_path / "pickled")
    torch.save(encoder.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pickled has no safetensors weights.*use_safetensors"):
        PemsclModel.from_encoder_pretrained(str(tmp_path / "pickled"), id2label={0: "Na", 1: "P17"})
    trusted = PemsclModel.from_encoder_pretrained(str(tmp_path / "pickled"), id2label={0: "Na", 1: "P17"},
                                                  encoder_kwargs={"use_safetensors": False})
    torch.testing.assert_close(trusted.encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_overlapping_windows_average_like_a_window_by_window_reference(generator):
    """Each window `[CLS] ids[1 + s : 1 + s + C] [SEP]` encoded alone (C = window - 2, starts every C // 2 and
    one flush with the end): hidden states are the mean over the windows that hold a token, a mention's
    attention row the mean of its rows in the windows that hold it, spread onto document positions and
    renormalized."""
    window = 16
    model = tiny_model(window_length=window)
    length, content = 40, window - 2
    ids, entities = random_document(generator, length, 3)
    entities[0] = [26]  # inside three windows
    batch = make_batch([(ids, entities)], generator=generator, with_labels=False)
    with torch.no_grad():
        hidden, rows = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])

        n_content = length - 2
        starts = list(range(0, n_content - content, content // 2)) + [n_content - content]
        hidden_sum = torch.zeros(length, hidden.shape[-1])
        covered = torch.zeros(length)
        mention_row = torch.zeros(rows.shape[2], length)
        for start in starts:
            positions = [0] + list(range(1 + start, 1 + start + content)) + [length - 1]
            output = model.encoder(input_ids=ids[positions][None], output_attentions=True)
            for local, position in enumerate(positions):
                hidden_sum[position] += output.last_hidden_state[0, local]
                covered[position] += 1
            if 26 in positions:
                attention = output.attentions[-1][0, :, positions.index(26)]  # [H, window]
                for local, position in enumerate(positions):
                    mention_row[:, position] += attention[:, local]
        reference_hidden = hidden_sum / covered[:, None]
        reference_row = mention_row / mention_row.sum(-1, keepdim=True)
    assert (covered >= 1).all() and covered[26] == 3
    torch.testing.assert_close(hidden[0], reference_hidden, rtol=1e-5, atol=1e-5)
    mention = batch["mention_positions"][0].flatten().tolist().index(26)
    torch.testing.assert_close(rows[0, mention], reference_row, rtol=1e-5, atol=1e-6)


def test_grouped_bilinear_bf16_matches_fp32_at_real_size():
    """1,000 pairs, d1 = 768, k = 64 (x has 49,152 dimensions), logits of order 1: under bf16 autocast the
    forward and the gradients stay within bf16's relative precision of fp32."""
    generator = torch.Generator().manual_seed(0)
    layer = GroupedBilinear(768, 64, 97)
    torch.nn.init.normal_(layer.weight, std=0.02, generator=generator)
    torch.nn.init.normal_(layer.bias, std=0.1, generator=generator)
    head = torch.tanh(torch.randn(1000, 12, 64, generator=generator)).requires_grad_(True)
    tail = torch.tanh(torch.randn(1000, 12, 64, generator=generator)).requires_grad_(True)
    upstream = torch.randn(1000, 97, generator=generator)

    def run(autocast):
        layer.zero_grad()
        head.grad = tail.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = layer(head, tail)
        (logits.float() * upstream).sum().backward()
        return logits.float().detach(), head.grad.clone(), tail.grad.clone(), layer.weight.grad.clone()

    def relative_error(a, b):
        return ((a - b).norm() / b.norm()).item()

    reference, low = run(False), run(True)
    assert reference[0].std() > 0.5  # logits of order 1, not the bias alone
    for name, a, b in zip(("logits", "head grad", "tail grad", "weight grad"), low, reference):
        assert relative_error(a, b) < 0.02, name


@pytest.mark.parametrize("kind", ["pemscl", "atlop", "bce"])
def test_each_config_loss_computes_that_loss(generator, kind):
    """The value of `output.loss` is the loss `config.loss` names, from the losses module's own functions."""
    from modeling_pemscl.losses import atlop_loss, bce_loss, contrastive_loss, entropy_loss, pmt_loss

    model = tiny_model(seed=6, loss=kind).train()
    batch = make_batch([random_document(generator, 30, 4), random_document(generator, 25, 3)], generator=generator)
    output = model(**batch)
    logits, labels = output.logits, batch["labels"]
    expected = {
        "atlop": lambda: atlop_loss(logits, labels).mean(),
        "bce": lambda: bce_loss(logits, labels).mean(),
        "pemscl": lambda: (pmt_loss(logits, labels) + entropy_loss(logits, labels)).mean()
        + 0.3 * contrastive_loss(output.pair_embeddings, labels, 0.5, model.config.contrastive_average,
                                 model.config.contrastive_anchors).mean(),
    }[kind]()
    torch.testing.assert_close(output.loss, expected)
    others = {name: fn(logits, labels).mean() for name, fn in (("atlop", atlop_loss), ("bce", bce_loss))}
    assert all(not torch.allclose(output.loss, value) for name, value in others.items() if name != kind)


def _encoder_variant(kind, window_length=None, seed=5):
    """A tiny model whose encoder is BERT or RoBERTa (two layers, no dropout), padded batches included."""
    from transformers import BertConfig, RobertaConfig

    settings = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=70, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = BertConfig(**settings) if kind == "bert" else RobertaConfig(pad_token_id=0, **settings)
    torch.manual_seed(seed)
    return PemsclModel(tiny_config(encoder=encoder.to_dict(), window_length=window_length))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("window_length", [None, 16], ids=["one-window", "several-windows"])
def test_sdpa_encoder_with_explicit_last_layer_equals_eager(generator, kind, window_length):
    """encoder_attention="sdpa" (SDPA for every layer but the last, whose probabilities are computed explicitly)
    gives eager attention's hidden states, last-layer attention rows, logits and gradients."""
    import copy

    from modeling_pemscl.modeling_pemscl import SDPA_EXPLICIT_LAST_LAYER

    model = _encoder_variant(kind, window_length)
    assert model.config.encoder_attention == "sdpa"
    assert model.encoder.config._attn_implementation == SDPA_EXPLICIT_LAST_LAYER
    eager = copy.deepcopy(model)
    assert eager.set_encoder_attention("eager") == "eager" and eager.config.encoder_attention == "eager"
    batch = make_batch([random_document(generator, 40, 4), random_document(generator, 23, 3)], generator=generator)
    positions = batch["mention_positions"]
    real_tokens, real_mentions = batch["attention_mask"].bool(), positions.flatten(1) >= 0
    with torch.no_grad():
        hidden, attention = model.eval().encode(batch["input_ids"], batch["attention_mask"], positions)
        eager_hidden, eager_attention = eager.eval().encode(batch["input_ids"], batch["attention_mask"], positions)
        if window_length is None:  # the encoder keeps only the last layer's probabilities
            recorded = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     output_attentions=True).attentions
            everything = eager.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       output_attentions=True).attentions
            assert len(recorded) == 1 and len(everything) == 2
            torch.testing.assert_close(recorded[0], everything[-1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hidden[real_tokens], eager_hidden[real_tokens], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention[real_mentions], eager_attention[real_mentions], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(attention[real_mentions][:, 0], attention[real_mentions][:, 1])  # heads differ

    model.train(), eager.train()
    output, eager_output = model(**batch), eager(**batch)
    torch.testing.assert_close(output.logits, eager_output.logits, rtol=1e-4, atol=1e-5)
    output.loss.backward(), eager_output.loss.backward()
    for (name, parameter), (_, eager_parameter) in zip(model.named_parameters(), eager.named_parameters()):
        if parameter.grad is not None or eager_parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, eager_parameter.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_encoder_attention_setting_falls_back_validates_and_reloads(tmp_path):
    from modeling_pemscl.modeling_pemscl import configure_encoder_attention

    with pytest.raises(ValueError, match="encoder_attention"):
        tiny_config(encoder_attention="flash")
    model = tiny_model(encoder_attention="eager")
    assert model.encoder.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.encoder_attention == "eager" and reloaded.encoder.config._attn_implementation == "eager"
    # An encoder whose attention cannot be switched stays eager.
    encoder = tiny_model().encoder
    encoder._supports_sdpa = False
    encoder.set_attn_implementation("eager")
    assert configure_encoder_attention(encoder, "sdpa") == "eager"


@pytest.mark.parametrize("head_init", ["normal", "fan_in_uniform"])
def test_relation_bias_init_starts_relations_below_the_threshold(generator, head_init, tmp_path):
    """relation_bias_init=c lowers each relation column's initial bias by c (the NA / threshold column and every
    weight unchanged), so every pair starts at NA with margin about c; a reload keeps the trained bias."""
    plain = tiny_model(seed=4, head_init=head_init)
    prior = tiny_model(seed=4, head_init=head_init, relation_bias_init=4.5)
    torch.testing.assert_close(prior.bilinear.bias[0], plain.bilinear.bias[0])
    torch.testing.assert_close(prior.bilinear.bias[1:], plain.bilinear.bias[1:] - 4.5)
    for (name, a), (_, b) in zip(plain.named_parameters(), prior.named_parameters()):
        if name != "bilinear.bias":
            assert torch.equal(a, b), name
    batch = make_batch([random_document(generator, 30, 4)], generator=generator)
    with torch.no_grad():
        margins = (prior(**batch).logits[:, 1:] - prior(**batch).logits[:, :1])
        plain_margins = (plain(**batch).logits[:, 1:] - plain(**batch).logits[:, :1])
    torch.testing.assert_close(margins, plain_margins - 4.5)
    assert not prior.decode(prior(**batch).logits)[:, 1:].any()
    prior.save_pretrained(tmp_path / "saved")
    reloaded = AutoModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.relation_bias_init == 4.5
    assert torch.equal(reloaded.bilinear.bias, prior.bilinear.bias)  # not lowered a second time
    with pytest.raises(ValueError, match="relation_bias_init"):
        tiny_config(relation_bias_init=float("inf"))


def test_relation_bias_init_auto_is_log_of_the_number_of_relations(tmp_path):
    """"auto" lowers the relation biases by log(R) (R = relations, NA excluded): a NA pair's initial loss over
    its R negatives is then about R * exp(-log R) = 1; the setting saves as "auto"."""
    plain = tiny_model(seed=5)
    auto = tiny_model(seed=5, relation_bias_init="auto")
    relations = plain.config.num_labels - 1
    assert auto.config.relation_bias_offset() == pytest.approx(math.log(relations))
    torch.testing.assert_close(auto.bilinear.bias[1:], plain.bilinear.bias[1:] - math.log(relations))
    torch.testing.assert_close(auto.bilinear.bias[0], plain.bilinear.bias[0])
    auto.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["relation_bias_init"] == "auto"
    assert AutoModel.from_pretrained(tmp_path / "saved").config.relation_bias_offset() == pytest.approx(math.log(relations))
    for bad in ("4.6", "log", True, float("nan")):
        with pytest.raises(ValueError, match="relation_bias_init"):
            tiny_config(relation_bias_init=bad)


def test_defaults_are_the_held_out_choice():
    """The defaults bench/recipe.py chose on the held-out split (README, "The paper as printed, or its released
    code"): the paper's d1 and average, the release's anchors and head init, and the NA prior."""
    config = PemsclConfig()
    assert (config.pair_embedding_size, config.contrastive_average) == (768, "inside")
    assert (config.contrastive_anchors, config.head_init) == ("all", "fan_in_uniform")
    assert config.relation_bias_init == "auto" and config.relation_bias_offset() == pytest.approx(math.log(96))


@pytest.mark.parametrize("encoder_attention", ["sdpa", "eager"])
def test_gradient_checkpointing_recomputes_the_encoder_and_keeps_the_gradients(generator, encoder_attention):
    """`supports_gradient_checkpointing`: `--gradient_checkpointing` must recompute every encoder layer in backward
    (the memory saving) and give the gradients of the plain run (dropout is off in the tiny encoder)."""
    model = tiny_model(encoder_attention=encoder_attention).train()
    batch = make_batch([random_document(generator, 40, 4), random_document(generator, 30, 3)], generator=generator)
    calls = []
    for layer in model.encoder.encoder.layer:  # a submodule: transformers checkpoints a layer's forward, not its hooks
        layer.intermediate.register_forward_hook(lambda module, args, output: calls.append(module))

    def gradients():
        model.zero_grad()
        calls.clear()
        model(**batch).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed, checkpointed_calls = gradients()
    layers = len(model.encoder.encoder.layer)
    assert plain_calls == layers and checkpointed_calls == 2 * layers  # each layer runs again in backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_atlop_windows_layout_for_bert_and_roberta():
    """`window_scheme="atlop"`: the research code's first window `tokens[:W - e] + e separators`, its last
    `[CLS] + tokens[-(W - 1):]`, the appended separators and that [CLS] mapped to no position (-1)."""
    from modeling_pemscl.modeling_pemscl import _atlop_windows

    window = 8
    assert _atlop_windows([5], window, 1) == [(0, [0, 1, 2, 3, 4], [0, 1, 2, 3, 4])]
    for end_tokens in (1, 2):  # BERT: [SEP]; RoBERTa: </s></s>
        (_, first_sources, first_targets), (_, last_sources, last_targets) = _atlop_windows([13], window, end_tokens)
        kept = window - end_tokens
        assert first_sources == list(range(kept)) + [12] * end_tokens
        assert first_targets == list(range(kept)) + [-1] * end_tokens
        assert last_sources == [0] + list(range(6, 13)) and last_targets == [-1] + list(range(6, 13))
    # 16 tokens: positions W - e .. len - W are in neither window (zero vectors, as in the research code).
    (_, _, first), (_, _, last) = _atlop_windows([16], window, 2)
    assert sorted(set(range(16)) - set(first) - set(last)) == [6, 7, 8]
    with pytest.raises(ValueError, match="max_document_length"):
        _atlop_windows([17], window, 1)


@pytest.mark.parametrize("settings, message", [
    (dict(contrastive_temperature=float("inf")), "contrastive_temperature=inf"),
    (dict(contrastive_temperature=float("nan")), "contrastive_temperature=nan"),
    (dict(contrastive_weight=float("nan")), "contrastive_weight=nan"),
    (dict(window_length=16, window_stride=15), "window_stride=15 is longer than a window's content \\(14"),
    (dict(window_scheme="atlop"), "max_document_length"),
    (dict(max_document_length=2), "max_document_length=2"),
], ids=["temperature-inf", "temperature-nan", "weight-nan", "stride-past-content", "atlop-without-cut", "tiny-cut"])
def test_settings_that_would_break_the_model_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**settings)
    tiny_config(window_length=16, window_stride=14)  # a stride of the whole content leaves no gap


def test_the_pooler_only_load_report_is_dropped_and_others_kept():
    import logging

    from modeling_pemscl.modeling_pemscl import _DropPoolerOnlyLoadReport

    def record(keys):
        table = "\n".join(["Key | Status | |", "----+----+-+-"] + [f"{key} | UNEXPECTED | |" for key in keys])
        return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0,
                                 "BertModel LOAD REPORT from: x\n" + table, None, None)

    dropper = _DropPoolerOnlyLoadReport()
    assert not dropper.filter(record(["pooler.dense.weight", "pooler.dense.bias"]))
    assert dropper.filter(record(["pooler.dense.weight", "encoder.layer.0.attention.self.query.weight"]))
    assert dropper.filter(logging.LogRecord("x", logging.WARNING, "", 0, "anything else", None, None))


# ------------------------------------------------------------------ inference precision
@pytest.fixture(scope="module")
def released_tiny(tmp_path_factory):
    """The checkpoint written by the released research code (tests/fixtures/released-pemscl-tiny), converted, with
    its real documents batched, and its fp32 outputs."""
    from transformers import AutoTokenizer

    from modeling_pemscl.convert_original_checkpoint import convert_original_checkpoint
    from test_convert_original_checkpoint import CHECKPOINT, DOCUMENTS, ENCODER, model_outputs

    folder = tmp_path_factory.mktemp("released") / "model"
    convert_original_checkpoint(CHECKPOINT, str(ENCODER), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch, reference = model_outputs(PemsclModel.from_pretrained(folder).eval(), tokenizer, DOCUMENTS)
    return folder, tokenizer, DOCUMENTS, batch, reference


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_inference_precisions_keep_the_predictions_of_fp32(released_tiny, precision):
    """On the real fixture documents (a 1,024-subword one among them), against fp32, whose logits are about 2.5 in
    magnitude. int8 (the encoder and the grouped bilinear): logits within 0.3 (measured 0.20, mean 0.018). bf16
    (the whole forward): logits within 0.5 (measured 0.29, mean 0.016). Both: the same decision on 99.9% of the
    (pair, relation) cells (measured 99.98%) and on every relation of 98.5% of the pairs (measured 98.85% and
    98.99%)."""
    from test_convert_original_checkpoint import model_outputs

    folder, tokenizer, documents, _, reference = released_tiny
    model = optimize_for_inference(PemsclModel.from_pretrained(folder), precision)
    assert model.inference_precision == precision and not model.training
    _, output = model_outputs(model, tokenizer, documents)
    assert output.logits.dtype == torch.float32 and output.logits.shape == reference.logits.shape
    difference = (output.logits - reference.logits).abs().max().item()
    assert difference <= {"fp32": 0.0, "int8": 0.3, "bf16": 0.5}[precision], difference
    assert (difference > 0) == (precision != "fp32")  # the arithmetic did change
    same_cells = (output.predictions == reference.predictions).float().mean().item()
    same_pairs = (output.predictions == reference.predictions).all(-1).float().mean().item()
    assert same_cells >= 0.999 and same_pairs >= (1.0 if precision == "fp32" else 0.985), (same_cells, same_pairs)


@pytest.mark.parametrize("int8_dot_products", [True, False])
def test_int8_quantizes_the_encoder_linears_except_those_kept_in_float(released_tiny, monkeypatch,
                                                                       int8_dot_products):
    """Every encoder linear layer but the FFN outputs becomes int8; with int8 dot products (VNNI) its activations
    use 8 bits, without them 7 (the saturation-safe range): the two differ, and fp32 is closer to the 8-bit one."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    import modeling_pemscl.modeling_pemscl as modeling

    monkeypatch.setattr(modeling, "cpu_has_int8_dot_products", lambda: int8_dot_products)
    folder = released_tiny[0]
    model = optimize_for_inference(PemsclModel.from_pretrained(folder), "int8")
    kinds = {name: type(module) for name, module in model.encoder.named_modules()
             if isinstance(module, (torch.nn.Linear, DynamicInt8Linear))}
    kept = {name for name in kinds if re.search(r"layer\.\d+\.output\.dense$", name)}
    assert kept and all(kinds[name] is torch.nn.Linear for name in kept)
    quantized = {name for name, kind in kinds.items() if issubclass(kind, DynamicInt8Linear)}
    assert {kinds[name].__name__ for name in quantized} == {
        "FullRangeDynamicInt8Linear" if int8_dot_products else "Linear"}
    assert quantized == {name for name in kinds if "layer." in name} - kept
    assert {name for name in quantized if name.endswith("attention.self.query")}
    # The extractors stay in fp32, the bilinear classifier computes in int8, and nothing trains any more.
    assert type(model.head_extractor) is torch.nn.Linear and not any(p.requires_grad for p in model.parameters())
    assert len(model.bilinear.int8_groups) == model.bilinear.num_groups
    assert model.bilinear.int8_reduce_range is not int8_dot_products
    # 8 bits against 7 on one layer's real input: closer to fp32.
    layer = dict(model.encoder.named_modules())["encoder.layer.0.attention.self.query"]
    reference = dict(PemsclModel.from_pretrained(folder).encoder.named_modules())["encoder.layer.0.attention.self.query"]
    inputs = torch.randn(64, layer.in_features, generator=torch.Generator().manual_seed(0))
    eight_bits = torch.ops.quantized.linear_dynamic(inputs, layer._packed_params._packed_params, reduce_range=False)
    seven_bits = torch.ops.quantized.linear_dynamic(inputs, layer._packed_params._packed_params, reduce_range=True)
    with torch.no_grad():
        exact = reference(inputs)
    assert (layer(inputs) - (eight_bits if int8_dot_products else seven_bits)).abs().max() == 0
    assert (eight_bits - exact).abs().mean() < (seven_bits - exact).abs().mean()


@pytest.mark.parametrize("activation_bits", [8, 7])
def test_int8_bilinear_is_each_group_through_a_dynamic_int8_linear_layer(activation_bits):
    """The int8 grouped bilinear against a reference built from PyTorch's own dynamic int8 layer, one per group, on each
    pair's products scaled to a largest entry of 1 (and the logits scaled back); and within quantization error of fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    generator = torch.Generator().manual_seed(0)
    pair_size, block, labels, pairs = 32, 8, 5, 37
    bilinear = GroupedBilinear(pair_size, block, labels, block_elements=block * block * 10)  # 4 row chunks
    torch.nn.init.normal_(bilinear.weight, std=0.05, generator=generator)
    torch.nn.init.normal_(bilinear.bias, generator=generator)
    head, tail = (torch.tanh(torch.randn(pairs, pair_size // block, block, generator=generator)) for _ in range(2))
    with torch.no_grad():
        exact = bilinear(head, tail)
    bilinear.quantize_int8(activation_bits)
    with torch.no_grad():
        fast = bilinear(head, tail)
    expected = bilinear.bias.detach().expand(pairs, -1).clone()
    for group in range(pair_size // block):
        layer = torch.nn.Linear(block * block, labels, bias=False)
        layer.weight.data = bilinear.weight.detach()[:, group * block * block:(group + 1) * block * block].clone()
        layer = quantize_dynamic(torch.nn.Sequential(layer), {"0": per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]
        for chunk in range(0, pairs, 10):  # the kernel's input scale is one per call: 10 pairs a call here
            rows = range(chunk, min(chunk + 10, pairs))
            scales = [head[p, group].abs().max() * tail[p, group].abs().max() for p in rows]
            products = torch.stack([torch.outer(head[p, group] / head[p, group].abs().max(),
                                                tail[p, group] / tail[p, group].abs().max()).reshape(-1) for p in rows])
            out = torch.ops.quantized.linear_dynamic(products, layer._packed_params._packed_params,
                                                     reduce_range=activation_bits < 8)
            for row, p in enumerate(rows):
                expected[p] += out[row] * scales[row]
    assert torch.allclose(fast, expected, atol=1e-5), (fast - expected).abs().max()
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()


def test_an_int8_model_neither_trains_nor_saves(released_tiny, tmp_path):
    folder, _, _, batch, _ = released_tiny
    model = optimize_for_inference(PemsclModel.from_pretrained(folder), "int8")
    with pytest.raises(RuntimeError, match="quantized to int8 for inference"):
        model.train()(**batch)
    with pytest.raises(ValueError, match="Save the model before quantizing"):
        model.save_pretrained(tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


def test_unsupported_precisions_are_refused_clearly(released_tiny):
    folder = released_tiny[0]
    with pytest.raises(ValueError, match=r"precision='fp8': choose one of \['fp32', 'bf16', 'fp16', 'int8'\]"):
        optimize_for_inference(PemsclModel.from_pretrained(folder), "fp8")
    with pytest.raises(ValueError, match="'fp16' runs on GPUs; on a CPU use 'bf16'"):
        optimize_for_inference(PemsclModel.from_pretrained(folder), "fp16")
    on_meta = PemsclModel.from_pretrained(folder).to("meta")
    with pytest.raises(ValueError, match="'int8' runs on CPUs .*meta"):
        optimize_for_inference(on_meta, "int8")
    bf16 = optimize_for_inference(PemsclModel.from_pretrained(folder), "bf16")
    assert optimize_for_inference(bf16, "bf16") is bf16  # the same precision again is a no-op
    with pytest.raises(ValueError, match="already prepared for bf16 inference; load it again"):
        optimize_for_inference(bf16, "int8")
    with pytest.raises(TypeError, match="takes a PemsclModel"):
        optimize_for_inference(torch.nn.Linear(2, 2), "int8")


def test_bf16_on_a_cpu_without_bf16_instructions_warns(released_tiny, monkeypatch, caplog):
    import modeling_pemscl.modeling_pemscl as modeling

    monkeypatch.setattr(modeling, "cpu_computes_bf16_natively", lambda: False)
    optimize_for_inference(PemsclModel.from_pretrained(released_tiny[0]), "bf16")
    assert "emulates bf16 and inference runs slower than fp32" in caplog.text


# ------------------------------------------------------------------ evidence
LONG_TITLE = "Faliero coup"  # 633 subwords: more than MiniLM's 512 positions, so encoded in windows
SHORT_TITLES = ("Mess of Blues (Jeff Healey album)", "Soccer Academy", "The Sacramento Bee")


@pytest.fixture(scope="module")
def minilm():
    from model_helpers import minilm_model

    return minilm_model()


def pair_rows(batch, wanted):
    """Rows of `hts` of the `(document, head, tail)` triples in `wanted`."""
    rows = {(d, h, t): i for i, (d, (h, t)) in enumerate(zip(batch["pair_document_index"].tolist(),
                                                            batch["hts"].tolist()))}
    return [rows[key] for key in wanted]


def reference_evidence(model, batch, rows):
    """Each pair of `rows`: the localized-context attention (mean over heads of the product of the two entities'
    attention, each entity's attention the mean of its mentions' last-layer rows, normalized as the model does)
    recomputed with loops over mentions, heads and positions from `model.encode`'s document-level outputs, then
    summed over each sentence's tokens (`sentence_ids`) and divided by the total over the sentences."""
    with torch.no_grad():
        _, attention = model.encode(batch["input_ids"], batch["attention_mask"], batch["mention_positions"])
    num_mentions = batch["mention_positions"].shape[2]
    heads, length = attention.shape[2:]
    num_sentences = batch["evidence_labels"].shape[1]
    result = []
    for row in rows:
        doc = int(batch["pair_document_index"][row])
        sentence_ids = batch["sentence_ids"][doc].tolist()

        def entity_attention(entity):
            mentions = [m for m in range(num_mentions) if batch["mention_positions"][doc, entity, m] >= 0]
            mean = [[0.0] * length for _ in range(heads)]
            for m in mentions:
                for k, weights in enumerate(attention[doc, entity * num_mentions + m].tolist()):
                    for position, weight in enumerate(weights):
                        mean[k][position] += weight / len(mentions)
            return mean

        head, tail = batch["hts"][row].tolist()
        head_attention, tail_attention = entity_attention(head), entity_attention(tail)
        shared = [sum(head_attention[k][p] * tail_attention[k][p] for k in range(heads)) / heads
                  for p in range(length)]
        total = sum(shared) + 1e-5
        shares = [0.0] * num_sentences
        for position, weight in enumerate(shared):
            if sentence_ids[position] >= 0:
                shares[sentence_ids[position]] += weight / total
        in_sentences = sum(shares)
        result.append([share / in_sentences if in_sentences else 0.0 for share in shares])
    return torch.tensor(result)


def test_evidence_is_the_pair_attention_pooled_per_sentence(minilm):
    from model_helpers import fixture_batch

    batch, _, features = fixture_batch(SHORT_TITLES)
    with torch.no_grad():
        output = minilm(**batch, return_predictions=True)
    assert output.evidence.shape == batch["evidence_labels"].shape == (len(batch["hts"]), 7)
    rows = pair_rows(batch, [(0, 0, 1), (0, 5, 2), (0, 19, 18), (1, 0, 3), (1, 10, 0), (2, 4, 11), (2, 18, 17)])
    torch.testing.assert_close(output.evidence[rows], reference_evidence(minilm, batch, rows), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(output.evidence.sum(-1), torch.ones(len(output.evidence)))
    for document, feature in enumerate(features):  # nothing on the padding sentences of a shorter document
        assert (output.evidence[batch["pair_document_index"] == document, len(feature["sentence_spans"]):] == 0).all()
    assert torch.equal(output.evidence_predictions, output.evidence >= minilm.config.evidence_threshold)


@pytest.mark.parametrize("window_length", [None, 128], ids=["512-two-windows", "128-many-windows"])
def test_evidence_pools_sentences_across_windows(window_length):
    from model_helpers import fixture_batch, minilm_model

    model = minilm_model(window_length=window_length)
    batch, _, features = fixture_batch([LONG_TITLE, "Soccer Academy"])
    length = len(features[0]["input_ids"])
    assert length > 512 >= model.config.encoder_window_length
    with torch.no_grad():
        output = model(**batch)
    # Entities 20 and 21 are mentioned only in sentence 13, past the first 512 subwords; 12 and 13 at both ends;
    # 0 only at the start and 21 only past 512.
    rows = pair_rows(batch, [(0, 20, 21), (0, 12, 13), (0, 2, 7), (0, 0, 1), (0, 0, 21), (1, 3, 5)])
    expected = reference_evidence(model, batch, rows)
    torch.testing.assert_close(output.evidence[rows], expected, rtol=1e-4, atol=1e-6)
    late = [s for s, (start, _) in enumerate(features[0]["sentence_spans"]) if start >= 512]
    assert late and output.evidence[rows[0], late].sum() > 0.1  # read from the second window
    totals = output.evidence.sum(-1)
    if window_length is None:  # windows of 512 every 255 subwords: every two positions share a window's attention
        torch.testing.assert_close(totals, torch.ones(len(totals)))
    else:
        # Windows of 128: the attention rows of mentions that share no window never meet, so such a pair has no
        # context and no evidence (zeros, not NaN); every other pair a distribution.
        assert expected[4].sum() == 0 and totals[rows[4]] == 0
        assert ((totals - 1).abs() < 1e-5).logical_or(totals == 0).all() and (totals > 0).sum() > len(totals) // 2


def evidence_term(evidence, evidence_labels):
    """Mean over the pairs with gold evidence of KL(even gold || evidence), one pair and one sentence at a time."""
    values = []
    for predicted, gold in zip(evidence.tolist(), evidence_labels.tolist()):
        sentences = [s for s, flag in enumerate(gold) if flag]
        if sentences:
            g = 1 / len(sentences)
            values.append(sum(g * (math.log(g) - math.log(predicted[s] + 1e-8)) for s in sentences))
    return sum(values) / len(values)


def test_loss_adds_the_weighted_evidence_term(minilm, monkeypatch):
    from model_helpers import fixture_batch

    batch, _, _ = fixture_batch(SHORT_TITLES)
    relation_batch = {key: value for key, value in batch.items() if key not in ("sentence_ids", "evidence_labels")}
    with torch.no_grad():
        relation_only = minilm(**relation_batch)
    monkeypatch.setattr(minilm.config, "evidence_weight", 0.5)
    minilm.zero_grad()
    output = minilm(**batch)
    expected_term = evidence_term(output.evidence.detach(), batch["evidence_labels"])
    assert expected_term > 0
    torch.testing.assert_close(output.evidence_loss.double(), torch.tensor(expected_term, dtype=torch.float64))
    torch.testing.assert_close(output.loss, relation_only.loss + 0.5 * output.evidence_loss)
    torch.testing.assert_close(output.loss.double(), relation_only.loss.double() + 0.5 * expected_term)
    for name in ("pmt_loss", "entropy_loss", "contrastive_loss"):
        torch.testing.assert_close(getattr(output, name), getattr(relation_only, name))
    # The term trains the attention (the encoder), not the relation classifier.
    output.evidence_loss.backward()
    assert minilm.encoder.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0
    assert minilm.bilinear.weight.grad is None or (minilm.bilinear.weight.grad == 0).all()
    minilm.zero_grad()


def test_evidence_weight_zero_leaves_the_loss_of_a_model_without_evidence_inputs(minilm):
    from model_helpers import fixture_batch

    assert minilm.config.evidence_weight == 0
    batch, _, _ = fixture_batch(SHORT_TITLES)
    relation_batch = {key: value for key, value in batch.items() if key not in ("sentence_ids", "evidence_labels")}
    with torch.no_grad():
        with_evidence, without = minilm(**batch), minilm(**relation_batch)
        assert torch.equal(with_evidence.loss, without.loss) and with_evidence.evidence_loss is None
        assert with_evidence.evidence is not None and without.evidence is None  # evaluation still gives evidence
        minilm.train()
        try:
            torch.manual_seed(0)
            trained_with = minilm(**batch)
            torch.manual_seed(0)
            trained_without = minilm(**relation_batch)
        finally:
            minilm.eval()
    assert torch.equal(trained_with.loss, trained_without.loss)
    assert trained_with.evidence is None and trained_with.evidence_loss is None  # not computed in training


def test_max_document_length_cuts_sentence_ids_like_the_document(minilm, monkeypatch):
    from model_helpers import fixture_batch

    batch, _, features = fixture_batch([LONG_TITLE, "Soccer Academy"])
    cut = 300
    long_length, short_length = (len(f["input_ids"]) for f in features)
    assert long_length > cut > short_length
    # The cut batch written out by hand: the long document's first cut - 1 subwords, then its final special token,
    # which belongs to no sentence; mentions from the cut on dropped.
    truncated = {key: value.clone() for key, value in batch.items()}
    for key in ("input_ids", "attention_mask", "sentence_ids"):
        truncated[key] = truncated[key][:, :cut].clone()
    truncated["input_ids"][0, cut - 1] = features[0]["input_ids"][-1]
    truncated["sentence_ids"][0, cut - 1] = -1
    truncated["mention_positions"][truncated["mention_positions"] >= cut] = -1
    assert batch["sentence_ids"][0, cut - 1] >= 0  # the cut position was inside a sentence
    assert truncated["sentence_ids"][1].tolist() == batch["sentence_ids"][1, :cut].tolist()  # the short one stays

    monkeypatch.setattr(minilm.config, "evidence_weight", 0.5)
    with torch.no_grad():
        expected = minilm(**truncated)
        monkeypatch.setattr(minilm.config, "max_document_length", cut)
        output = minilm(**batch)
    torch.testing.assert_close(output.evidence, expected.evidence)
    torch.testing.assert_close(output.loss, expected.loss)
    rows = pair_rows(batch, [(0, 0, 1), (0, 2, 4), (0, 4, 8), (1, 3, 5)])
    torch.testing.assert_close(output.evidence[rows], reference_evidence(minilm, truncated, rows), rtol=1e-4,
                               atol=1e-6)
    # Sentences past the cut get nothing; a pair whose entity lost every mention has no evidence at all.
    cut_sentences = [s for s, (start, _) in enumerate(features[0]["sentence_spans"]) if start >= cut - 1]
    first_doc = batch["pair_document_index"] == 0
    assert cut_sentences and (output.evidence[first_doc][:, cut_sentences] == 0).all()
    lost = pair_rows(batch, [(0, 20, 21)])  # mentioned only past the cut
    assert (output.evidence[lost] == 0).all()
