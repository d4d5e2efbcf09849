"""Device placement, checked without a GPU.

No machine here has a GPU, so the GPU path is made right by construction and tested on
PyTorch's ``meta`` device: a meta tensor has a shape and a device but no data, and any
operation that mixes it with a CPU tensor raises "Tensor on device cpu is not on the expected
device meta" - the same mistake that fails on CUDA. The stage functions
(:func:`finetune_teacher`, :func:`general_distillation`, :func:`task_distillation`,
:func:`train_baseline`) run with a stand-in for :func:`train_stage` that puts their modules and
one real batch on ``meta`` (through the loop's own :func:`batch_to_device`) and calls their
actual ``loss_fn`` plus ``backward``: a stray CPU tensor in a loss, a teacher left on another
device or a batch not moved would raise. What needs values (the loop's logging, evaluation)
cannot run on ``meta``; ``make gpu-check`` runs those on a real GPU.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from conftest import META, MetaAccelerator, make_student, toy_texts

from tinylab import device as dev
from tinylab.distill.options import RunOptions

QUIET = RunOptions(progress=False)
from tinylab.config import get_config
from tinylab.distill import loop, stage_parts, stages

LABELS = ["negative", "positive"]


# --------------------------------------------------------------------------------------------
# Settings: resolution and one-line errors before any work
# --------------------------------------------------------------------------------------------

def test_auto_resolves_to_an_available_device():
    device = dev.resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
    else:
        assert device.type in {"cpu", "mps"}
    assert dev.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_line():
    with pytest.raises(dev.DeviceError) as err:
        dev.resolve_device("cuda")
    message = str(err.value)
    assert "\n" not in message and "device=cuda" in message
    assert torch.__version__ in message and "device=auto" in message


def test_unknown_device_and_precision_name_the_key(monkeypatch):
    with pytest.raises(ValueError, match="bad value 'gpu' for device"):
        get_config("ci", ["device=gpu"])
    with pytest.raises(ValueError, match="bad value 'int4' for precision"):
        get_config("ci", ["precision=int4"])
    monkeypatch.setenv("TINYLAB_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"for device \(from \$TINYLAB_DEVICE\)"):
        get_config("ci")


def test_environment_sets_device_and_explicit_override_wins(monkeypatch):
    monkeypatch.setenv("TINYLAB_DEVICE", "cpu")
    monkeypatch.setenv("TINYLAB_PRECISION", "bf16")
    cfg = get_config("ci")
    assert (cfg.device, cfg.precision) == ("cpu", "bf16")
    assert get_config("ci", ["precision=fp32"]).precision == "fp32"


def test_precision_checks_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    assert dev.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(dev.DeviceError, match="precision=fp16 needs a CUDA GPU"):
        dev.resolve_precision("fp16", cpu)
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(dev.DeviceError) as err:
        dev.resolve_precision("bf16", cpu)
    assert "\n" not in str(err.value) and "precision=bf16" in str(err.value)
    monkeypatch.setattr(dev, "cpu_supports_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
    assert dev.accelerate_precision("bf16") == "bf16" and dev.accelerate_precision("fp32") == "no"


def test_this_cpu_reports_its_bf16_flag():
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    expected = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))
    assert dev.cpu_supports_bf16() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_cuda_before_any_data_loads(tmp_path, capsys, monkeypatch):
    from tinylab import cli, pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the device was checked")

    monkeypatch.setattr(pipeline, "load_task", no_loading)  # where distill loads it
    out = tmp_path / "run"
    code = cli.main(["distill", "--profile", "ci", "--output", str(out), "--set", "device=cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "device=cuda" in err
    assert not out.exists()


def test_make_accelerator_follows_the_settings():
    acc = dev.make_accelerator("cpu", "fp32")
    assert acc.device.type == "cpu" and acc.mixed_precision == "no"


@pytest.fixture(autouse=True)
def masks_without_values(monkeypatch):
    """transformers decides whether a padding mask can be skipped by reading its values
    (``padding_mask.all()``); a meta tensor has none. Answer "keep the mask" on meta, as a
    padded batch would; real tensors go through unchanged."""
    from transformers import masking_utils

    original = masking_utils._ignore_bidirectional_mask_sdpa

    def keep_mask_on_meta(padding_mask, *args, **kwargs):
        if padding_mask is not None and padding_mask.device.type == "meta":
            return False
        return original(padding_mask, *args, **kwargs)

    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa", keep_mask_on_meta)


# --------------------------------------------------------------------------------------------
# Helpers every notebook uses
# --------------------------------------------------------------------------------------------

def test_to_device_moves_tensors_and_keeps_the_rest():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "texts": ["a", "b"]}
    moved = dev.to_device(batch, META)
    assert moved["input_ids"].device == META and moved["texts"] == ["a", "b"]
    assert batch["input_ids"].device.type == "cpu"  # the original is untouched


def test_batch_to_device_keeps_example_index_on_the_cpu():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long),
             loop.EXAMPLE_INDEX: torch.tensor([4, 7])}
    moved = loop.batch_to_device(batch, META)
    assert moved["input_ids"].device == META
    assert moved[loop.EXAMPLE_INDEX].device.type == "cpu"


def test_latency_refuses_models_on_different_devices():
    from tinylab.evaluate import compare_models, measure_latency

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).to(META)
    with pytest.raises(ValueError, match="cannot compare latencies across devices"):
        compare_models({"teacher": a, "student": b}, None, None, ["x"])
    assert callable(measure_latency)


def test_latency_reports_device_and_dtype(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinylab.evaluate import measure_latency

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    result = measure_latency(model, tokenizer, ["a good film"], batch_sizes=(1,), warmup=0,
                             repeats=1)
    assert result[1]["device"] == "cpu" and result[1]["dtype"] == "float32"


def test_evaluation_moves_inputs_to_the_model(tiny_bert_dir):
    """On meta the forward pass runs; only copying the logits out needs values. A CPU input
    left on the CPU would fail earlier, with a device mismatch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinylab.evaluate import predict_logits

    # (sdpa inspects the mask values to skip it; the eager path, like tinylab's, does not)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, attn_implementation="eager").to(META)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with pytest.raises(NotImplementedError, match="meta tensor"):
        predict_logits(model, ["a good film", "bad"], tokenizer)


