"""TinyBERT's data augmentation (Jiao et al. 2020, the data augmentation procedure, Algorithm 1).

Task-specific distillation needs far more examples than a small task provides, so TinyBERT
makes new sentences by word replacement. For every source sentence, ``N_a`` times::

    for each word w of the sentence:
        if w is eligible (alphabetic, not a stop-word) and rand() < p_t:
            w <- one of the K candidates of w, chosen uniformly
    keep the new sentence (the original sentence is kept too)

Candidates for a word:

* **single-piece words** (one WordPiece): the paper masks the word and takes the K most
  *probable* predictions of a masked-LM (BERT) in that context: a ranking by probability, not
  "nearest" words. Used here when ``AugmentConfig.mlm_model`` is set (e.g.
  ``"bert-base-uncased"`` with the hub) or an MLM model object is passed;
* **multi-piece words**: the paper takes the K nearest GloVe vectors by cosine similarity (the
  official script reads GloVe's first 100,000 words only). No GloVe file ships offline, so
  tinylab uses the teacher's own word-embedding table instead: the mean of the word's piece
  vectors, compared with every whole-word vocabulary entry;
* **offline default** (no masked-LM available): all words use those embedding neighbours. This
  is a weaker substitute for the masked LM: a static embedding table ignores the context, so
  a word's neighbours are other forms of the same word (plural, comparative, another part of
  speech), related words and sometimes words of the opposite sentiment; many generated
  sentences are ungrammatical, and some change their meaning.

Augmented sentences have *no* gold label: the teacher labels them during distillation (its
soft predictions are the targets), which is the point of the method. The ``label`` column
returned here is the gold label of the *source* sentence, kept only so that
:func:`inspect_augmentations` can show it; training code must not use it as a target.

The paper gives p_t = 0.4, N_a = 20, K = 15 (``AugmentConfig``'s defaults). The authors'
``data_augmentation.py`` sets N per task instead (SST-2 and QNLI 20; CoLA, MRPC, RTE and STS-B
30; MNLI and QQP 10; 30 otherwise), skips stop-words and non-alphabetic words (as
:func:`is_eligible` does), and computes each word's candidates once, on the *original*
sentence, where the paper's Algorithm 1 masks the sentence as replaced so far; tinylab does
what the script does. docs/paper-vs-code.md tabulates all of this.

How tinylab differs from the authors' ``data_augmentation.py``:

* one batched masked-LM forward per sentence (all masked copies at once) instead of one
  forward per word;
* only the masked positions go through the vocabulary projection, and the top-K is taken
  after removing the word itself, ``##`` pieces, special tokens and non-alphabetic tokens
  (the official script takes the top K and then drops ``##`` pieces, so its lists can hold
  fewer than K words and can include the word itself);
* the sentence's original spacing and punctuation are kept (the official script re-joins
  lower-cased basic-tokenizer tokens with spaces); a capitalised word gets a capitalised
  replacement (the official script does this for GloVe candidates only);
* like the official script, a generated sentence equal to the original or to an earlier one
  is dropped, so a source yields *at most* ``N_a`` augmentations; and, like it, the masked
  sentence is fed to the MLM paired with the unmasked original (segment B), so the MLM
  proposes words that fit the context *and* stay close to the original word.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, AutoTokenizer

from tinylab.assets import cache_dir, resolve_model_path
from tinylab.atomic import atomic_path
from tinylab.config import AugmentConfig, config_hash
from tinylab.evaluate import predict_logits
from tinylab.models import load_pretrained

__all__ = [
    "STOP_WORDS", "split_words", "is_eligible", "same_word", "embedding_candidates",
    "mlm_candidates", "augment_sentence", "augment_dataset", "teacher_agreement",
    "inspect_augmentations",
]

_CACHE_VERSION = 1

# A short explicit English stop-word list, close to NLTK's (the official script hard-codes a
# similar NLTK-derived list). No contractions: split_words cuts "don't" into don ' t.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can d did do does doing don down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just ll m ma me more most my myself no nor not now o of off on once only or other our ours
ourselves out over own re s same she should so some such t than that the their theirs them
themselves then there these they this those through to too under until up ve very was we were
what when where which while who whom why will with won y you your yours yourself yourselves
""".split())

# Words and single punctuation marks, like BERT's basic tokenizer ("don't" -> don ' t).
_WORD_RE = re.compile(r"\w+|[^\w\s]")


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------

