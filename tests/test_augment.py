"""tinylab.augment: word handling, both candidate sources against independent references,
Algorithm 1's sampling rate, the dataset contract, caching and the inspector."""
from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertForMaskedLM, BertTokenizerFast)

from conftest import write_vocab
from tinylab import augment as aug
from tinylab.config import AugmentConfig

SENTENCES = ["The movie was really good, and the actors were great!",
             "A boring, dull film.", "Funny scenes; slow story.",
             "I love this beautiful, moving film.", "The worst script ever."]


@pytest.fixture(scope="module")
def teacher(tiny_bert_dir):
    return (AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval(),
            AutoTokenizer.from_pretrained(tiny_bert_dir))


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    """A tiny random BertForMaskedLM saved like a hub model."""
    folder = tmp_path_factory.mktemp("tiny_mlm")
    tok = BertTokenizerFast(vocab=str(write_vocab(folder)))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=32,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def task_ds() -> datasets.Dataset:
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"text": SENTENCES, "label": [1, 0, 1, 1, 0]},
                                      features=feats)


# -- words ---------------------------------------------------------------------------------

def test_split_words_keeps_punctuation_and_reassembles_exactly():
    text = "A boring,  dull film (really)!"
    words = aug.split_words(text)
    assert [w for w, *_ in words] == ["A", "boring", ",", "dull", "film", "(", "really", ")", "!"]
    assert aug._reassemble(text, words, {}) == text
    assert aug._reassemble(text, words, {1: "slow", 4: "movie"}) == "A slow,  dull movie (really)!"


def test_eligibility_skips_stop_words_numbers_and_punctuation():
    assert aug.is_eligible("film") and aug.is_eligible("Boring")
    for word in ("the", "The", "not", "42", ",", "x2", "café"):
        assert not aug.is_eligible(word), word


# -- candidates ----------------------------------------------------------------------------

