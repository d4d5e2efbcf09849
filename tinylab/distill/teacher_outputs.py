"""Teacher outputs: computed once and reused when they do not change, else per batch.

In every distillation stage the teacher is frozen and in eval mode (no dropout), so its output
for a given example is the same in every epoch. Running its forward pass again each epoch is
wasted work - on a CPU the teacher forward is the most expensive part of a distillation step.
:class:`TeacherOutputs` therefore runs the teacher over the training set *once* and keeps what
the loss needs, and only that:

* the mapped layers only (``TinyBertLoss.teacher_layers``: e.g. hidden states 0, 2, 4, 6 and
  attention scores of layers 2, 4, 6 for a 3-layer student of a 6-layer teacher);
* per example, unpadded: hidden states ``(n_hidden, L_i, d)`` and scores ``(n_attn, H, L_i,
  L_i)`` for the example's own length ``L_i``; stored in float16 (half the memory, and the
  rounding error ~1e-3 relative is far below what the student reproduces);
* logits ``(C,)`` in float32.

A batch is reassembled by padding these to the batch's length: hidden states with 0, attention
scores with ``finfo.min`` (what the additive mask puts at padded keys). The masked losses ignore
padded positions, so the result is the on-the-fly result up to float16 rounding. (With
``loss.official_attention`` padded query rows differ: on the fly they hold the scores of the
padding tokens, from the cache they are clamped to 0; neither carries information.)

The cache is used only when it pays off and fits: ``cfg.cache_teacher_outputs`` is on, the
stage passes over the data more than once, and the estimated size stays below
``memory_budget`` bytes (default :data:`DEFAULT_MEMORY_BUDGET`, or ``$TINYLAB_TEACHER_CACHE_MB``).
Otherwise the teacher runs on each batch, under ``torch.inference_mode()`` (no autograd
bookkeeping at all), and its logits - 8 bytes per example and class - are kept anyway: task
stage b (prediction layer) then needs no teacher pass for the examples stage a already saw
(same seed and batch size give the same batches), and a second epoch needs none at all. ``info`` records the decision, the size and the seconds spent, so the
gain can be measured (``History[stage].info["teacher"]``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from accelerate.utils import gather_object
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from tinylab.atomic import atomic_path
from tinylab.data import make_dataloader
from tinylab.distill.loop import collate, model_inputs

__all__ = ["TeacherOutputs", "DEFAULT_MEMORY_BUDGET", "expected_passes", "merge_needs",
           "estimate_cache_bytes", "all_layers", "shared_file", "logits_only"]

DEFAULT_MEMORY_BUDGET = 2 * 1024 ** 3  # 2 GiB
_TENSOR_OVERHEAD = 250  # bytes of Python/tensor bookkeeping per stored tensor (measured order)


def _budget(memory_budget: int | None) -> int:
    if memory_budget is not None:
        return int(memory_budget)
    env = os.environ.get("TINYLAB_TEACHER_CACHE_MB")
    if env:
        try:
            return int(float(env) * 1024 ** 2)
        except ValueError:
            raise ValueError(f"$TINYLAB_TEACHER_CACHE_MB must be a number of megabytes, got "
                             f"{env!r}") from None
    return DEFAULT_MEMORY_BUDGET


def merge_needs(*needs: Mapping[str, Any]) -> dict[str, Any]:
    """Union of several ``TinyBertLoss.teacher_layers`` results (e.g. task stages a and b)."""
    return {"hidden_states": sorted({i for n in needs for i in n.get("hidden_states", [])}),
            "attentions": sorted({i for n in needs for i in n.get("attentions", [])}),
            "logits": any(n.get("logits") for n in needs)}


def expected_passes(stage, num_examples: int, processes: int = 1) -> float:
    """How many times a stage sees each example on average (epochs, or fewer if capped)."""
    if not stage.enabled:
        return 0.0
    passes = float(stage.epochs)
    if stage.max_steps is not None:
        passes = min(passes, stage.max_steps * stage.batch_size * processes / max(1, num_examples))
    return passes


def estimate_cache_bytes(lengths, need: Mapping[str, Any], teacher_config) -> int:
    """Bytes the cache needs for examples of the given token lengths."""
    n_h, n_a = len(need["hidden_states"]), len(need["attentions"])
    d, heads = teacher_config.hidden_size, teacher_config.num_attention_heads
    tokens = sum(lengths)
    squares = sum(l * l for l in lengths)
    per_example = (_TENSOR_OVERHEAD * (bool(n_h) + bool(n_a) + bool(need["logits"]))
                   + 4 * teacher_config.num_labels * bool(need["logits"]))
    return 2 * (n_h * tokens * d + n_a * heads * squares) + per_example * len(lengths)


def all_layers(teacher_config) -> dict[str, Any]:
    """Every tensor a loss could read: all hidden states, all layers' scores, the logits."""
    n = teacher_config.num_hidden_layers
    return {"hidden_states": list(range(n + 1)), "attentions": list(range(1, n + 1)),
            "logits": True}