def split_words(text: str) -> list[tuple[str, int, int]]:
    """Word-level tokens of ``text`` as ``(word, start, end)``; punctuation marks are tokens.

    Keeping the character spans lets :func:`_reassemble` put replacements back into the
    original string, so spacing and punctuation survive augmentation unchanged.
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def _reassemble(text: str, words: list[tuple[str, int, int]], new: dict[int, str]) -> str:
    """``text`` with word ``i`` replaced by ``new[i]``."""
    parts, last = [], 0
    for i, (_, start, end) in enumerate(words):
        if i in new:
            parts += [text[last:start], new[i]]
            last = end
    parts.append(text[last:])
    return "".join(parts)


def is_eligible(word: str) -> bool:
    """May ``word`` be replaced? Alphabetic (ASCII letters only) and not a stop-word."""
    return word.isascii() and word.isalpha() and word.lower() not in STOP_WORDS


_ENDINGS = frozenset(("s", "es", "d", "ed", "ing", "er", "ers", "est", "ly", "ies", "ied",
                      "ier", "iest", "ily"))


def same_word(a: str, b: str) -> bool:
    """Are ``a`` and ``b`` forms of one word, as far as spelling tells? True when, ignoring
    case, the longer is the shorter (without a final ``e`` or ``y``, at least 3 letters left)
    plus an inflectional ending (``s``, ``ed``, ``ing``, ``er``, ``est``, ``ly``, ``ies``,
    ...), the last letter perhaps doubled: movie/movies, run/running, story/stories,
    bad/badly. Not good/goodbye, act/actress.

    A crude rule on purpose (no stemmer ships offline): it also pairs car/card, which only
    costs a candidate. Used by ``augment.filter_neighbours``, since an inflection of the word
    itself ("movies" for "movie") changes a sentence's grammar more than its content.
    """
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    bases = {short, short[:-1]} if short[-1] in "ey" else {short}
    for base in bases:
        if len(base) < 3 or not long.startswith(base):
            continue
        rest = long[len(base):]
        if rest in _ENDINGS or (rest[:1] == base[-1] and rest[1:] in _ENDINGS):
            return True
    return False


def _is_whole_word_token(token: str, special: set[str]) -> bool:
    """A vocabulary entry usable as a replacement: ASCII letters only, 2+ of them, not special.

    ``##`` continuation pieces and ``[PAD]``-style tokens fail ``isalpha``; single letters are
    left out because they are almost never a sensible substitute for a word.
    """
    return token not in special and len(token) > 1 and token.isascii() and token.isalpha()


def _match_case(candidate: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return candidate.upper()
    if original[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


def _pieces(tokenizer: Any, word: str) -> list[str]:
    pieces = tokenizer.tokenize(word)
    return [] if tokenizer.unk_token in pieces else pieces


# --------------------------------------------------------------------------------------------
# Candidates from the word-embedding table (offline default; the paper's GloVe stand-in)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def embedding_candidates(words: Sequence[str], tokenizer: Any, embeddings: torch.Tensor, k: int,
                         *, chunk_size: int = 512, progress: bool = True,
                         filtered: bool = False) -> dict[str, list[str]]:
    """The ``k`` nearest whole-word vocabulary entries of each word, by cosine similarity.

    ``embeddings``: the ``(V, d)`` word-embedding matrix that matches ``tokenizer``'s
    vocabulary (the teacher's input embeddings). A word's query vector is the mean of its
    WordPiece vectors (one piece: its own row). The table holds the whole-word entries only
    (see :func:`_is_whole_word_token`), L2-normalised, shape ``(V_w, d)``; the similarities of
    ``chunk_size`` words at a time come from one matmul ``(n, d) @ (d, V_w)``, then
    ``topk``. The word itself is excluded. The paper uses GloVe vectors for this step.
    Words that tokenise to ``[UNK]`` get no candidates. ``filtered`` also leaves out
    stop-words and other forms of the word (:func:`same_word`), searching up to ``4 k``
    neighbours for ``k`` that pass, so a list may hold fewer than ``k``.
    """
    vocab = tokenizer.get_vocab()
    if embeddings.ndim != 2 or embeddings.shape[0] < len(vocab):
        raise ValueError(f"embedding matrix of shape {tuple(embeddings.shape)} does not match "
                         f"the tokenizer's {len(vocab)} tokens; pass the teacher that goes with "
                         "this tokenizer")
    special = set(tokenizer.all_special_tokens)
    table_tokens = sorted((t for t in vocab if _is_whole_word_token(t, special)),
                          key=vocab.__getitem__)
    if not table_tokens:
        raise ValueError("the tokenizer's vocabulary has no whole-word entries to draw from")
    column = {t: j for j, t in enumerate(table_tokens)}
    emb = embeddings.detach().float().cpu()
    table = torch.nn.functional.normalize(emb[[vocab[t] for t in table_tokens]], dim=-1)

    keep, piece_ids = [], []
    for word in dict.fromkeys(words):  # unique, order kept
        pieces = _pieces(tokenizer, word)
        if pieces:
            keep.append(word)
            piece_ids.append(tokenizer.convert_tokens_to_ids(pieces))
    out: dict[str, list[str]] = {w: [] for w in words}
    if not keep:
        return out
    # mean of each word's piece vectors, all words at once: (n_words, d)
    offsets = torch.tensor([0] + [len(p) for p in piece_ids[:-1]]).cumsum(0)
    queries = torch.nn.functional.embedding_bag(
        torch.tensor([i for p in piece_ids for i in p]), emb, offsets, mode="mean")
    queries = torch.nn.functional.normalize(queries, dim=-1)
    self_col = torch.tensor([column.get(w.lower(), column.get(w, -1)) for w in keep])
    k_eff = min(4 * k if filtered else k, len(table_tokens) - 1)
    starts = range(0, len(keep), chunk_size)
    for start in tqdm(starts, desc="embedding neighbours", disable=not progress or len(starts) < 2):
        stop = min(start + chunk_size, len(keep))
        sims = queries[start:stop] @ table.T  # (n, V_w) cosine similarities
        rows = torch.nonzero(self_col[start:stop] >= 0).flatten()
        sims[rows, self_col[start:stop][rows]] = -float("inf")  # never the word itself
        top = sims.topk(k_eff, dim=-1).indices.tolist()
        for word, cols in zip(keep[start:stop], top):
            found = [table_tokens[j] for j in cols]
            if filtered:
                found = [c for c in found
                         if c.lower() not in STOP_WORDS and not same_word(c, word)][:k]
            out[word] = found
    return out


# --------------------------------------------------------------------------------------------
# Candidates from a masked language model (the paper's route for single-piece words)
# --------------------------------------------------------------------------------------------

def _mlm_head_logits(mlm: Any, enc: dict[str, torch.Tensor], rows: torch.Tensor,
                     cols: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits at the masked positions only, shape ``(n, V)``.

    A full forward would build an ``(n, L, V)`` logits tensor (hundreds of MB for a long
    sentence with a 30k vocabulary); BERT- and RoBERTa-style models let us run the encoder,
    pick the masked rows, and apply the MLM head to those alone.
    """
    head = getattr(mlm, "cls", None) or getattr(mlm, "lm_head", None)
    if head is not None and getattr(mlm, "base_model", None) is not mlm:
        hidden = mlm.base_model(**enc).last_hidden_state
        return head(hidden[rows, cols])
    return mlm(**enc).logits[rows, cols]


@torch.no_grad()
def mlm_candidates(words: Sequence[str], positions: Sequence[int], mlm: Any, mlm_tokenizer: Any,
                   k: int, *, pair_with_original: bool = True) -> dict[int, list[str]]:
    """Top-``k`` masked-LM replacements for ``words[i]``, ``i`` in ``positions``: ONE forward.

    Builds one copy of the sentence per position with that word replaced by ``[MASK]`` and
    runs all copies as one batch ``(len(positions), L)``. With ``pair_with_original`` (what
    the official script does) each copy is followed by the unmasked sentence as segment B.
    Predictions that are ``##`` pieces, special or non-alphabetic tokens, or the word itself
    are skipped before taking the top ``k``. Masks cut off by truncation get no candidates.
    """
    if not positions:
        return {}
    mask = mlm_tokenizer.mask_token
    if mask is None:
        raise ValueError(f"{type(mlm_tokenizer).__name__} has no mask token; mlm_candidates "
                         "needs a masked-LM tokenizer")
    plain = [w for w, *_ in words] if words and isinstance(words[0], tuple) else list(words)
    copies = [plain[:i] + [mask] + plain[i + 1:] for i in positions]
    max_len = min(512, int(getattr(mlm.config, "max_position_embeddings", 512)))
    kwargs = dict(is_split_into_words=True, padding=True, truncation=True, max_length=max_len,
                  return_tensors="pt")
    enc = (mlm_tokenizer(copies, [plain] * len(copies), **kwargs) if pair_with_original
           else mlm_tokenizer(copies, **kwargs))
    device = next(mlm.parameters()).device
    enc = {k_: v.to(device) for k_, v in enc.items()}
    is_mask = enc["input_ids"] == mlm_tokenizer.mask_token_id
    # first [MASK] of each copy (segment B has none); copies whose mask was truncated: none
    has_mask = is_mask.any(-1)
    rows = torch.nonzero(has_mask).flatten()
    cols = is_mask.float().argmax(-1)[rows]
    out: dict[int, list[str]] = {i: [] for i in positions}
    if rows.numel() == 0:
        return out
    logits = _mlm_head_logits(mlm, enc, rows, cols)
    special = set(mlm_tokenizer.all_special_tokens)
    ranked = logits.topk(min(logits.shape[-1], 4 * k + 8), dim=-1).indices.cpu()
    for r, ids in zip(rows.tolist(), ranked):
        original = plain[positions[r]].lower()
        toks = [t for t in mlm_tokenizer.convert_ids_to_tokens(ids.tolist())
                if _is_whole_word_token(t, special) and t.lower() != original]
        out[positions[r]] = toks[:k]
    return out


# --------------------------------------------------------------------------------------------
# Algorithm 1
# --------------------------------------------------------------------------------------------

def augment_sentence(text: str, candidates: dict[int, list[str]], cfg: AugmentConfig,
                     rng: np.random.Generator, words: list[tuple[str, int, int]] | None = None
                     ) -> list[str]:
    """Up to ``cfg.n_aug`` new versions of ``text`` (paper Alg. 1, the sampling loop).

    ``candidates[i]``: replacement words for word ``i`` of :func:`split_words` (empty or
    absent: never replaced). Each attempt replaces every word that has candidates with
    probability ``cfg.p_t`` by a uniformly chosen candidate. Sentences equal to the original
    or to an earlier attempt are dropped (as in the official script).
    """
    words = split_words(text) if words is None else words
    slots = [(i, c) for i, c in sorted(candidates.items()) if c]
    seen, out = {text}, []
    for _ in range(cfg.n_aug):
        if not slots:
            break
        hits = rng.random(len(slots)) < cfg.p_t
        choice = rng.integers(0, [len(c) for _, c in slots])
        new = {i: _match_case(c[j], words[i][0])
               for (i, c), hit, j in zip(slots, hits, choice) if hit}
        sentence = _reassemble(text, words, new)
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


def _key_settings(cfg: AugmentConfig) -> dict[str, Any]:
    """``cfg`` for the cache key; ``filter_neighbours`` came later and enters only when set,
    so the augmented sets cached before it keep their keys."""
    settings = dataclasses.asdict(cfg)
    if not settings["filter_neighbours"]:
        del settings["filter_neighbours"]
    return settings


def _check_cfg(cfg: AugmentConfig) -> None:
    if not 0.0 <= cfg.p_t <= 1.0:
        raise ValueError(f"augment.p_t must be a probability in [0, 1], got {cfg.p_t}")
    if cfg.n_aug < 0:
        raise ValueError(f"augment.n_aug must be >= 0, got {cfg.n_aug}")
    if cfg.k < 1:
        raise ValueError(f"augment.k must be >= 1, got {cfg.k}")
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise ValueError(f"augment.max_examples must be >= 1 or None, got {cfg.max_examples}")


def _digest(items: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(repr(item).encode())
        h.update(b"\0")
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _load_mlm(cfg: AugmentConfig, mlm: Any, mlm_tokenizer: Any, tokenizer: Any):
    """The masked-LM (passed object, else ``cfg.mlm_model`` loaded) and its tokenizer, or Nones."""
    if mlm is None and cfg.mlm_model is None:
        return None, None
    if mlm is None:
        path = resolve_model_path(cfg.mlm_model)
        mlm = load_pretrained(AutoModelForMaskedLM, path)
        mlm_tokenizer = mlm_tokenizer or AutoTokenizer.from_pretrained(path)
    return mlm.eval(), (mlm_tokenizer or tokenizer)


def _select_sources(n: int, cfg: AugmentConfig, seed: int) -> list[int]:
    if cfg.max_examples is None or cfg.max_examples >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=cfg.max_examples, replace=False).tolist())


