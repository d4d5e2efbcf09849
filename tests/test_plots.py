"""tinylab.plots: every figure function returns a Figure with the expected axes and artists."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tinylab import plots  # noqa: E402


def history_dict():
    steps = lambda n, keys: [{"step": i, **{k: 1.0 / (i + j) for j, k in enumerate(keys)},
                              "lr": 1e-4} for i in range(1, n + 1)]
    return {"stages": {
        "general": {"steps": steps(5, ["embedding", "attention", "hidden", "total"]),
                    "evals": []},
        "prediction": {"steps": steps(4, ["prediction", "total"]),
                       "evals": [{"step": 2, "accuracy": 0.6}, {"step": 4, "accuracy": 0.7}]}}}


def test_plot_history_from_dict_and_history_object():
    fig = plots.plot_history(history_dict())
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 3  # two stages + validation accuracy
    assert len(axes[0].get_lines()) == 4 and len(axes[1].get_lines()) == 2
    assert axes[0].get_yscale() == "log" and axes[0].get_title().startswith("general")
    assert axes[2].get_ylabel() == "accuracy" and len(axes[2].get_lines()) == 1

    from tinylab.distill.history import History
    h = History.from_dict(history_dict())
    assert len(plots.plot_history(h).get_axes()) == 3
    assert len(plots.plot_history({"task": h}).get_axes()) == 3
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_history({"stages": {}})


def test_plot_accuracy_latency():
    df = pd.DataFrame({"accuracy": [0.8, 0.78], "latency_b1_ms": [5.0, 2.0],
                       "latency_b32_ms": [160.0, 20.0], "params": [22.7e6, 7.3e6]},
                      index=["teacher", "student"])
    fig = plots.plot_accuracy_latency(df)
    (ax,) = fig.get_axes()
    assert len(ax.collections) == 2                      # one bubble per model
    teacher, student = (c.get_sizes()[0] for c in ax.collections)
    assert teacher / student == pytest.approx(22.7 / 7.3)  # area proportional to params
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["teacher (22.7M)", "student (7.3M)"]   # named in the legend, not on top
    assert "latency_b32_ms" in ax.get_xlabel() and ax.get_ylabel() == "accuracy"
    with pytest.raises(ValueError, match="column"):
        plots.plot_accuracy_latency(df, x="nope")


def test_plot_layer_mapping():
    fig = plots.plot_layer_mapping(2, 4)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["uniform", "top", "bottom"]
    for ax in axes:
        assert len(ax.get_lines()) == 2 + 2  # embeddings, 2 layers, prediction
        assert len(ax.patches) == (2 + 2) + (4 + 2)
    uniform = axes[0].get_lines()[1].get_ydata()  # student layer 1 -> teacher layer 2
    assert uniform[1] == pytest.approx(2 / 5)
    odd = plots.plot_layer_mapping(3, 4).get_axes()[0]  # uniform undefined for 4 / 3
    assert not odd.get_lines() and "not defined" in odd.texts[0].get_text()


def test_plot_attention_heads_dicts_and_masks():
    tokens = ["[CLS]", "good", "film", "[SEP]", "[PAD]"]
    scores = torch.randn(1, 3, 5, 5)
    scores[..., -1] = torch.finfo(torch.float32).min  # padded key column
    fig = plots.plot_attention(scores, tokens)
    assert len(fig.get_axes()) == 3 * 2  # one heatmap + one colour bar per head
    image = fig.get_axes()[0].get_images()[0].get_array()
    assert np.ma.getmaskarray(image)[:, -1].all() or np.isnan(image[:, -1]).all()
    fig = plots.plot_attention({"teacher": scores[0], "student": scores[0].softmax(-1)},
                               tokens, head="mean")
    assert [a.get_title() for a in fig.get_axes()[:2]] == [
        "teacher (mean of 3 heads)", "student (mean of 3 heads)"]
    with pytest.raises(ValueError, match="tokens"):
        plots.plot_attention(scores[0, 0], tokens[:3])


def test_plot_softmax_temperatures():
    fig = plots.plot_softmax_temperatures(torch.tensor([2.0, 1.0, 0.1]), [0.5, 1, 4])
    (ax,) = fig.get_axes()
    assert len(ax.containers) == 3
    heights = [[b.get_height() for b in c] for c in ax.containers]
    for h in heights:
        assert sum(h) == pytest.approx(1.0)
    assert heights[0][0] > heights[1][0] > heights[2][0]  # hotter -> flatter
    with pytest.raises(ValueError, match="one vector"):
        plots.plot_softmax_temperatures(torch.zeros(2, 3), [1.0])


def test_plot_length_histogram():
    fig = plots.plot_length_histogram({"train": [5, 10, 70, 12], "test": [8, 9]},
                                      max_length=64)
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 1  # the max_length line
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("25.0% > 64" in label for label in labels)


def test_plot_confusion():
    fig = plots.plot_confusion([[5, 1], [2, 7]], ["negative", "positive"])
    axes = fig.get_axes()
    assert len(axes) == 2  # matrix + colour bar
    assert sorted(t.get_text() for t in axes[0].texts) == ["1", "2", "5", "7"]
    assert axes[0].get_xlabel() == "predicted" and axes[0].get_ylabel() == "gold"
    norm = plots.plot_confusion(np.array([[5, 1], [2, 7]]), normalize=True)
    assert "0.83" in [t.get_text() for t in norm.get_axes()[0].texts]


def test_save_figure_is_atomic(tmp_path):
    fig = plots.plot_confusion([[1, 0], [0, 1]])
    path = plots.save_figure(fig, tmp_path / "figs" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cm.png"]
    with pytest.raises(ValueError, match="suffix"):
        plots.save_figure(fig, tmp_path / "noext")


def test_plot_attention_trims_a_padded_example_to_its_real_tokens():
    tokens = ["[CLS]", "good", "film", "[SEP]", "[PAD]", "[PAD]"]
    mask = torch.tensor([1, 1, 1, 1, 0, 0])
    scores = torch.randn(2, 6, 6)
    scores[..., 4:] = torch.finfo(torch.float32).min            # padded key columns
    fig = plots.plot_attention({"teacher": scores, "student": scores.softmax(-1)}, tokens,
                               head=1, attention_mask=mask)
    heatmaps = [ax for ax in fig.get_axes() if ax.get_images() and ax.get_title()]
    assert len(heatmaps) == 2
    for ax in heatmaps:
        image = ax.get_images()[0].get_array()
        assert image.shape == (4, 4)                              # the padding is gone
        assert [t.get_text() for t in ax.get_xticklabels()] == tokens[:4]
        assert [t.get_text() for t in ax.get_yticklabels()] == tokens[:4]
    np.testing.assert_allclose(heatmaps[0].get_images()[0].get_array(), scores[1, :4, :4])
    # a left-padded example keeps its own (last) positions
    left = plots.plot_attention(scores[0], tokens, attention_mask=[0, 0, 1, 1, 1, 1])
    assert left.get_axes()[0].get_images()[0].get_array().shape == (4, 4)
    assert [t.get_text() for t in left.get_axes()[0].get_xticklabels()] == tokens[2:]


def test_plot_attention_untrimmed_boxes_the_real_pairs():
    tokens = ["[CLS]", "ok", "[SEP]"] + ["[PAD]"] * 5
    mask = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    scores = torch.randn(8, 8)
    scores[:, 3:] = torch.finfo(torch.float32).min
    fig = plots.plot_attention({"padded": scores}, tokens, attention_mask=mask, trim=False)
    ax = fig.get_axes()[0]
    assert ax.get_images()[0].get_array().shape == (8, 8)
    assert ax.get_title() == "padded (3 real of 8 tokens)"
    (box,) = [p for p in ax.patches if p.get_label() == "real (query, key) pairs"]
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (-0.5, -0.5, 3, 3)
    with pytest.raises(ValueError, match="one example's mask"):
        plots.plot_attention(scores, tokens, attention_mask=torch.ones(2, 8))
    with pytest.raises(ValueError, match="no real token"):
        plots.plot_attention(scores, tokens, attention_mask=torch.zeros(8))


def test_plot_attention_keeps_long_sentences_legible():
    tokens = [f"t{i}" for i in range(90)]
    fig = plots.plot_attention(torch.randn(90, 90), tokens)
    ax = fig.get_axes()[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) <= 40 and labels[:2] == ["t0", "t3"]
    assert fig.get_size_inches()[0] > 3.6 * 2                   # grew with the tokens


def test_plot_attention_share_scale_gives_teacher_and_student_one_colour_scale():
    tokens = ["[CLS]", "good", "film", "[SEP]", "[PAD]"]
    teacher = torch.randn(3, 5, 5) * 4
    student = torch.randn(3, 5, 5) * 0.5 + 1
    teacher[..., -1] = student[..., -1] = torch.finfo(torch.float32).min   # padded key column
    fig = plots.plot_attention({"teacher": teacher, "student": student}, tokens, head="mean",
                               share_scale=True)
    images = [ax.get_images()[0] for ax in fig.get_axes() if ax.get_images()]
    assert len(images) == 2
    (t_min, t_max), (s_min, s_max) = (im.get_clim() for im in images)
    assert (t_min, t_max) == (s_min, s_max)
    shown = torch.stack([teacher.mean(0)[:, :-1], student.mean(0)[:, :-1]])
    assert t_min == pytest.approx(shown.min().item(), rel=1e-5)
    assert t_max == pytest.approx(shown.max().item(), rel=1e-5)
    # without it each panel keeps its own scale (scores next to probabilities)
    own = plots.plot_attention({"teacher": teacher, "student": student}, tokens, head="mean")
    clims = [ax.get_images()[0].get_clim() for ax in own.get_axes() if ax.get_images()]
    assert clims[0] != clims[1]