def logits_only(need: Mapping[str, Any]) -> bool:
    """True when ``need`` asks for the logits and no layer (Hinton KD, a prediction stage)."""
    return bool(need["logits"]) and not need["hidden_states"] and not need["attentions"]


def shared_file(directory: str | Path, teacher, train, precision: str, *,
                logits: bool = False) -> Path:
    """Where the shared teacher outputs of ``teacher`` on ``train`` live in ``directory``:
    ``teacher-outputs-<hash>.safetensors`` (every layer), or ``teacher-logits-<hash>`` with
    ``logits=True`` (the logits alone, for runs that read nothing else).

    The name is a hash of what the outputs depend on: every example's token ids in row order,
    the teacher's weights (its first and last parameter tensors, which tell fine-tuned
    teachers apart), and the precision the teacher runs in.
    """
    h = hashlib.sha256()
    for ids in train["input_ids"]:
        h.update(torch.as_tensor(ids, dtype=torch.int32).numpy().tobytes())
        h.update(b"|")
    params = list(teacher.parameters())
    for p in (params[0], params[-1]):
        h.update(p.detach().float().cpu().numpy().tobytes())
    h.update(precision.encode())
    kind = "teacher-logits" if logits else "teacher-outputs"
    return Path(directory) / f"{kind}-{h.hexdigest()[:16]}.safetensors"


