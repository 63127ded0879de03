"""ImgEdit-Bench Basic's judge score (Ye et al., 2025): ``imgedit_score``.

The judge (``metric_options.judge``: backend, model, ..., as for the VIEScore metrics) answers the
prompt of the sample's edit type (template ``imgedit_basic_v1``: ImgEdit-Bench's nine published
prompts) about the source and the edited image; it rates three criteria 1-5 on
``Criterion: n`` lines, and the item's score is their mean, as ImgEdit-Bench's
``step1_get_avgscore.py`` takes it (without its rounding to two decimals). A sample without an
instruction or with an edit type the template has no prompt for, an unreadable answer
(``bench.metrics.judge_answers.read_named_scores``) and a failed request are NaN with the reason.
ImgEdit-Bench's scorer sends ``gpt-4o`` the text first, then the images as PNG, with the API's
default temperature and token limit (``judge.request: imgedit_gpt4o`` builds that request, with
the template's token limit). Answers are cached as the VIEScore judge's are.
"""

import json

import torch

from bench.metrics.base import ImageMetric
from bench.metrics.judge import JUDGE, NAN, benchmark_judge

TEMPLATE = "imgedit_basic_v1"


class ImgEditScore(ImageMetric):
    name = "imgedit_score"
    higher_is_better = True
    value_range = (1.0, 5.0)
    needs = frozenset({"instruction", "pretrained weights"})
    options = (JUDGE,)
    nan_reason = ("the sample has no instruction or an edit type without an ImgEdit prompt, the judge's answer could "
                  "not be read, or the request failed (export's note column says which)")  # fmt: skip
    description = ("ImgEdit-Bench Basic: a VLM judge rates the edit 1-5 on the three criteria of its edit type's "
                   "prompt; the mean of the three")  # fmt: skip

    def load(self, extractors):
        super().load(extractors)
        self.judge = benchmark_judge(extractors, TEMPLATE, self.name)

    def compute(self, edited, source, samples):
        values, notes = [NAN] * len(samples), [None] * len(samples)
        by_type: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            if sample.edit_type in self.judge.template.parts:
                by_type.setdefault(sample.edit_type, []).append(i)
            else:
                reason = f"edit type {sample.edit_type!r} has no ImgEdit-Bench prompt ({', '.join(self.judge.template.parts)})"
                notes[i] = json.dumps({"answer": None, "reason": reason})
        for edit_type, rows in by_type.items():
            answers = self.judge.answers(edit_type, [edited[i] for i in rows], [source[i] for i in rows],
                                         [samples[i] for i in rows])  # fmt: skip
            for i, answer in zip(rows, answers):
                values[i] = answer.score
                notes[i] = json.dumps({"answer": answer.text, "reason": answer.reason or None}, ensure_ascii=False)
        self.notes = notes
        return torch.tensor(values, dtype=torch.float64)


METRICS = (ImgEditScore,)
