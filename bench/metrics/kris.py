"""KRIS-Bench's four judge metrics (Wu et al., KRIS-Bench, 2025): ``kris_vc`` (visual
consistency), ``kris_vq`` (visual quality), ``kris_if`` (instruction following) and ``kris_kp``
(knowledge plausibility), each the judge's 1-5 score (the card's table maps it to 0-100).

The judge (``metric_options.judge``, as for the VIEScore metrics) answers the prompts of template
``kris_bench_v2``: consistency and instruction about the source and the edit, quality about the
edit alone; on a knowledge category (``KNOWLEDGE_CATEGORIES``, the categories of KRIS-Bench's
``metrics_knowledge.py``) instruction following and knowledge plausibility are the two scores of
one "dual" answer whose prompt carries the annotation's explanation (``Sample.explanation``), as
that script asks them; elsewhere ``kris_kp`` is NaN (the benchmark has no such score there) and
``kris_if`` is asked with the instruction prompt (``metrics_common.py``). An answer without the
score's key, a score outside 1-5 and a failed request are NaN with the reason (where KRIS-Bench's
parser guesses a digit from the reasoning, see ``judge_answers.read_json_keys``). KRIS-Bench's
scorer sends ``gpt-4o`` the text first, then the labelled images as JPEG, ``max_tokens`` 1000,
the API's temperature (``judge.request: kris_gpt4o``).

Three categories are judged with more images, as their scripts send them (``CATEGORY_PARTS``):
``multi-element_composition`` (``metrics_multi_element.py``: every input image labelled "Reference
Image i", then the edit as "Predicted Image"), ``temporal_prediction``
(``metrics_temporal_prediction.py``: the three frames and the edit in frame order, "Frame k
(Reference)" or "(Generated)", the frame numbers read from the ``ori_img`` file names) and
``viewpoint_change`` (``metrics_view_change.py``: instruction following also shows the ground truth
``gt_img``); none has a knowledge score.
"""

import json
import re

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.judge import JUDGE, NAN, benchmark_judge

TEMPLATE = "kris_bench_v2"
#: KRIS-Bench's metrics_knowledge.py CATEGORIES, by their folder names (its daily_life is the
#: practical_knowledge folder and rule_reasoning rule-based_reasoning: the script's list predates
#: the renaming).
KNOWLEDGE_CATEGORIES = ("abstract_reasoning", "mathematics", "practical_knowledge", "medicine", "rule-based_reasoning",
                        "biology", "geography", "chemistry", "humanities", "physics")  # fmt: skip

#: The template part of each score on the categories judged with more images (KP: none).
CATEGORY_PARTS = {
    "multi-element_composition": {"kris_vc": "consistency_multi", "kris_vq": "quality_alone",
                                  "kris_if": "instruction_multi", "kris_kp": None},
    "temporal_prediction": {"kris_vc": "consistency_temporal", "kris_vq": "quality_alone",
                            "kris_if": "instruction_temporal", "kris_kp": None},
    "viewpoint_change": {"kris_vc": "consistency", "kris_vq": "quality", "kris_if": "instruction_view",
                         "kris_kp": None},
}  # fmt: skip
#: KRIS-Bench's temporal frames: 1 to 4, named ``<item>-<frame>.<ext>``.
FRAMES = frozenset({1, 2, 3, 4})


def temporal_frames(sample) -> tuple[tuple[int, ...], int] | None:
    """The frame numbers of a temporal sample's inputs and of the frame to predict, as
    ``metrics_temporal_prediction.py`` reads them from the ``ori_img`` file names (the sample's
    group ``ori_img``): the number after the dash, the predicted frame the one of 1-4 missing (else
    the last input's plus one). None when a name has no number."""
    names = sample.groups.get("ori_img", "").split()
    found = [re.search(r"(\d+)-(\d+)", name) for name in names]
    if not names or not all(found):
        return None
    numbers = tuple(int(m.group(2)) for m in found)
    missing = FRAMES - set(numbers)
    return numbers, (min(missing) if len(missing) == 1 else max(numbers) + 1)


class KrisMetric(ImageMetric):
    """One KRIS-Bench score: template ``part`` (on a knowledge category: ``knowledge_part``, or NaN
    when it has none), criterion ``criterion`` of the answer."""

    part: str
    knowledge_part: str | None
    criterion: int = 0
    higher_is_better = True
    value_range = (1.0, 5.0)
    needs = frozenset({"instruction", "pretrained weights"})
    options = (JUDGE,)
    nan_reason = ("the sample has no instruction (or, for a knowledge score, no explanation), the judge's answer "
                  "lacks the score or it is outside 1-5, or the request failed (export's note column says which)")  # fmt: skip

    def load(self, extractors):
        super().load(extractors)
        self.judge = benchmark_judge(extractors, TEMPLATE, self.name)

    def part_of(self, sample) -> str | None:
        if sample.edit_type in CATEGORY_PARTS:
            return CATEGORY_PARTS[sample.edit_type][self.name]
        return self.knowledge_part if sample.edit_type in KNOWLEDGE_CATEGORIES else self.part

    def compute(self, edited, source, samples):
        values, notes = [NAN] * len(samples), [None] * len(samples)
        by_part: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            part = self.part_of(sample)
            if part is None:
                notes[i] = json.dumps({"answer": None, "reason": f"{sample.edit_type!r} is not a knowledge category"})
            else:
                by_part.setdefault(part, []).append(i)
        for part, rows in by_part.items():
            frames = [temporal_frames(samples[i]) for i in rows] if part.endswith("_temporal") else None
            answers = self.judge.answers(part, [edited[i] for i in rows], [source[i] for i in rows],
                                         [samples[i] for i in rows], frames)  # fmt: skip
            for i, answer in zip(rows, answers):
                values[i] = answer.criteria[self.criterion] if answer.criteria else answer.score
                notes[i] = json.dumps({"answer": answer.text, "reason": answer.reason or None}, ensure_ascii=False)
        self.notes = notes
        return torch.tensor(values, dtype=torch.float64)


class KrisConsistency(KrisMetric):
    name, part, knowledge_part = "kris_vc", "consistency", "consistency"
    description = "KRIS-Bench visual consistency: a VLM judge's 1-5 on what the instruction did not ask to change"


class KrisQuality(KrisMetric):
    name, part, knowledge_part = "kris_vq", "quality", "quality"
    needs = frozenset({"pretrained weights"})
    description = "KRIS-Bench visual quality: a VLM judge's 1-5 on the edited image alone"
    nan_reason = "the judge's answer lacks the score or it is outside 1-5, or the request failed"


class KrisInstruction(KrisMetric):
    name, part, knowledge_part = "kris_if", "instruction", "dual"
    description = ("KRIS-Bench instruction following: a VLM judge's 1-5 (on a knowledge category, the instruction "
                   "score of its dual prompt with the annotation's explanation)")  # fmt: skip


class KrisKnowledge(KrisMetric):
    name, part, knowledge_part, criterion = "kris_kp", None, "dual", 1
    nan_reason = ("not a knowledge category (KP is scored on those only), the sample has no explanation, the judge's "
                  "answer lacks the score or it is outside 1-5, or the request failed")  # fmt: skip
    description = ("KRIS-Bench knowledge plausibility: a VLM judge's 1-5 from the dual prompt with the annotation's "
                   "explanation; knowledge categories only")  # fmt: skip


METRICS = (KrisConsistency, KrisQuality, KrisInstruction, KrisKnowledge)
