"""Exercise of notebook 05 (two-stage distillation): which teacher, which data and which loss
terms each of TinyBERT's three training runs uses (Jiao et al. 2020, Sec. 3.3)."""
from __future__ import annotations

from tinylab.exercises import register

STAGES = ("general", "intermediate", "prediction")
TEACHERS = ("pretrained", "finetuned")
DATA = ("general corpus", "augmented task data", "task data with gold labels")
TERMS = ("embedding", "attention", "hidden", "prediction")


def stage_plan(stage: str) -> dict:
    """TinyBERT's recipe for one stage: the teacher, the data and the loss terms.

    ``stage``: ``"general"`` (general distillation), ``"intermediate"`` (task distillation,
    stage a) or ``"prediction"`` (task distillation, stage b). Returns
    ``{"teacher": ..., "data": ..., "terms": [...]}`` with values from ``TEACHERS``, ``DATA``
    and ``TERMS``.
    """
    if stage == "general":
        return {"teacher": "pretrained", "data": "general corpus",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "intermediate":
        return {"teacher": "finetuned", "data": "augmented task data",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "prediction":
        return {"teacher": "finetuned", "data": "augmented task data", "terms": ["prediction"]}
    raise ValueError(f"unknown stage {stage!r}")


_WHY = {
    ("general", "teacher"): "general distillation imitates the pre-trained (not fine-tuned) "
                            "BERT: there is no task yet",
    ("general", "data"): "general distillation runs on a large unlabelled general corpus "
                         "(the paper: Wikipedia)",
    ("general", "terms"): "general distillation has no task predictions to imitate, so only the "
                          "transformer-layer and embedding terms",
    ("intermediate", "teacher"): "task distillation imitates the teacher fine-tuned on the task",
    ("intermediate", "data"): "task distillation runs on the augmented task sentences (no gold "
                              "labels needed: the teacher provides every target)",
    ("intermediate", "terms"): "stage a distils the embeddings, attention scores and hidden "
                               "states",
    ("prediction", "teacher"): "the soft targets come from the fine-tuned teacher",
    ("prediction", "data"): "stage b uses the same augmented data; the gold labels are never "
                            "used as targets",
    ("prediction", "terms"): "stage b distils the prediction layer only (soft cross-entropy)",
}


def _check_stage_plan(candidate) -> None:
    for stage in STAGES:
        got = candidate(stage)
        assert isinstance(got, dict), f"stage {stage!r}: return a dict, got {type(got).__name__}"
        missing = {"teacher", "data", "terms"} - set(got)
        assert not missing, f"stage {stage!r}: the dict needs the keys {sorted(missing)}"
        expected = stage_plan(stage)
        for key in ("teacher", "data"):
            allowed = TEACHERS if key == "teacher" else DATA
            assert got[key] in allowed, (f"stage {stage!r}: {key}={got[key]!r} is not one of "
                                         f"{allowed}")
            assert got[key] == expected[key], f"stage {stage!r}: {_WHY[(stage, key)]}"
        terms = got["terms"]
        unknown = set(terms) - set(TERMS)
        assert not unknown, f"stage {stage!r}: unknown terms {sorted(unknown)}; use {TERMS}"
        assert sorted(terms) == sorted(expected["terms"]), f"stage {stage!r}: {_WHY[(stage, 'terms')]}"


register("nb05.stage_plan", checker=_check_stage_plan, reference=stage_plan,
         hint="Three runs: general distillation (pre-trained teacher, general corpus, no "
              "prediction term), then task distillation with the fine-tuned teacher on the "
              "augmented task data: first the intermediate layers (embedding, attention, "
              "hidden), then the prediction layer alone.")