def augment_dataset(ds: Any, tokenizer: Any, teacher: Any, cfg: AugmentConfig, *, seed: int,
                    cache: bool = True, mlm: Any = None, mlm_tokenizer: Any = None,
                    progress: bool = True):
    """The augmented training set: every source sentence followed by its augmentations.

    ``ds``: a ``datasets.Dataset`` with a ``text`` column (and usually ``label``).
    ``teacher``: the model whose input-embedding table supplies the offline candidates (it
    must match ``tokenizer``). ``cfg``: p_t, N_a (``n_aug``), K (``k``), ``mlm_model`` and
    ``max_examples`` (a seeded random subset of at most this many sources). ``mlm`` /
    ``mlm_tokenizer``: a masked-LM model object (and its tokenizer, default ``tokenizer``)
    to use instead of loading ``cfg.mlm_model``.

    Returns a ``Dataset`` with columns ``text``; ``label`` (if ``ds`` has one: the gold label
    of the *source* sentence, for inspection only - distillation uses the teacher's
    predictions as targets); ``source_idx`` (row of ``ds``); ``is_original`` (True for the
    kept source sentence, paper Alg. 1). With ``cfg.enabled=False`` only the sources are
    returned. Deterministic for a given ``seed``; cached (``cache=True``) under
    ``tinylab.assets.cache_dir()/augment/<hash>.parquet``, the hash covering the texts and
    labels, the tokenizer vocabulary, ``cfg``, ``seed`` and the candidate source (teacher
    embedding table or MLM).
    """
    _check_cfg(cfg)
    if "text" not in ds.column_names:
        raise ValueError(f"augment_dataset needs a 'text' column; columns: {ds.column_names}")
    sources = _select_sources(len(ds), cfg, seed)
    picked = ds.select(sources) if len(sources) < len(ds) else ds
    texts = list(picked["text"])
    pairs = list(picked["text_pair"]) if "text_pair" in ds.column_names else None
    has_label = "label" in ds.column_names
    labels = list(picked["label"]) if has_label else None
    features = {"text": datasets.Value("string")}
    if pairs is not None:
        features["text_pair"] = datasets.Value("string")
    if has_label:
        features["label"] = ds.features["label"]
    features.update(source_idx=datasets.Value("int64"), is_original=datasets.Value("bool"))
    features = datasets.Features(features)

    if not cfg.enabled:
        mlm = mlm_tokenizer = None
    elif teacher is None:  # the MLM's own embedding table replaces the teacher's
        mlm, mlm_tokenizer = _load_mlm(cfg, mlm, mlm_tokenizer, tokenizer)
        if mlm is None:
            raise ValueError("augment_dataset needs the teacher (its word-embedding table gives "
                             "the offline candidates) or a masked-LM model")
    emb_model = teacher if teacher is not None else mlm
    emb = emb_model.get_input_embeddings().weight if cfg.enabled else None

    path = None
    if cache:
        # cfg holds the MLM's name; an MLM object is identified by its weights instead
        mlm_id = None if mlm is None else (getattr(mlm, "name_or_path", ""),
                                           _tensor_digest(mlm.get_input_embeddings().weight))
        key = config_hash(
            _CACHE_VERSION, _digest(texts), _digest(labels or []), sources,
            _digest(sorted(tokenizer.get_vocab().items())), _key_settings(cfg), seed,
            _tensor_digest(emb) if emb is not None else None, mlm_id,
            *([_digest(pairs)] if pairs is not None else []))
        path = cache_dir() / "augment" / f"{key}.parquet"
        if path.is_file():  # loaded before any masked-LM download
            return _read_parquet(path, features)
    if cfg.enabled:
        mlm, mlm_tokenizer = _load_mlm(cfg, mlm, mlm_tokenizer, tokenizer)

    rows = _generate(texts, labels, sources, tokenizer, emb, mlm, mlm_tokenizer, cfg, seed,
                     progress, pairs)
    out = datasets.Dataset.from_dict(rows, features=features)
    if path is not None:
        _write_parquet(out, path)
    return out