# --------------------------------------------------------------------------------------------
# The stages' loss functions on the meta device (MetaAccelerator, meta_loop: conftest.py)
# --------------------------------------------------------------------------------------------

def _texts(n: int, seed: int) -> list[str]:
    return toy_texts(n, seed, max_words=10)


@pytest.fixture(scope="module")
def toy_data():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    texts = _texts(32, 0)
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(32)]},
                           features=features)
    return DatasetDict(train=ds, validation=ds.select(range(8)))


@pytest.fixture()
def cfg(tiny_teacher_dir):
    return get_config("ci", {
        "teacher.model": str(tiny_teacher_dir), "teacher.batch_size": 8,
        "student.num_layers": 2, "student.hidden_size": 32, "student.num_heads": 4,
        "student.intermediate_size": 64, "student.init": "pca",
        "data.max_length": 16, "data.general_max_length": 16,
        "general.batch_size": 8, "task_intermediate.batch_size": 8,
        "task_prediction.batch_size": 8, "cache_teacher_outputs": False, "device": "cpu"})


def _models(cfg):
    from tinylab.models import load_teacher

    teacher, tokenizer = load_teacher(cfg.teacher.model, id2label=LABELS)
    return teacher, make_student(teacher, cfg), tokenizer


def test_teacher_finetuning_step_on_meta(cfg, toy_data, meta_loop):
    model, _, history = stages.finetune_teacher(cfg, toy_data, cache=False,
                                                run=RunOptions(accelerator=MetaAccelerator()))
    assert meta_loop == [("teacher", ["total"])]
    assert model.device == META  # returned where the accelerator trains


def test_general_distillation_step_on_meta(cfg, toy_data, meta_loop):
    teacher, student, tokenizer = _models(cfg)
    stages.general_distillation(cfg, teacher, student, toy_data["train"].select_columns(["text"]),
                                tokenizer=tokenizer, run=RunOptions(accelerator=MetaAccelerator()))
    assert meta_loop == [("general", ["attention", "embedding", "hidden", "total"])]
    assert next(teacher.parameters()).device == META  # the teacher follows the training device


def test_task_distillation_steps_on_meta(cfg, toy_data, meta_loop):
    teacher, student, tokenizer = _models(cfg)
    stages.task_distillation(cfg, teacher, student, toy_data["train"], tokenizer=tokenizer,
                             run=RunOptions(accelerator=MetaAccelerator()))
    assert [name for name, _ in meta_loop] == ["intermediate", "prediction"]


