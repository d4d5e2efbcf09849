"""The mean-pooled teacher head of bench/teacher_head.py, against a row-by-row reference."""
from __future__ import annotations

import torch

from conftest import bench_script


def _teacher_head():
    return bench_script("teacher_head")


def test_mean_pool_averages_only_the_real_tokens_of_each_row():
    mean_pool = _teacher_head().mean_pool
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=gen)
    lengths = [5, 2, 1]
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    reference = torch.stack([hidden[i, :n].mean(0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(hidden, mask), reference)
    # what sits under the padding does not matter
    noisy = hidden.masked_fill(~mask.bool().unsqueeze(-1), 1e4)
    torch.testing.assert_close(mean_pool(noisy, mask), reference)


def test_mean_pooled_classifier_reads_the_mean_not_the_pooler(tiny_bert_dir):
    from transformers import BertForSequenceClassification

    head = _teacher_head()
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    wrapped = head.MeanPooledClassifier(model).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        last = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = torch.stack([last[0, :5].mean(0), last[1, :3].mean(0)]) @ \
            model.classifier.weight.T + model.classifier.bias
        logits = wrapped(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(logits, expected)
        assert not torch.allclose(logits, model(input_ids=ids, attention_mask=mask).logits)
    assert wrapped.config is model.config
