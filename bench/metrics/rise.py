"""RISEBench's judge metrics (Zhao et al., RISEBench, 2025), as its ``gpt_eval.py`` computes them:
three dimensions, each the judge's 1-5 (``rise_consistency``, appearance consistency;
``rise_reasoning``, instruction reasoning; ``rise_plausibility``, visual plausibility), the
weighted ``rise_score`` and ``rise_accuracy`` (100 when every dimension that applies is 5, else 0:
its mean is the percentage of complete samples).

The judge (``metric_options.judge``) answers the prompts of template ``rise_bench_v1``, the part
chosen per category (``Sample.edit_type``) and per item flag as ``eval_vanilla`` chooses it (the
template's header lists them): ``reasoning_img`` and ``consistency_free`` are the sample's groups,
``reference`` / ``reference_txt`` its ``explanation`` and ``reference_img`` its ``target_image``.
Logical items have no plausibility and their 0/1 answers count as ``4 * min(s, 1) + 1``.

``rise_score`` is ``0.3 C + 0.5 R + 0.2 P`` (consistency-free items ``0.2 P + 0.8 R``, logical
``0.3 C + 0.7 R``), halved with a floor of 1 when R = 1 (``calculate_score``). Where gpt_eval.py
differs, on purpose:

- ``calculate_score`` tests ``row['consistency_free']`` for truth, so once any item of the data
  has the field, every other temporal, causal and spatial item (NaN there, which is true) is
  weighted as consistency-free too; here only the items that set it (as ``calculate_completion``
  and ``eval_vanilla`` read the flag).
- A sample whose answer is missing or unreadable is NaN in every metric here (counted in the
  tables' NaN notes); gpt_eval.py leaves its score out of the mean but counts it as incomplete (0)
  in the accuracy.
- ``consistency_free`` on a logical item is ignored (gpt_eval.py then expects a quality answer
  it never asked for and fails).
"""

import json
import math

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.judge import JUDGE, NAN, benchmark_judge

TEMPLATE = "rise_bench_v1"
CONSISTENCY, REASONING, PLAUSIBILITY = "consistency", "reasoning", "plausibility"
#: Each category's weights of (consistency, reasoning, plausibility) in ``rise_score``.
WEIGHTS = {"full": (0.3, 0.5, 0.2), "consistency_free": (0.0, 0.8, 0.2), "logical_reasoning": (0.3, 0.7, 0.0)}


def flag(sample, name: str) -> bool:
    return sample.groups.get(name) == "true"


def parts_of(sample) -> dict[str, str] | str:
    """The template part that judges each dimension of ``sample`` (only the dimensions it has), or
    why it cannot be judged."""
    category, free = sample.edit_type, flag(sample, "consistency_free")
    if category in ("temporal_reasoning", "causal_reasoning"):
        reasoning = "reasoning_with_input" if flag(sample, "reasoning_img") else "reasoning"
        parts = {CONSISTENCY: "consistency", REASONING: reasoning, PLAUSIBILITY: "quality"}
    elif category == "spatial_reasoning":
        if sample.target_image is not None:
            consistency, reasoning = "spatial_consistency_reference_image", "spatial_reasoning_reference_image"
        else:
            consistency = "spatial_consistency"
            reasoning = "spatial_reasoning_with_input" if flag(sample, "reasoning_img") else "spatial_reasoning"
        parts = {CONSISTENCY: consistency, REASONING: reasoning, PLAUSIBILITY: "spatial_quality"}
    elif category == "logical_reasoning":
        if sample.explanation:  # reference_txt, which the script checks first
            return {CONSISTENCY: "logical_consistency_answer", REASONING: "logical_reasoning_answer"}
        if sample.target_image is None:
            return "a logical item needs reference_txt or reference_img"
        wo_question = flag(sample, "reasoning_wo_ins")
        return {CONSISTENCY: "logical_consistency",
                REASONING: "logical_reasoning_without_instruction" if wo_question else "logical_reasoning"}  # fmt: skip
    else:
        return f"{category!r} is not a RISEBench category"
    if free:
        del parts[CONSISTENCY]
    return parts


