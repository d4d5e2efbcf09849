"""bench/dropout_cost.py turns off exactly the dropouts each variant names."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from conftest import bench_script


def _tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2,
                        attn_implementation="eager")
    return BertForSequenceClassification(config)


def _probabilities(model) -> dict[str, float]:
    return {name: module.p for name, module in model.named_modules()
            if isinstance(module, torch.nn.Dropout)}


@pytest.mark.parametrize("variant, attention_p, other_p", [
    ("as configured", 0.1, 0.1),
    ("attention probabilities off", 0.0, 0.1),
    ("everything else off", 0.1, 0.0),
    ("all off", 0.0, 0.0),
])
def test_each_variant_zeroes_its_own_dropouts(variant, attention_p, other_p):
    model = _tiny_bert()
    bench_script("dropout_cost")._set_dropout(model, variant)
    probabilities = _probabilities(model)
    attention = {n: p for n, p in probabilities.items() if n.endswith("attention.self.dropout")}
    other = {n: p for n, p in probabilities.items() if n not in attention}
    assert len(attention) == 2 and len(other) == 2 * 2 + 2   # per layer 2; embeddings, classifier
    assert set(attention.values()) == {attention_p}
    assert set(other.values()) == {other_p}


def test_with_all_dropout_off_training_mode_is_deterministic():
    ids = torch.randint(0, 50, (4, 10))
    outputs = {}
    for variant in ("as configured", "all off"):
        model = _tiny_bert().train()
        bench_script("dropout_cost")._set_dropout(model, variant)
        first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
        outputs[variant] = torch.equal(first, second)
        if variant == "all off":
            torch.testing.assert_close(first, model.eval()(input_ids=ids).logits)
    assert outputs == {"as configured": False, "all off": True}


def test_an_unknown_model_name_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_script("dropout_cost").main(["--models", "student,gpu"])
    assert "--models takes student and/or teacher, got 'student,gpu'" in capsys.readouterr().err