def _generate(texts, labels, sources, tokenizer, emb, mlm, mlm_tokenizer, cfg, seed, progress,
              pairs=None):
    """The rows of the augmented set. With ``pairs`` (a text-pair task) each side is augmented
    on its own while the other stays as it was, as the authors' script does for MNLI or MRPC:
    the original pair, then up to ``n_aug`` pairs with a new first text, then up to ``n_aug``
    with a new second text. (The script writes its second side's rows next to the *last*
    augmented first text, an artefact of editing the row in place; here the other side is
    always the original.)"""
    rows: dict[str, list] = {"text": [], **({"text_pair": []} if pairs is not None else {}),
                             **({"label": []} if labels is not None else {}),
                             "source_idx": [], "is_original": []}
    sides = [texts] if pairs is None else [texts, pairs]
    split = [split_words(t) for side in sides for t in side]
    per_sentence: list[dict[int, list[str]]] = [{} for _ in split]
    if cfg.enabled and cfg.n_aug > 0:
        per_sentence = _candidates(split, tokenizer, emb, mlm, mlm_tokenizer, cfg, progress)

    def add(n: int, text: str, pair: str | None, original: bool) -> None:
        rows["text"].append(text)
        if pairs is not None:
            rows["text_pair"].append(pair)
        rows["source_idx"].append(sources[n])
        rows["is_original"].append(original)
        if labels is not None:
            rows["label"].append(labels[n])

    for n in tqdm(range(len(texts)), desc="augmenting", disable=not progress):
        add(n, texts[n], pairs[n] if pairs is not None else None, True)
        for side, side_texts in enumerate(sides):
            # per source (and side): independent of the subset; side 0 draws as a single text
            rng = np.random.default_rng([seed, sources[n]] + ([side] if side else []))
            i = side * len(texts) + n
            generated = (augment_sentence(side_texts[n], per_sentence[i], cfg, rng, split[i])
                         if cfg.enabled else [])
            for sentence in generated:
                if side == 0:
                    add(n, sentence, pairs[n] if pairs is not None else None, False)
                else:
                    add(n, texts[n], sentence, False)
    return rows


