"""Reading a judge's answer: the score list VIEScore's templates ask for, or why there is none.

VIEScore's templates ask for ``{"score": [...], "reasoning": "..."}``. An answer is read in the
order of VIEScore's own parser (``mllm_output_to_dict`` in GEdit-Bench's ``viescore/utils.py``):

1. the text between the two ``||V^=^V||`` delimiters of the delimited templates, when the
   answer has exactly two of them;
2. else the text from the first ``{`` to the last ``}``;
3. else a bare list of two integers, from the first ``[`` to the last ``]`` (``[6, 0]``).

The JSON is read with its newlines removed; a non-list ``score`` is a list of one.

Where editbench differs from that parser, on purpose (compared on synthetic answers):

- JSON whose keys lack quotes (``{score: [3, 4]}``) is read after quoting them; VIEScore's
  repair (``fix_json``) turns such a score list into broken JSON and cannot read it.
- A bare number (``7``) is no answer here: VIEScore reads it as one score and takes it as SC or
  PQ, but the templates rate two criteria each, so it is unreadable.
- Each score must be a number (not a boolean) in the template's range, and there must be exactly
  one per criterion the template rates: VIEScore takes the minimum of whatever list it finds
  (``[11, 6]`` gives 6, ``[-1, 6]`` gives -1, ``[8]`` gives 8, ``[true, 6]`` gives True) and
  fails on a non-number, which GEdit-Bench's scorer then asks again.
- An answer that cannot be read is NaN with the reason; VIEScore asks both templates again once
  and then *guesses a random score* 0-10.
"""

import json
import math
import re
from dataclasses import dataclass

from bench.metrics.judge_failures import OUT_OF_RANGE, UNREADABLE

DELIMITER = "||V^=^V||"
_BARE_PAIR = re.compile(r"^\[\d+, ?\d+\]$")
_UNQUOTED_KEY = re.compile(r'(?<!")\b([A-Za-z_]\w*)\b\s*:')


@dataclass(frozen=True)
class Reading:
    """What an answer says: its scores, or ``reason`` why it gives none and that failure's class
    (``unreadable`` or ``out_of_range``, ``bench.metrics.judge_failures``)."""

    scores: tuple[float, ...] | None
    reason: str = ""
    kind: str = UNREADABLE

    @property
    def ok(self) -> bool:
        return self.scores is not None


def _json_part(answer: str) -> tuple[str | None, list | None]:
    """(JSON text to read, or a score list read directly) per rules 1-3 of the module doc."""
    if answer.count(DELIMITER) == 2:
        start = answer.find(DELIMITER) + len(DELIMITER)
        return answer[start : answer.rfind(DELIMITER)], None
    start, end = answer.find("{"), answer.rfind("}") + 1
    if start != -1 and end > start:
        return answer[start:end], None
    bracket = answer[answer.find("[") : answer.rfind("]") + 1] if "[" in answer else ""
    if _BARE_PAIR.match(bracket):
        return None, json.loads(bracket)
    return None, None


def _load(text: str):
    text = text.strip().replace("\n", "")
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(_UNQUOTED_KEY.sub(r'"\1":', text))


def read_answer(answer: str, criteria: int, score_range: tuple[float, float] = (0, 10)) -> Reading:
    """The ``criteria`` scores an answer gives, or the reason it cannot be read."""
    if not answer or not answer.strip():
        return Reading(None, "empty answer")
    text, scores = _json_part(answer)
    if scores is None:
        if text is None:
            return Reading(None, "no JSON object or score list found in the answer")
        try:
            data = _load(text)
        except ValueError as exc:
            return Reading(None, f"the answer's JSON does not parse ({str(exc).splitlines()[0][:80]})")
        if not isinstance(data, dict) or "score" not in data:
            return Reading(None, "the answer's JSON has no 'score' entry")
        scores = data["score"] if isinstance(data["score"], list) else [data["score"]]
    low, high = score_range
    for value in scores:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return Reading(None, f"score {value!r} is not a number")
        if not low <= value <= high:
            return Reading(None, f"score {value:g} is outside {low:g}-{high:g}", OUT_OF_RANGE)
    if len(scores) != criteria:
        return Reading(None, f"{len(scores)} score(s) given, the template rates {criteria} criteria")
    return Reading(tuple(float(v) for v in scores))