def reference_neighbours(word, tokenizer, emb, k):
    """Independent numpy version: cosine of the mean piece vector vs whole-word entries."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    table = [t for t in vocab if t not in special and t.isalpha() and t.isascii() and len(t) > 1]
    e = emb.detach().numpy().astype(np.float64)
    q = e[[vocab[p] for p in tokenizer.tokenize(word)]].mean(0)
    rows = e[[vocab[t] for t in table]]
    cos = rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
    order = [table[j] for j in np.argsort(-cos, kind="stable") if table[j] != word.lower()]
    return order[:k]


def test_embedding_candidates_match_numpy_reference(teacher):
    model, tok = teacher
    emb = model.get_input_embeddings().weight
    assert tok.tokenize("filmed") == ["film", "##ed"]  # a multi-piece word
    got = aug.embedding_candidates(["movie", "filmed", "zzzz€"], tok, emb, 5, chunk_size=1)
    for word in ("movie", "filmed"):
        assert got[word] == reference_neighbours(word, tok, emb, 5)
        assert word not in got[word] and len(got[word]) == 5
        assert all(not c.startswith("##") and c.isalpha() for c in got[word])
    assert got["zzzz€"] == []  # [UNK] -> no candidates


@pytest.mark.parametrize("a, b, same", [
    ("movie", "movies", True), ("run", "running", True), ("story", "stories", True),
    ("bad", "badly", True), ("Film", "films", True), ("great", "greatest", True),
    ("make", "making", True), ("movie", "film", False), ("act", "actress", False),
    ("good", "goodbye", False), ("at", "atom", False),
])
def test_same_word_pairs_inflections_and_nothing_else_listed(a, b, same):
    # checked by hand: forms of one word, and pairs that only look alike
    assert aug.same_word(a, b) is same and aug.same_word(b, a) is same


def test_filtered_embedding_candidates_are_the_plain_list_without_stop_words_and_forms(teacher):
    model, tok = teacher
    emb = model.get_input_embeddings().weight
    words = ["movie", "filmed", "good"]
    plain = aug.embedding_candidates(words, tok, emb, 200)
    filtered = aug.embedding_candidates(words, tok, emb, 5, filtered=True)
    for word in words:
        # independent of the implementation: the plain top list, filtered by hand, first 5
        kept = [c for c in plain[word]
                if c.lower() not in aug.STOP_WORDS and not aug.same_word(c, word)]
        assert filtered[word] == kept[:5]


def test_filter_neighbours_changes_the_cache_key_only_when_set(teacher, isolated_cache):
    model, tok = teacher
    aug.augment_dataset(task_ds(), tok, model, AugmentConfig(n_aug=2, k=3), seed=0)
    aug.augment_dataset(task_ds(), tok, model, AugmentConfig(n_aug=2, k=3, filter_neighbours=True),
                        seed=0)
    assert len(list((isolated_cache / "augment").iterdir())) == 2
    # off, the key is the one augmented sets cached before the setting existed had
    from tinylab.config import config_hash

    legacy = {k: v for k, v in vars(AugmentConfig(n_aug=2, k=3)).items()
              if k != "filter_neighbours"}
    assert config_hash(aug._key_settings(AugmentConfig(n_aug=2, k=3))) == config_hash(legacy)


def test_embedding_candidates_reject_mismatched_table(teacher):
    _, tok = teacher
    with pytest.raises(ValueError, match="does not match"):
        aug.embedding_candidates(["movie"], tok, torch.zeros(10, 4), 3)


def test_batched_mlm_candidates_equal_one_forward_per_word(mlm_dir):
    mlm = BertForMaskedLM.from_pretrained(mlm_dir).eval()
    tok = AutoTokenizer.from_pretrained(mlm_dir)
    words = aug.split_words("The movie was really good, and the actors were great!")
    positions = [1, 3, 4, 9]  # movie, really, good, great
    got = aug.mlm_candidates(words, positions, mlm, tok, 5)
    plain = [w for w, *_ in words]
    special = set(tok.all_special_tokens)
    for i in positions:  # the official way: one masked copy, one forward
        copy = plain[:i] + [tok.mask_token] + plain[i + 1:]
        enc = tok(copy, plain, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = mlm(**enc).logits[0]
        where = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
        ranked = tok.convert_ids_to_tokens(logits[where].argsort(descending=True).tolist())
        expected = [t for t in ranked if t not in special and t.isalpha() and len(t) > 1
                    and t != plain[i].lower()][:5]
        assert got[i] == expected


# -- Algorithm 1 ---------------------------------------------------------------------------

def test_replacement_rate_is_p_t():
    words = [f"w{i}" for i in range(10)]
    text = " ".join(words)
    cands = {i: [f"c{i}x{j}" for j in range(50)] for i in range(10)}
    cfg = AugmentConfig(p_t=0.4, n_aug=300, k=50)
    out = aug.augment_sentence(text, cands, cfg, np.random.default_rng(0))
    assert len(out) == len(set(out)) and text not in out
    replaced = np.mean([[a != b for a, b in zip(s.split(), words)] for s in out])
    assert abs(replaced - 0.4) < 0.05  # 3,000 Bernoulli(0.4) draws: sd 0.009
    assert aug.augment_sentence(text, cands, AugmentConfig(p_t=0.0, n_aug=5),
                                np.random.default_rng(0)) == []


def test_replacement_keeps_capitalisation():
    out = aug.augment_sentence("Good film", {0: ["great"]}, AugmentConfig(p_t=1.0, n_aug=1),
                               np.random.default_rng(0))
    assert out == ["Great film"]


# -- augment_dataset -----------------------------------------------------------------------

def test_augment_dataset_contract(teacher, isolated_cache):
    model, tok = teacher
    ds = task_ds()
    cfg = AugmentConfig(p_t=0.5, n_aug=3, k=4)
    out = aug.augment_dataset(ds, tok, model, cfg, seed=1)
    assert out.column_names == ["text", "label", "source_idx", "is_original"]
    assert out.features["label"] == ds.features["label"]
    originals = out.filter(lambda r: r["is_original"])
    assert originals["text"] == SENTENCES and originals["source_idx"] == list(range(5))
    for src in range(5):
        rows = [r for r in out if r["source_idx"] == src]
        assert rows[0]["is_original"] and 1 <= len(rows) <= 1 + cfg.n_aug
        assert all(r["label"] == ds[src]["label"] for r in rows)  # the source's gold label
        assert len({r["text"] for r in rows}) == len(rows)
    assert (~np.array(out["is_original"])).sum() > 0
    again = aug.augment_dataset(ds, tok, model, cfg, seed=1, cache=False)
    assert again["text"] == out["text"]
    other = aug.augment_dataset(ds, tok, model, cfg, seed=2, cache=False)
    assert other["text"] != out["text"]


def test_augment_dataset_cache_hit_and_atomic_file(teacher, isolated_cache, monkeypatch):
    model, tok = teacher
    cfg = AugmentConfig(n_aug=2, k=3)
    first = aug.augment_dataset(task_ds(), tok, model, cfg, seed=0)
    files = list((isolated_cache / "augment").iterdir())
    assert len(files) == 1 and files[0].suffix == ".parquet"  # no temp file left behind

    def boom(*a, **k):
        raise AssertionError("cache miss")
    monkeypatch.setattr(aug, "_generate", boom)
    cached = aug.augment_dataset(task_ds(), tok, model, cfg, seed=0)
    assert cached["text"] == first["text"] and cached.features == first.features
    with pytest.raises(AssertionError, match="cache miss"):  # another cfg: another key
        aug.augment_dataset(task_ds(), tok, model, AugmentConfig(n_aug=2, k=4), seed=0)


def test_max_examples_and_disabled(teacher, isolated_cache):
    model, tok = teacher
    out = aug.augment_dataset(task_ds(), tok, model, AugmentConfig(n_aug=2, max_examples=2),
                              seed=0, cache=False)
    assert len(set(out["source_idx"])) == 2
    off = aug.augment_dataset(task_ds(), tok, model, AugmentConfig(enabled=False), seed=0,
                              cache=False)
    assert off["text"] == SENTENCES and all(off["is_original"])


def test_augment_dataset_with_mlm_model_folder(teacher, mlm_dir, isolated_cache):
    model, tok = teacher
    cfg = AugmentConfig(p_t=1.0, n_aug=2, k=3, mlm_model=str(mlm_dir))
    out = aug.augment_dataset(task_ds(), tok, model, cfg, seed=0, cache=False)
    mlm = BertForMaskedLM.from_pretrained(mlm_dir).eval()
    mlm_tok = AutoTokenizer.from_pretrained(mlm_dir)
    words = aug.split_words(SENTENCES[1])  # "A boring, dull film."
    expected = aug.mlm_candidates(words, [1, 3, 4], mlm, mlm_tok, 3)
    augmented = [r for r in out if r["source_idx"] == 1 and not r["is_original"]]
    assert augmented
    for row in augmented:  # p_t = 1: every eligible word replaced by one of its candidates
        new = [w for w, *_ in aug.split_words(row["text"])]
        assert new[1] in expected[1] and new[3] in expected[3]
        assert new[4] in expected[4]


@pytest.mark.parametrize("field,value", [("p_t", 1.5), ("n_aug", -1), ("k", 0)])
def test_bad_config_is_rejected(teacher, field, value):
    model, tok = teacher
    with pytest.raises(ValueError, match=field):
        aug.augment_dataset(task_ds(), tok, model, AugmentConfig(**{field: value}), seed=0,
                            cache=False)


# -- inspection ----------------------------------------------------------------------------

def test_inspect_augmentations_and_agreement(teacher, isolated_cache):
    model, tok = teacher
    out = aug.augment_dataset(task_ds(), tok, model, AugmentConfig(p_t=0.6, n_aug=4, k=5),
                              seed=0, cache=False)
    with torch.no_grad():  # independent: one text at a time
        pred = [int(model(**tok(t, return_tensors="pt")).logits.argmax()) for t in out["text"]]
    orig = {s: p for s, p, o in zip(out["source_idx"], pred, out["is_original"]) if o}
    same = [p == orig[s] for s, p, o in zip(out["source_idx"], pred, out["is_original"]) if not o]
    df = aug.inspect_augmentations(out, model, tok, n=2, per_source=2)
    assert df.attrs["agreement_n"] == len(same)
    assert df.attrs["agreement_rate"] == pytest.approx(np.mean(same))
    assert list(df.columns) == ["source_idx", "original", "augmented", "gold",
                                "teacher_original", "teacher_augmented", "agrees"]
    assert 1 <= df["source_idx"].nunique() <= 2 and len(df) <= 4
    assert set(df["gold"]) <= {"negative", "positive"}
    assert set(df["teacher_original"]) <= {"negative", "positive"}


def test_mlm_config_cache_hit_does_not_load_the_mlm(teacher, mlm_dir, isolated_cache,
                                                    monkeypatch):
    model, tok = teacher
    cfg = AugmentConfig(n_aug=2, k=3, mlm_model=str(mlm_dir))
    first = aug.augment_dataset(task_ds(), tok, model, cfg, seed=0)

    def no_load(*a, **k):
        raise AssertionError("masked-LM loaded on a cache hit")
    monkeypatch.setattr(aug, "_load_mlm", no_load)
    assert aug.augment_dataset(task_ds(), tok, model, cfg, seed=0)["text"] == first["text"]


def test_text_pairs_are_augmented_one_side_at_a_time(teacher):
    """Each side of a pair is augmented on its own while the other keeps its original text;
    the first side draws exactly as a single-text task would."""
    model, tokenizer = teacher
    first = ["the film was good and long", "a bad slow day at the sea"]
    second = ["it was good", "the day was slow"]
    pairs = datasets.Dataset.from_dict({"text": first, "text_pair": second, "label": [1, 0]})
    singles = datasets.Dataset.from_dict({"text": first, "label": [1, 0]})
    cfg = AugmentConfig(n_aug=3, k=4, p_t=0.6)
    out = aug.augment_dataset(pairs, tokenizer, model, cfg, seed=5, cache=False,
                              progress=False)
    alone = aug.augment_dataset(singles, tokenizer, model, cfg, seed=5, cache=False,
                                progress=False)
    assert out.column_names[:2] == ["text", "text_pair"]
    for source, (a, b) in enumerate(zip(first, second)):
        rows = [r for r in out if r["source_idx"] == source]
        assert rows[0]["is_original"] and (rows[0]["text"], rows[0]["text_pair"]) == (a, b)
        new_first = [r["text"] for r in rows[1:] if r["text_pair"] == b and r["text"] != a]
        new_second = [r["text_pair"] for r in rows[1:] if r["text"] == a and r["text_pair"] != b]
        assert len(new_first) + len(new_second) == len(rows) - 1     # one side changes per row
        assert new_first == [r["text"] for r in alone if r["source_idx"] == source
                             and not r["is_original"]]
        assert new_second                                              # the second side too
