"""The expected score from a local judge's answer-token probabilities (``judge.expected_score``).

A greedy judge writes the most likely digits of each score; its token probabilities say how sure
it was. For each score of the answer's score list, at the position of its first token, every
integer ``v`` of the template's range gets the probability of being written there: the product of
its tokens' probabilities, and for a value whose tokens are a prefix of a longer value's (``1``
of ``10`` in Qwen's digit-by-digit tokens), the probability that no further digit follows. One
extra forward pass gives the distribution after each such prefix token (none when the greedy
answer already wrote it). The expected score is the probability-weighted mean over the range,
renormalised over the range's values; deterministic, and cheaper than k sampled answers.
"""

import re

import torch

_SCORE_LIST = re.compile(r'"?score"?\s*:\s*\[([^\]]*)\]')
_NUMBER = re.compile(r"\d+")
NEGLIGIBLE = 1e-6  # a first-token probability below this counts as 0


class ExpectedAnswer(str):
    """An answer's text carrying ``expected``: the expected value of each of its scores (in order)."""

    expected: tuple[float, ...]

    def __new__(cls, text: str, expected: tuple[float, ...]):
        made = super().__new__(cls, text)
        made.expected = expected
        return made


def _score_spans(answer: str) -> list[int]:
    """Character offsets of the numbers in the answer's score list (empty when it has none)."""
    found = _SCORE_LIST.search(answer)
    if not found:
        return []
    return [found.start(1) + m.start() for m in _NUMBER.finditer(found.group(1))]


def _token_at(tokenizer, ids: torch.Tensor, offset: int) -> int:
    """The index of the generated token holding character ``offset`` of the decoded answer."""
    low, high = 0, len(ids) - 1
    while low < high:  # the first prefix whose text reaches past ``offset``
        mid = (low + high) // 2
        if len(tokenizer.decode(ids[: mid + 1], skip_special_tokens=True)) > offset:
            high = mid
        else:
            low = mid + 1
    return low


def extended_inputs(inputs, written: torch.Tensor) -> dict:
    """The model inputs of the prompt followed by the answer tokens ``written``: the ids, a full
    attention mask, and the per-token type ids (multimodal models' ``mm_token_type_ids``) padded
    as text; the images' tensors unchanged."""
    ids = inputs["input_ids"]
    written = written.to(ids.device)[None]
    out = dict(inputs)
    out["input_ids"] = torch.cat([ids, written], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    for name, value in inputs.items():
        if name.endswith("token_type_ids") and value.shape == ids.shape:
            out[name] = torch.cat([value, torch.zeros_like(written)], dim=1)
    return out


def expected_scores(model, tokenizer, inputs, new_ids: torch.Tensor, logits: tuple, answer: str,
                    score_range: tuple[int, int] = (0, 10)) -> str:  # fmt: skip
    """``answer`` as an ``ExpectedAnswer`` when its score list is found; else ``answer`` unchanged."""
    spans = _score_spans(answer)
    if not spans:
        return answer
    values = list(range(int(score_range[0]), int(score_range[1]) + 1))
    tokens = {v: tokenizer.encode(str(v), add_special_tokens=False) for v in values}
    digits = [t[0] for t in tokens.values() if len(t) == 1]
    expected = []
    for offset in spans:
        at = _token_at(tokenizer, new_ids, offset)
        first = torch.softmax(logits[at][0].float(), dim=-1)
        after = {}  # first token -> the distribution of the token after it

        def next_distribution(token: int) -> torch.Tensor:
            if token not in after:
                if at + 1 < len(logits) and int(new_ids[at]) == token:
                    after[token] = torch.softmax(logits[at + 1][0].float(), dim=-1)
                else:
                    written = torch.cat([new_ids[:at], torch.tensor([token])])
                    with torch.no_grad():
                        out = model(**extended_inputs(inputs, written))
                    after[token] = torch.softmax(out.logits[0, -1].float(), dim=-1)
            return after[token]

        longer_first = {t[0] for t in tokens.values() if len(t) > 1}
        weights = []
        for v in values:
            ids = tokens[v]
            p = float(first[ids[0]])
            if p < NEGLIGIBLE:  # no forward pass for a value the judge all but excludes
                p = 0.0
            elif len(ids) == 2:
                p *= float(next_distribution(ids[0])[ids[1]])
            elif len(ids) == 1 and ids[0] in longer_first:  # "1" only when no digit follows
                p *= 1 - float(next_distribution(ids[0])[digits].sum())
            elif len(ids) > 2:
                p = 0.0  # values of more than two tokens are outside every template's range here
            weights.append(p)
        total = sum(weights)
        expected.append(sum(w * v for w, v in zip(weights, values)) / total if total > 0 else float("nan"))
    return ExpectedAnswer(answer, tuple(expected))