def read_named_scores(answer: str, criteria: tuple[str, ...], score_range: tuple[float, float]) -> Reading:
    """The scores of an answer in ImgEdit-Bench's form: one ``<criterion>: <integer>`` line per
    criterion the template names (other lines, the reasoning, ignored), each in the template's range.

    ImgEdit-Bench's ``step1_get_avgscore.py`` averages every ``X: <digits>`` line it finds, whatever
    ``X`` is (a reasoning line ``Note: 5`` or an extra ``Overall: 5`` counts), how many there are
    and however large the number (7 and 0 count); here each named criterion must be there once,
    in range, or the answer is unreadable (NaN with the reason). Both read ``4`` only, not ``4/5``
    or ``4.``."""
    if not answer or not answer.strip():
        return Reading(None, "empty answer")
    found: dict[str, list[str]] = {}
    for line in answer.splitlines():
        name, _, value = line.strip().partition(": ")
        name = name.strip("*_ ")  # **Name**: 4, markdown emphasis, which ImgEdit-Bench's reading ignores too
        if name in criteria:
            found.setdefault(name, []).append(value.strip())
    scores = []
    for name in criteria:
        values = found.get(name, [])
        if len(values) != 1 or not values[0].isdigit():
            return Reading(None, f"no single '{name}: <integer>' line" if len(values) != 1 else
                           f"'{name}: {values[0]}' is not an integer score")  # fmt: skip
        low, high = score_range
        if not low <= int(values[0]) <= high:
            return Reading(None, f"score {values[0]} is outside {low:g}-{high:g}", OUT_OF_RANGE)
        scores.append(float(values[0]))
    return Reading(tuple(scores))


def read_json_keys(answer: str, criteria: tuple[str, ...], score_range: tuple[float, float]) -> Reading:
    """The scores of an answer in KRIS-Bench's form: a JSON-like object with one integer per
    criterion key (``"consistency_score": 4``; the reasoning beside it is often not valid JSON),
    each key found once as ``key: n`` (quotes optional, ``_`` or spaces, any case, ``:`` or ``：``),
    in the template's range.

    KRIS-Bench's ``metrics_common.py``/``metrics_knowledge.py`` parse the ``{...}`` holding the
    key as JSON, else take the first ``key: [1-5]``; where neither matches they take the first
    ``n/5``, ``n out of 5`` or lone digit 1-5 anywhere in the answer (a guess from the
    reasoning: "Step 1 ..." reads as 1), a score outside 1-5 read as JSON (``"quality_score": 7``
    or 0) is kept, and of a key given twice the first counts. Here an answer without the key,
    with it twice at different values, or out of range is NaN with the reason (``out_of_range``
    for the last); compared on synthetic answers, the readings agree wherever both give a score."""
    if not answer or not answer.strip():
        return Reading(None, "empty answer")
    low, high = score_range
    scores = []
    for name in criteria:
        key = r"[_\s]*".join(re.escape(word) for word in name.split("_"))  # consistency_score or "consistency score"
        found = re.findall(r'"?\b' + key + r'\b"?\s*[:：]\s*"?(-?\d+(?:\.\d+)?)', answer, re.IGNORECASE)
        if not found:
            return Reading(None, f"no '{name}: <integer>' in the answer")
        if len(set(found)) > 1:
            return Reading(None, f"'{name}' is given {len(found)} different values ({', '.join(found)})")
        value = float(found[0])
        if not low <= value <= high:
            return Reading(None, f"score {found[0]} is outside {low:g}-{high:g}", OUT_OF_RANGE)
        scores.append(value)
    return Reading(tuple(scores))


#: RISEBench's gpt_eval.py ``extract``: a "Final Score" line and the digits that follow it
#: (stars, spaces, commas and newlines between them), then the same for "Final Scores".
_FINAL_SCORE = [re.compile(r"\*?\*?Final " + word + r"\*?\*?:?\s*([\d*\s,\n]*)", re.IGNORECASE)
                for word in ("Score", "Scores")]  # fmt: skip


def read_final_score(answer: str, criteria: tuple[str, ...], score_range: tuple[float, float]) -> Reading:
    """The score of an answer in RISEBench's form, ``**Final Score:** **4**``: the integers after the
    first "Final Score" that has any (else after "Final Scores"), as gpt_eval.py's ``extract``
    finds them; the answer must give one integer per criterion, in the template's range.

    Where gpt_eval.py differs: it takes whatever integers it finds (``Final Score: 4, 5`` gives two
    scores, which shifts its score columns; 7 is kept) and marks an answer without them
    ``failed``; here those are NaN with the reason (``out_of_range`` for a score outside the range)."""
    if not answer or not answer.strip():
        return Reading(None, "empty answer")
    for pattern in _FINAL_SCORE:
        numbers = next((found for match in pattern.findall(answer) if (found := re.findall(r"\d+", match))), None)
        if numbers:
            break
    else:
        return Reading(None, "no 'Final Score: <integer>' line")
    if len(numbers) != len(criteria):
        return Reading(None, f"'Final Score' gives {len(numbers)} integers ({', '.join(numbers)}), not {len(criteria)}")
    low, high = score_range
    if any(not low <= int(n) <= high for n in numbers):
        return Reading(None, f"score {', '.join(numbers)} is outside {low:g}-{high:g}", OUT_OF_RANGE)
    return Reading(tuple(float(n) for n in numbers))