class TeacherOutputs:
    """Teacher targets for one training set; call it with a batch to get them.

    ``teacher``: frozen model (put in eval mode, gradients off, moved to the device).
    ``train``: the tokenised training set with an ``example_idx`` column (batches carry it).
    ``need``: ``{"hidden_states": [...], "attentions": [...], "logits": bool}``.
    ``passes``: how often the stage(s) will see each example (:func:`expected_passes`).
    ``__call__(batch)`` returns ``{"hidden_states": {i: (B, L, d)}, "attentions": {n: (B, H,
    L, L)}, "logits": (B, C)}`` on the batch's device, the format ``TinyBertLoss`` accepts.

    ``shared_dir``: several runs on the same training set and teacher (the ablation benchmark:
    one seed's augmented data, many variants) can share one cache on disk. The first run
    computes *every* layer (:func:`all_layers`) once and writes it to
    ``shared_dir/teacher-outputs-<hash>.safetensors`` (:func:`shared_file`); later runs load
    that file and serve whichever layers they need, with no teacher pass at all. Runs that
    need the logits alone (Hinton KD, notebook 03's temperature sweep) share a file of logits
    only, ``teacher-logits-<hash>.safetensors``: a few bytes per example. The targets are the
    same float16 copies a private cache would hold.
    """

    def __init__(self, teacher, train, tokenizer, need: Mapping[str, Any], *, passes: float,
                 enabled: bool = True, memory_budget: int | None = None, batch_size: int = 64,
                 accelerator=None, progress: bool = True,
                 why_disabled: str = "cache_teacher_outputs=False",
                 shared_dir: str | Path | None = None):
        self.teacher = teacher.eval().requires_grad_(False)
        self.need = {"hidden_states": list(need["hidden_states"]),
                     "attentions": list(need["attentions"]), "logits": bool(need["logits"])}
        self.accelerator = accelerator
        device = accelerator.device if accelerator is not None else next(
            teacher.parameters()).device
        self.teacher.to(device)
        self.store: list[dict[str, torch.Tensor]] | None = None
        self.layout = self.need  # which tensors the store holds, in order
        lengths = [len(ids) for ids in train["input_ids"]]
        self.num_examples = len(lengths)
        budget = _budget(memory_budget)
        size = estimate_cache_bytes(lengths, self.need, teacher.config)
        self.shared_path: Path | None = None
        if enabled and shared_dir is not None:
            only_logits = logits_only(self.need)
            everything = self.need if only_logits else all_layers(teacher.config)
            shared_size = estimate_cache_bytes(lengths, everything, teacher.config)
            if shared_size <= budget:
                self.shared_path = shared_file(shared_dir, self.teacher, train,
                                               self._precision(), logits=only_logits)
                self.layout, size, passes = everything, shared_size, max(passes, 2.0)
        if not enabled:
            reason = f"disabled ({why_disabled})"
        elif passes <= 1:
            reason = f"each example is seen {passes:.2g} time(s): a cache would save nothing"
        elif size > budget:
            reason = (f"the cache would need {size / 2**20:.0f} MiB, more than the budget of "
                      f"{budget / 2**20:.0f} MiB ($TINYLAB_TEACHER_CACHE_MB)")
        elif self.shared_path is not None:
            reason = f"shared with other runs on the same data ({self.shared_path.name})"
        else:
            reason = f"each example is seen {passes:.2g} times"
        cached = enabled and passes > 1 and size <= budget
        self.info: dict[str, Any] = {"mode": "cache" if cached else "on-the-fly",
                                     "reason": reason, "estimated_bytes": size,
                                     "budget_bytes": budget, "bytes": 0, "build_seconds": 0.0,
                                     "forward_seconds": 0.0, "forward_calls": 0}
        # Built on first use, so a stage that is already complete (resumed) never pays for it.
        self._pending = (train, tokenizer, lengths, batch_size, progress) if cached else None
        # On the fly, the logits of every forward pass are kept (8 bytes per class and example):
        # stage b then reuses those of the examples stage a already sent through the teacher.
        self.memo: dict[int, torch.Tensor] | None = {} if enabled and not cached else None

    # -- the teacher forward pass ------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, batch: Mapping[str, torch.Tensor],
                 need: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One teacher forward pass; only the needed tensors are kept (the logits, which every
        forward computes anyway, are always returned)."""
        need = need or self.need
        context = (self.accelerator.autocast() if self.accelerator is not None
                   else contextlib.nullcontext())
        with context:
            out = self.teacher(**model_inputs(batch),
                               output_hidden_states=bool(need["hidden_states"]),
                               output_attentions=bool(need["attentions"]))
        subset: dict[str, Any] = {}
        if need["hidden_states"]:
            subset["hidden_states"] = {i: out.hidden_states[i].float()
                                       for i in need["hidden_states"]}
        if need["attentions"]:
            subset["attentions"] = {n: out.attentions[n - 1].float() for n in need["attentions"]}
        subset["logits"] = out.logits.float()
        return subset

    def _precision(self) -> str:
        acc = self.accelerator
        return str(getattr(acc, "mixed_precision", "no")) if acc is not None else "no"

    # -- the shared file -----------------------------------------------------------------------
    def _load_shared(self, n_examples: int) -> bool:
        """Fill the store from the shared file; False if there is none (or it does not fit)."""
        path = self.shared_path
        if path is None or not path.exists():
            return False
        start = time.perf_counter()
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["tinylab"])
            if meta["layout"] != self.layout or meta["examples"] != n_examples:
                return False
            store = [{k: f.get_tensor(f"{i}.{k}") for k in meta["keys"]}
                     for i in range(n_examples)]
        self.store = store
        self.info.update(shared="loaded", build_seconds=time.perf_counter() - start,
                         bytes=sum(t.numel() * t.element_size() for r in store for t in r.values()))
        return True

    def _save_shared(self) -> None:
        keys = sorted(self.store[0])
        tensors = {f"{i}.{k}": t.contiguous() for i, r in enumerate(self.store) for k, t in r.items()}
        meta = {"layout": self.layout, "examples": len(self.store), "keys": keys}
        self.shared_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.shared_path) as tmp:
            save_file(tensors, str(tmp), metadata={"tinylab": json.dumps(meta)})
        self.info["shared"] = "built"

    # -- building the cache ------------------------------------------------------------------
    def _build(self, train, tokenizer, lengths, batch_size: int, progress: bool) -> None:
        """Run the teacher once over ``train`` (longest first, so batches barely need padding)
        and keep per-example, unpadded float16 copies of the needed tensors. With several
        processes each one computes a share and the shares are exchanged."""
        if self._load_shared(len(lengths)):
            return
        start = time.perf_counter()
        acc = self.accelerator
        world = acc.num_processes if acc is not None else 1
        rank = acc.process_index if acc is not None else 0
        device = next(self.teacher.parameters()).device
        loader = make_dataloader(train, tokenizer, batch_size, shuffle=False)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        mine = chunks[rank::world]
        records: list[tuple[int, dict[str, torch.Tensor]]] = []
        need_logits = self.layout["logits"]
        quiet = {} if (progress and rank == 0) else {"disable": True}
        for chunk in tqdm(mine, desc="teacher outputs (once)", dynamic_ncols=True, **quiet):
            batch = {k: v.to(device) for k, v in collate(loader, chunk).items()}
            out = self._forward(batch, self.layout)
            real = batch["attention_mask"].sum(1).tolist()
            for b, idx in enumerate(batch["example_idx"].tolist()):
                n = int(real[b])
                rec: dict[str, torch.Tensor] = {}
                if "hidden_states" in out:
                    rec["hidden"] = torch.stack([h[b, :n] for h in out["hidden_states"].values()]
                                                ).half().cpu()
                if "attentions" in out:
                    rec["attn"] = torch.stack([a[b, :, :n, :n] for a in out["attentions"].values()]
                                              ).half().cpu()
                if need_logits:
                    rec["logits"] = out["logits"][b].float().cpu()
                records.append((int(idx), rec))
        if world > 1:
            records = gather_object(records)
        store: list[dict[str, torch.Tensor] | None] = [None] * len(lengths)
        for idx, rec in records:
            store[idx] = rec
        missing = [i for i, r in enumerate(store) if r is None]
        if missing:
            raise RuntimeError(f"teacher cache incomplete: {len(missing)} examples missing "
                               f"(e.g. {missing[:5]}); is 'example_idx' equal to the row index?")
        self.store = store  # type: ignore[assignment]
        self.info["build_seconds"] = time.perf_counter() - start
        self.info["bytes"] = sum(t.numel() * t.element_size() for r in store for t in r.values())
        if self.shared_path is not None and rank == 0:
            self._save_shared()
        if world > 1:
            acc.wait_for_everyone()

    # -- serving a batch ---------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, torch.Tensor],
                 need: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Teacher targets for ``batch`` (which carries ``example_idx``); ``need`` selects a
        subset of this object's tensors (e.g. logits only in the prediction stage)."""
        need = self.need if need is None else need
        self.build()
        if self.store is not None:
            return self._from_cache(batch, need)
        ids = batch["example_idx"].tolist()
        layers = bool(need["hidden_states"] or need["attentions"])
        if not layers and self.memo is not None and all(i in self.memo for i in ids):
            self.info["memo_hits"] = self.info.get("memo_hits", 0) + 1
            return {"logits": torch.stack([self.memo[i] for i in ids]).to(
                batch["attention_mask"].device)}
        start = time.perf_counter()
        out = self._forward(batch, need)
        # Inference-mode tensors cannot take part in autograd; plain copies can.
        out = {k: ({i: t.clone() for i, t in v.items()} if isinstance(v, dict) else v.clone())
               for k, v in out.items()}
        if self.memo is not None:
            for i, row in zip(ids, out["logits"].cpu()):
                self.memo[i] = row
        self.info["forward_seconds"] += time.perf_counter() - start
        self.info["forward_calls"] += 1
        return out

    def _from_cache(self, batch: Mapping[str, torch.Tensor], need: Mapping[str, Any]
                    ) -> dict[str, Any]:
        mask = batch["attention_mask"]
        device, (size, length) = mask.device, mask.shape
        rows = [self.store[i] for i in batch["example_idx"].tolist()]  # type: ignore[index]
        out: dict[str, Any] = {}
        if need["hidden_states"]:
            d = rows[0]["hidden"].shape[-1]
            pick = [self.layout["hidden_states"].index(i) for i in need["hidden_states"]]
            hidden = torch.zeros(len(pick), size, length, d)
            for b, r in enumerate(rows):
                hidden[:, b, :r["hidden"].shape[1]] = r["hidden"][pick]
            hidden = hidden.to(device)
            out["hidden_states"] = dict(zip(need["hidden_states"], hidden.unbind(0)))
        if need["attentions"]:
            heads = rows[0]["attn"].shape[1]
            pick = [self.layout["attentions"].index(i) for i in need["attentions"]]
            attn = torch.full((len(pick), size, heads, length, length),
                              torch.finfo(torch.float32).min)
            for b, r in enumerate(rows):
                n = r["attn"].shape[-1]
                attn[:, b, :, :n, :n] = r["attn"][pick]
            attn = attn.to(device)
            out["attentions"] = dict(zip(need["attentions"], attn.unbind(0)))
        if need["logits"]:
            out["logits"] = torch.stack([r["logits"] for r in rows]).to(device)
        return out

    def build(self) -> "TeacherOutputs":
        """Build the cache now, if it is to be cached (otherwise it is built on first use)."""
        if self._pending is not None:
            self._build(*self._pending)
            self._pending = None
        return self

    def subset(self, need: Mapping[str, Any]):
        """A callable ``batch -> targets`` restricted to ``need`` (one stage's share)."""
        return lambda batch: self(batch, need)

    @property
    def cached(self) -> bool:
        """Whether targets come from the cache (built now or on first use)."""
        return self.store is not None or self._pending is not None

    def __len__(self) -> int:
        """The number of examples of the training set the targets are for."""
        return self.num_examples

    def summary(self) -> dict[str, Any]:
        """``info`` rounded for logs and reports."""
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.info.items()}