@pytest.mark.parametrize("kind", stages.BASELINES)
def test_baseline_steps_on_meta(cfg, toy_data, meta_loop, kind):
    teacher, student, tokenizer = _models(cfg)
    stages.train_baseline(cfg, teacher, student, toy_data, kind, tokenizer=tokenizer,
                          run=RunOptions(accelerator=MetaAccelerator()))
    assert [name for name, _ in meta_loop] == [kind]


def test_cached_teacher_outputs_stay_on_the_cpu_and_move_per_batch(cfg, toy_data):
    from tinylab.distill.teacher_outputs import TeacherOutputs

    teacher, _, tokenizer = _models(cfg)
    train = stage_parts.training_set(toy_data["train"], tokenizer, cfg.data.max_length,
                                     labels=False)
    targets = TeacherOutputs(teacher, train, tokenizer,
                             {"hidden_states": [0, 2], "attentions": [2], "logits": True},
                             passes=3, batch_size=8, progress=False,
                             accelerator=SimpleNamespace(device=torch.device("cpu"),
                                                         num_processes=1, process_index=0,
                                                         autocast=contextlib.nullcontext))
    loader = loop.make_loader(train, tokenizer, 8, 0, True)
    batch = loop.collate(loader, loop.epoch_batches(loader, 0)[0])
    targets(batch)  # builds the cache on first use
    assert targets.cached
    stored = {t.device.type for row in targets.store for t in row.values()}
    assert stored == {"cpu"}
    served = targets(loop.batch_to_device(batch, META))
    tensors = [*served["hidden_states"].values(), *served["attentions"].values(),
               served["logits"]]
    assert {t.device for t in tensors} == {META}


@pytest.mark.skipif(not dev.cpu_supports_bf16(), reason="needs a CPU with native bf16")
def test_every_stage_of_one_model_trains_under_autocast(tiny_bert_dir):
    """General distillation, stage a, stage b: the same student goes through several stages in
    one process. Each must run its forward passes in the run's precision. (Accelerate hands a
    module it prepared before back as it is, so without care the second stage ran in fp32 and
    a general student trained in the same process gave other numbers than a cached one.)"""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinylab.config import StageConfig
    from tinylab.data import tokenize

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    train = tokenize(Dataset.from_dict({"text": ["a good film", "bad"] * 4}), tokenizer, 16)
    dtypes: dict[str, set] = {}

    def loss_fn(modules, batch):
        dense = modules["student"].bert.encoder.layer[0].output.dense
        handle = dense.register_forward_hook(
            lambda module, args, out: dtypes.setdefault(stage_name, set()).add(out.dtype))
        try:
            logits = modules["student"](**loop.model_inputs(batch)).logits
        finally:
            handle.remove()
        return {"total": logits.float().pow(2).mean()}

    accelerator = dev.make_accelerator("cpu", "bf16")
    for stage_name in ("general", "intermediate", "prediction"):
        loop.train_stage(stage_name, modules={"student": model}, loss_fn=loss_fn,
                         train=train.select_columns(["input_ids", "attention_mask"]),
                         tokenizer=tokenizer, stage=StageConfig(batch_size=4, max_steps=2),
                         seed=0, run=RunOptions(progress=False, accelerator=accelerator))
    assert dtypes == {name: {torch.bfloat16} for name in ("general", "intermediate", "prediction")}
    # and each stage takes its autocast off again when it ends
    with torch.no_grad():
        assert model(**tokenizer(["a film"], return_tensors="pt")).logits.dtype == torch.float32


@pytest.mark.skipif(not dev.cpu_supports_bf16(), reason="needs a CPU with native bf16")
def test_one_process_can_switch_precision_between_runs():
    """Accelerate fixes the mixed precision once per process; a notebook or a benchmark that
    trains in fp32 and then in bf16 must not need a kernel restart."""
    seen = []
    for precision in ("fp32", "bf16", "fp32"):
        accelerator = dev.make_accelerator("cpu", precision)
        layer = accelerator.prepare(torch.nn.Linear(8, 8))
        with accelerator.autocast():
            dtype = torch.nn.Linear(8, 8)(torch.randn(2, 8)).dtype
        seen.append((accelerator.mixed_precision, dtype))
        accelerator.free_memory(layer)
    assert seen == [("no", torch.float32), ("bf16", torch.bfloat16), ("no", torch.float32)]