def _candidates(split, tokenizer, emb, mlm, mlm_tokenizer, cfg, progress):
    """Candidate lists per sentence: ``[{word index: [candidates]}]``."""
    eligible = [[i for i, (w, *_) in enumerate(words) if is_eligible(w)] for words in split]
    mlm_positions: list[list[int]] = [[] for _ in split]
    if mlm is not None:  # paper: single-piece words via the MLM, the rest via embeddings
        for n, words in enumerate(split):
            mlm_positions[n] = [i for i in eligible[n]
                                if len(_pieces(mlm_tokenizer, words[i][0])) == 1]
    emb_positions = [[i for i in eligible[n] if i not in set(mlm_positions[n])]
                     for n in range(len(split))]
    emb_words = [split[n][i][0] for n in range(len(split)) for i in emb_positions[n]]
    table = embedding_candidates(emb_words, tokenizer, emb, cfg.k, progress=progress,
                                 filtered=cfg.filter_neighbours)
    out = []
    for n, words in enumerate(tqdm(split, desc="masked-LM candidates",
                                   disable=not progress or mlm is None)):
        cands = {i: table[words[i][0]] for i in emb_positions[n]}
        if mlm_positions[n]:
            cands.update(mlm_candidates(words, mlm_positions[n], mlm, mlm_tokenizer, cfg.k))
        out.append(cands)
    return out


