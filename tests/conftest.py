"""Shared test fixtures: tiny random BERTs saved with ``save_pretrained`` (so tests exercise the
same loading code a hub name uses), the real offline teacher asset, students built from a
teacher (:func:`make_student`) and the meta-device stand-in for the training loop
(:func:`meta_loop`)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# Tests use tiny models: one thread is faster for them. On a busy 2-core CPU, intra-op
# threads wait on each other (a tiny model measured 20x slower with 2 threads under load).
torch.set_num_threads(1)

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

WORDS = ("the a an and or but not no is was are be this that it film movie story plot "
         "good great bad awful fine funny boring dull smart moving best worst very too so "
         "really quite more most less one two some all of in on at to for with by as from "
         "i you he she we they his her its their my our love hate like enjoy watch see "
         "actor actors cast scene scenes director script time life world heart mind "
         "beautiful ugly long short slow fast new old little big true false never ever "
         "##s ##ed ##ing ##ly ##er ##est . , ! ? ' - ( ) :").split()


def bench_script(name: str):
    """A script of ``bench/`` imported as a module (``bench_script("bf16_gap")``); the
    scripts import their sibling ``benchlib``, so ``bench/`` goes on ``sys.path`` first."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "bench"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_texts(n: int, seed: int, max_words: int = 14) -> list[str]:
    """``n`` random sentences of 2..``max_words`` words from :data:`WORDS` (letters only)."""
    import random

    rng = random.Random(seed)
    vocab = [w for w in WORDS if w.isalpha()]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(2, max_words)))
            for _ in range(n)]


def write_vocab(folder: Path) -> Path:
    """A small WordPiece vocabulary: specials, a few hundred words, letters and their ## forms."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for tok in WORDS + letters + digits + [f"##{c}" for c in letters + digits]:
        if tok not in vocab:
            vocab.append(tok)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return path


def make_tiny_bert(folder: Path, *, layers: int = 4, hidden: int = 32, heads: int = 4,
                   intermediate: int = 64, num_labels: int = 2, seed: int = 0) -> Path:
    """Save a random ``BertForSequenceClassification`` and its tokenizer to ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab_file = write_vocab(folder)
    # transformers 5 ignores `vocab_file=` here (silently: a 5-token vocabulary); `vocab=` works.
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden,
                        num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=128,
                        num_labels=num_labels,
                        id2label={0: "negative", 1: "positive"} if num_labels == 2 else None,
                        label2id={"negative": 0, "positive": 1} if num_labels == 2 else None)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide, 4-head random BERT classifier with a small WordPiece vocabulary."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A 4-layer 48-wide teacher with the same vocabulary (widths differ from the student)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_teacher"), layers=4, hidden=48,
                          heads=4, intermediate=96, seed=1)


@pytest.fixture(scope="session")
def teacher_asset_dir() -> Path:
    """The real all-MiniLM-L6-v2 backbone from the offline assets (``make test`` fetches it)."""
    from tinylab import assets

    try:
        return assets.asset_path("all-MiniLM-L6-v2")
    except assets.AssetNotAvailableError as err:  # a clear failure, never a silent skip
        pytest.fail(f"real teacher asset missing: {err}")


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private, empty TINYLAB_CACHE for tests that write to the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYLAB_CACHE", str(cache))
    return cache


LABELS = ["negative", "positive"]


def make_student(teacher_model, cfg, *, dropout: bool = True, seed: int = 0):
    """A student built from ``teacher_model`` by ``cfg.student`` after ``torch.manual_seed(seed)``
    (so two calls give the same weights), labels ``negative`` / ``positive``; with
    ``dropout=False`` every dropout layer is switched off (p = 0), for runs compared step by step
    with a reference."""
    from tinylab.models import build_student

    torch.manual_seed(seed)
    student = build_student(teacher_model, cfg.student, id2label=LABELS)
    if not dropout:
        for module in student.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return student


# --------------------------------------------------------------------------------------------
# The meta device: the GPU path checked without a GPU (tests/test_device.py explains it)
# --------------------------------------------------------------------------------------------

META = torch.device("meta")


class MetaAccelerator:
    """The part of ``accelerate.Accelerator`` the stage functions use, on the meta device."""

    device = META
    num_processes, process_index = 1, 0
    is_main_process = True

    def autocast(self):
        return contextlib.nullcontext()

    def wait_for_everyone(self):
        pass


@pytest.fixture()
def meta_loop(monkeypatch):
    """Replace the loop by one step on the meta device; record what every stage computed.

    Every stage (``stages``, stage b in ``stage_parts``, the other objectives in
    ``objectives``) calls the stand-in instead of ``train_stage``: it puts the modules and one
    real batch on ``meta`` (through the loop's own ``batch_to_device``), calls the stage's own
    ``loss_fn`` and ``backward``, and checks that every loss, and every gradient of a trained
    weight, is on ``meta``. Returns the list of ``(stage name, sorted loss names)``."""
    from transformers import masking_utils

    from tinylab.distill import loop, objectives, stage_parts, stages
    from tinylab.distill.history import History, StageLog

    calls = []

    def one_meta_step(name, *, modules, loss_fn, train, tokenizer, stage, seed, **_):
        loader = loop.make_loader(train, tokenizer, stage.batch_size, seed, True)
        batch = loop.collate(loader, loop.epoch_batches(loader, 0)[0])
        for module in modules.values():
            module.to(META)
        batch = loop.batch_to_device(batch, META)
        losses = loss_fn(modules, batch)
        assert {v.device for v in losses.values()} == {META}, (name, losses)
        losses["total"].backward()
        trained = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        assert trained and all(p.grad is None or p.grad.device == META for p in trained)
        assert any(p.grad is not None for p in trained), f"{name}: no gradient reached a weight"
        calls.append((name, sorted(losses)))
        history = History()
        history.stages[name] = StageLog(info={"total_steps": 1})
        return history

    monkeypatch.setattr(stages, "train_stage", one_meta_step)
    monkeypatch.setattr(stage_parts, "train_stage", one_meta_step)  # stage b
    monkeypatch.setattr(objectives, "train_stage", one_meta_step)
    # transformers skips the padding mask when it sees none (reads values); keep it on meta.
    original = masking_utils._ignore_bidirectional_mask_sdpa
    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa",
                        lambda mask, *a, **k: False if mask is not None
                        and mask.device.type == "meta" else original(mask, *a, **k))
    return calls