def weighted_score(category: str, free: bool, dims: dict[str, float]) -> float:
    """``calculate_score`` for one sample (``dims``: its 1-5 dimensions)."""
    kind = category if category == "logical_reasoning" else "consistency_free" if free else "full"
    c, r, p = WEIGHTS[kind]
    score = c * dims.get(CONSISTENCY, 0.0) + r * dims[REASONING] + p * dims.get(PLAUSIBILITY, 0.0)
    return max(score * 0.5, 1.0) if dims[REASONING] == 1 else score


class RiseMetric(ImageMetric):
    """One RISEBench number per sample, formed by ``value`` from the sample's judged dimensions."""

    higher_is_better = True
    value_range = (1.0, 5.0)
    needs = frozenset({"instruction", "pretrained weights"})
    options = (JUDGE,)
    nan_reason = ("the dimension does not apply to the sample's category, the sample lacks what its prompt needs, "
                  "the judge's answer lacks a Final Score or it is out of range, or the request failed "
                  "(export's note column says which)")  # fmt: skip

    def load(self, extractors):
        super().load(extractors)
        self.judge = benchmark_judge(extractors, TEMPLATE, self.name)

    def value(self, sample, dims: dict[str, float]) -> float:
        raise NotImplementedError

    def compute(self, edited, source, samples):
        dims: list[dict[str, float]] = [{} for _ in samples]
        notes: list[dict] = [{} for _ in samples]
        by_part: dict[str, list[tuple[int, str]]] = {}
        for i, sample in enumerate(samples):
            parts = parts_of(sample)
            if isinstance(parts, str):
                notes[i] = {"answer": None, "reason": parts}
                continue
            for dimension, part in parts.items():
                by_part.setdefault(part, []).append((i, dimension))
        for part, rows in by_part.items():
            index = [i for i, _ in rows]
            answers = self.judge.answers(part, edited[index], source[index], [samples[i] for i in index])
            for (i, dimension), answer in zip(rows, answers):
                score = answer.score
                if samples[i].edit_type == "logical_reasoning" and not math.isnan(score):
                    score = 4 * min(score, 1) + 1  # its 0/1 answers on the 1-5 scale, as gpt_eval.py maps them
                dims[i][dimension] = score
                notes[i][dimension] = {"answer": answer.text, "reason": answer.reason or None}
        values = []
        for sample, judged in zip(samples, dims):
            complete = judged and not any(math.isnan(v) for v in judged.values())
            values.append(self.value(sample, judged) if complete else NAN)
        self.notes = [json.dumps(n, ensure_ascii=False) for n in notes]
        return torch.tensor(values, dtype=torch.float64)


class RiseDimension(RiseMetric):
    dimension: str

    def value(self, sample, dims):
        return dims.get(self.dimension, NAN)


class RiseConsistency(RiseDimension):
    name, dimension = "rise_consistency", CONSISTENCY
    description = "RISEBench appearance consistency: a VLM judge's 1-5 (logical items: 0/1 as 1 or 5)"


class RiseReasoning(RiseDimension):
    name, dimension = "rise_reasoning", REASONING
    description = "RISEBench instruction reasoning: a VLM judge's 1-5 against the reference (logical items: 1 or 5)"


class RisePlausibility(RiseDimension):
    name, dimension = "rise_plausibility", PLAUSIBILITY
    needs = frozenset({"pretrained weights"})
    description = "RISEBench visual plausibility: a VLM judge's 1-5 on the edit alone (not on logical items)"


class RiseScore(RiseMetric):
    name = "rise_score"
    description = ("RISEBench's weighted score of its three 1-5 dimensions (0.3/0.5/0.2; consistency-free 0.2/0.8, "
                   "logical 0.3/0.7), halved with a floor of 1 when reasoning is 1")  # fmt: skip

    def value(self, sample, dims):
        free = flag(sample, "consistency_free") and sample.edit_type != "logical_reasoning"
        return weighted_score(sample.edit_type, free, dims)


class RiseAccuracy(RiseMetric):
    name = "rise_accuracy"
    value_range = (0.0, 100.0)
    description = "RISEBench accuracy: 100 when every dimension the sample has is 5, else 0 (its mean: % complete)"

    def value(self, sample, dims):
        return 100.0 if all(v == 5 for v in dims.values()) else 0.0


METRICS = (RiseConsistency, RiseReasoning, RisePlausibility, RiseScore, RiseAccuracy)