def _write_parquet(ds: Any, path: Path) -> None:
    """Write ``ds`` to ``path`` atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        ds.to_parquet(str(tmp))


def _read_parquet(path: Path, features: Any):
    return datasets.Dataset(pq.read_table(path)).cast(features)


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------

def _sample_sources(aug_ds: Any, max_sources: int | None, seed: int) -> list[int]:
    ids = sorted(set(aug_ds["source_idx"]))
    if max_sources is not None and len(ids) > max_sources:
        rng = np.random.default_rng(seed)
        ids = sorted(rng.choice(ids, size=max_sources, replace=False).tolist())
    return ids


def _shown_texts(ds) -> list[str]:
    """The texts of ``ds`` as a person reads them: ``text``, or ``text || text_pair``."""
    if "text_pair" not in ds.column_names:
        return list(ds["text"])
    return [f"{a} || {b}" for a, b in zip(ds["text"], ds["text_pair"])]


def _teacher_view(aug_ds, teacher, tokenizer, source_ids, batch_size):
    wanted = set(source_ids)
    idx = [i for i, s in enumerate(aug_ds["source_idx"]) if s in wanted]
    sub = aug_ds.select(idx)
    inputs = (sub.select_columns(["text", "text_pair"]) if "text_pair" in sub.column_names
              else list(sub["text"]))
    pred = predict_logits(teacher, inputs, tokenizer,
                          batch_size=batch_size)[0].argmax(-1).tolist()
    originals = {s: p for s, p, o in zip(sub["source_idx"], pred, sub["is_original"]) if o}
    missing = wanted - set(originals)
    if missing:
        raise ValueError(f"sources {sorted(missing)[:5]} have no row with is_original=True; "
                         "inspect_augmentations needs the output of augment_dataset")
    return sub, pred, originals


def teacher_agreement(aug_ds: Any, teacher: Any, tokenizer: Any, *, batch_size: int = 64,
                      max_sources: int | None = 200, seed: int = 0) -> dict[str, float]:
    """How often the teacher gives an augmentation the same label as its original sentence.

    ``rate = mean over augmented rows of [argmax teacher(aug) == argmax teacher(original)]``,
    over (at most ``max_sources``, seeded sample of) sources. A low rate means the
    replacements change the meaning - the teacher's soft labels still make such examples
    useful, but it is worth knowing. Returns ``dict(rate, n)``.
    """
    sources = _sample_sources(aug_ds, max_sources, seed)
    sub, pred, originals = _teacher_view(aug_ds, teacher, tokenizer, sources, batch_size)
    same = [p == originals[s] for s, p, o in zip(sub["source_idx"], pred, sub["is_original"])
            if not o]
    return {"rate": float(np.mean(same)) if same else float("nan"), "n": len(same)}


def inspect_augmentations(aug_ds: Any, teacher: Any, tokenizer: Any, *, n: int = 5,
                          batch_size: int = 64, per_source: int = 4,
                          max_sources: int | None = 200, seed: int = 0):
    """Originals next to their augmentations, with the teacher's labels for both.

    A ``pandas.DataFrame`` with one row per shown augmentation (``n`` random sources, at most
    ``per_source`` augmentations each): ``source_idx``, ``original``, ``augmented``, ``gold``
    (the source's gold label), ``teacher_original``, ``teacher_augmented``, ``agrees``.
    The agreement rate of :func:`teacher_agreement` (over up to ``max_sources`` sources) is in
    ``df.attrs["agreement_rate"]`` and ``df.attrs["agreement_n"]``.
    """
    agreement = teacher_agreement(aug_ds, teacher, tokenizer, batch_size=batch_size,
                                  max_sources=max_sources, seed=seed)
    shown = _sample_sources(aug_ds, n, seed)
    sub, pred, originals = _teacher_view(aug_ds, teacher, tokenizer, shown, batch_size)
    names = getattr(teacher.config, "id2label", None) or {}
    label_name = (lambda i: names.get(i, names.get(str(i), i)))
    gold_feature = aug_ds.features.get("label")
    shown_texts = _shown_texts(sub)
    orig_text = {s: t for s, t, o in zip(sub["source_idx"], shown_texts, sub["is_original"])
                 if o}
    gold = ({s: g for s, g, o in zip(sub["source_idx"], sub["label"], sub["is_original"]) if o}
            if "label" in sub.column_names else {})
    records, count = [], {}
    for s, text, p, o in zip(sub["source_idx"], shown_texts, pred, sub["is_original"]):
        if o or count.get(s, 0) >= per_source:
            continue
        count[s] = count.get(s, 0) + 1
        g = gold.get(s)
        if g is not None and hasattr(gold_feature, "int2str"):
            g = gold_feature.int2str(g)
        records.append({"source_idx": s, "original": orig_text[s], "augmented": text,
                        "gold": g, "teacher_original": label_name(originals[s]),
                        "teacher_augmented": label_name(p), "agrees": p == originals[s]})
    df = pd.DataFrame.from_records(records, columns=[
        "source_idx", "original", "augmented", "gold", "teacher_original",
        "teacher_augmented", "agrees"])
    df.attrs["agreement_rate"] = agreement["rate"]
    df.attrs["agreement_n"] = agreement["n"]
    return df
