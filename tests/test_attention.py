"""Pre-softmax attention capture: scores are right, and the model's outputs do not change."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AttentionInterface, BertConfig, BertForSequenceClassification

from tinylab.attention import (SCORES_ATTN, scores_attention_forward, use_attention_scores,
                               uses_attention_scores)
from tinylab.models import load_teacher


def tiny_model(attn: str = "sdpa", dropout: float = 0.1, seed: int = 0
               ) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32,
                        attention_probs_dropout_prob=dropout, attn_implementation=attn)
    return BertForSequenceClassification(config).eval()


def padded_batch(vocab: int = 60, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (3, 9), generator=gen)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    input_ids[mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": mask}


def manual_scores(self_attention, hidden: torch.Tensor) -> torch.Tensor:
    """QK^T / sqrt(d_k) from a BertSelfAttention's own query/key weights; (B, H, L, L)."""
    batch, length, _ = hidden.shape
    heads = self_attention.num_attention_heads
    d_k = self_attention.attention_head_size
    q = (hidden @ self_attention.query.weight.T + self_attention.query.bias)
    k = (hidden @ self_attention.key.weight.T + self_attention.key.bias)
    q = q.view(batch, length, heads, d_k).permute(0, 2, 1, 3)
    k = k.view(batch, length, heads, d_k).permute(0, 2, 1, 3)
    return q @ k.transpose(-1, -2) / d_k ** 0.5


def real_pairs(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: key is a real token (BERT masks keys, not queries)."""
    return mask.bool()[:, None, None, :].expand(-1, 1, mask.shape[1], -1)


def test_outputs_identical_to_sdpa_and_eager_with_padding():
    batch = padded_batch()
    model = tiny_model()
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True)
        model.set_attn_implementation("eager")
        eager = model(**batch, output_hidden_states=True, output_attentions=True)
        use_attention_scores(model)
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    assert uses_attention_scores(model)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-6)
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert len(out.attentions) == 2
    for scores, probs in zip(out.attentions, eager.attentions):
        assert scores.shape == (3, 4, 9, 9)
        # softmax of our scores is exactly eager's attention probabilities
        torch.testing.assert_close(scores.softmax(-1), probs, rtol=0, atol=1e-6)


def test_scores_equal_manual_qk_and_masked_keys_hold_finfo_min():
    batch = padded_batch()
    model = use_attention_scores(tiny_model())
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    keys = real_pairs(batch["attention_mask"]).expand(-1, 4, -1, -1)
    for layer, scores in enumerate(out.attentions):
        expected = manual_scores(model.bert.encoder.layer[layer].attention.self,
                                 out.hidden_states[layer])
        torch.testing.assert_close(scores[keys], expected[keys], rtol=1e-5, atol=1e-5)
        # padded key columns: the additive mask, torch.finfo(float32).min-scale
        assert (scores[~keys] <= torch.finfo(torch.float32).min / 2).all()
    # padded query rows still carry ordinary scores against the real keys
    assert torch.isfinite(out.attentions[0][2, :, 5, :3]).all()


def test_unpadded_batch_returns_plain_scores():
    batch = {"input_ids": padded_batch()["input_ids"][:1]}
    model = use_attention_scores(tiny_model())
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    expected = manual_scores(model.bert.encoder.layer[0].attention.self, out.hidden_states[0])
    torch.testing.assert_close(out.attentions[0], expected, rtol=1e-5, atol=1e-5)


def test_without_mask_interface_padding_is_silently_ignored():
    """Why SCORES_ATTN is also registered with AttentionMaskInterface (docs/paper-vs-code.md)."""
    name = "tinylab_test_no_mask"
    AttentionInterface.register(name, scores_attention_forward)
    try:
        batch = padded_batch()
        model = tiny_model()
        with torch.no_grad():
            ref = model(**batch).logits
            model.set_attn_implementation(name)
            broken = model(**batch).logits
        # the fully real first row agrees, padded rows do not: padded keys were attended to
        torch.testing.assert_close(broken[0], ref[0], rtol=0, atol=1e-6)
        assert not torch.allclose(broken[1:], ref[1:], atol=1e-4)
    finally:
        AttentionInterface._global_mapping.pop(name, None)


def test_training_mode_dropout_matches_eager():
    batch = padded_batch()
    model = tiny_model(attn="eager", dropout=0.5).train()
    torch.manual_seed(123)
    eager = model(**batch).logits
    use_attention_scores(model)
    torch.manual_seed(123)
    ours = model(**batch).logits
    torch.manual_seed(456)
    other_seed = model(**batch).logits
    torch.testing.assert_close(ours, eager, rtol=0, atol=1e-6)  # same dropout masks drawn
    assert not torch.allclose(ours, other_seed)                 # dropout is really active


def test_gradients_flow_through_scores():
    model = use_attention_scores(tiny_model())
    out = model(**padded_batch(), output_attentions=True)
    keys = real_pairs(padded_batch()["attention_mask"]).expand(-1, 4, -1, -1)
    out.attentions[1][keys].pow(2).mean().backward()
    assert model.bert.encoder.layer[1].attention.self.query.weight.grad.abs().sum() > 0
    assert model.bert.encoder.layer[1].attention.self.key.weight.grad.abs().sum() > 0


def test_saved_config_does_not_force_custom_attention(tmp_path):
    model = use_attention_scores(tiny_model())
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert SCORES_ATTN not in json.dumps(saved)
    assert not any("attn_implementation" in key for key in saved)
    plain = BertForSequenceClassification.from_pretrained(tmp_path)
    assert plain.config._attn_implementation == "sdpa"
    ours = BertForSequenceClassification.from_pretrained(tmp_path, attn_implementation=SCORES_ATTN)
    assert uses_attention_scores(ours)


def test_use_attention_scores_rejects_non_transformers_module():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        use_attention_scores(torch.nn.Linear(2, 2))


def test_real_teacher_scores_and_logits(teacher_asset_dir):
    """all-MiniLM-L6-v2: scores = QK^T/sqrt(d) from the layer's own weights; logits = sdpa."""
    model, tokenizer = load_teacher("offline:all-MiniLM-L6-v2", id2label=["negative", "positive"])
    assert uses_attention_scores(model) and model.config.num_attention_heads == 12
    batch = tokenizer(["a moving, funny film.", "the plot is a mess and the actors look bored "
                       "for the whole two hours"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
        model.set_attn_implementation("sdpa")
        ref = model(**batch, output_hidden_states=True)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.hidden_states[-1], ref.hidden_states[-1], rtol=0, atol=1e-4)
    keys = real_pairs(batch["attention_mask"]).expand(-1, 12, -1, -1)
    for layer in (0, 3, 5):
        scores = out.attentions[layer]
        assert scores.shape == (2, 12, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
        expected = manual_scores(model.bert.encoder.layer[layer].attention.self,
                                 out.hidden_states[layer])
        torch.testing.assert_close(scores[keys], expected[keys], rtol=1e-4, atol=1e-4)
        assert (scores[~keys] <= torch.finfo(torch.float32).min / 2).all()
