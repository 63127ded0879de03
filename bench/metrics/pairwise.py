"""A pairwise judge: which of two edits of one source is better (``a``, ``b`` or ``tie``), as
GEditBench v2's PVC-Judge answers its visual-consistency prompt.

The template (``bench/metrics/templates/<name>.yaml``, ``kind: pairwise``) is versioned data: a
system prompt and parts that interleave text and the images ``source``, ``a`` and ``b``; the answer
is JSON with a ``winner`` the template maps to ``a``/``b``/``tie``. The judge is any
``JudgeOptions`` backend (``bench.metrics.judge_backends``): PVC-Judge served by vLLM behind the
endpoint backend, or a local transformers VLM (the tests use the tiny random Qwen2.5-VL).
Answers are cached like the VIEScore judge's (keyed by the three images' pixels, the instruction,
the judge's identity and the template version); failures are NaN-like verdicts with their class
(``bench.metrics.judge_failures``), never a winner.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError, unknown
from bench.metrics.judge import TEMPLATES, failed_answer, pixel_hash, template_names
from bench.metrics.judge_backends import Chat
from bench.metrics.judge_failures import OK, UNREADABLE
from bench.paths import cache_dir, write_atomic
from bench.yaml_file import read_yaml

DEFAULT_PAIRWISE_TEMPLATE = "pvc_pairwise_v1"
_WINNER = re.compile(r'"winner"\s*:\s*"([^"]*)"')


@dataclass(frozen=True)
class PairwiseTemplate:
    version: str
    system: str | None
    parts: tuple  # ("text", str) or ("image", "source" | "a" | "b")
    placeholder: str
    answers: dict  # the answer's winner text -> a | b | tie
    max_new_tokens: int


def load_pairwise_template(name: str = DEFAULT_PAIRWISE_TEMPLATE) -> PairwiseTemplate:
    path = TEMPLATES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"pairwise judge template: {unknown('template', name, template_names())}")
    data = read_yaml(path, "pairwise judge template")
    try:
        if data["kind"] != "pairwise":
            raise ConfigError(f"template {name} is not a pairwise template (kind: {data['kind']})")
        parts = tuple(("text", p["text"]) if "text" in p else ("image", p["image"]) for p in data["parts"])
        return PairwiseTemplate(data["version"], data.get("system"), parts, data["placeholder"],
                                dict(data["answers"]), int(data["max_new_tokens"]))  # fmt: skip
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"pairwise template {path} lacks or mistypes {exc}") from None


@dataclass(frozen=True)
class Verdict:
    """A pairwise answer: ``winner`` a, b or tie (None: no verdict), its text, class and reason."""

    winner: str | None
    text: str | None
    kind: str = OK
    reason: str = ""


def read_verdict(text: str, answers: dict) -> Verdict:
    """The winner an answer names (its ``"winner"`` JSON field, case-insensitive), or why none."""
    found = _WINNER.search(text or "")
    if not found:
        return Verdict(None, text, UNREADABLE, 'unreadable answer: no "winner" field found')
    by_text = {k.lower(): v for k, v in answers.items()}
    winner = by_text.get(found.group(1).strip().lower())
    if winner is None:
        return Verdict(None, text, UNREADABLE, f"unreadable answer: winner {found.group(1)!r} is none of {', '.join(answers)}")
    return Verdict(winner, text)


class PairwiseJudge:
    """A backend and a pairwise template, with the judgment cache; ``verdicts`` asks only what is not cached."""

    def __init__(self, backend, template: PairwiseTemplate):
        self.backend, self.template = backend, template
        self.identity = {**backend.identity, "template": template.version, "max_new_tokens": template.max_new_tokens}
        self._failed: dict[str, Verdict] = {}

    def describe(self) -> str:
        i = self.identity
        return f"{i['model']}@{i['revision']} via {i['backend']}, template {i['template']}, {i['decoding']} decoding"

    def _path(self, pictures: dict, instruction: str) -> Path:
        identity = {k: v for k, v in self.identity.items() if k != "url"}
        what = [[pixel_hash(pictures[n]) for n in ("source", "a", "b")], instruction, identity]
        key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
        return cache_dir() / "judgments" / key[:2] / f"{key}.json"

    def verdicts(self, triples: list[tuple], instructions: list[str]) -> list[Verdict]:
        """The verdict on each ``(source, a, b)`` triple of PIL images under its instruction."""
        out: list[Verdict | None] = [None] * len(triples)
        asks, where = [], []
        for i, ((source, a, b), instruction) in enumerate(zip(triples, instructions)):
            pictures = {"source": source, "a": a, "b": b}
            path = self._path(pictures, instruction)
            if str(path) in self._failed:
                out[i] = self._failed[str(path)]
            elif path.is_file():
                out[i] = read_verdict(json.loads(path.read_text(encoding="utf-8"))["answer"], self.template.answers)
            else:
                parts = tuple(pictures[value] if kind == "image" else value.replace(self.template.placeholder, instruction)
                              for kind, value in self.template.parts)  # fmt: skip
                asks.append(Chat(parts, self.template.system))
                where.append((i, path))
        replies = self.backend.answer_many(asks, self.template.max_new_tokens) if asks else []
        for (i, path), reply in zip(where, replies):
            if isinstance(reply, Exception):
                failed = failed_answer(reply)
                out[i] = self._failed[str(path)] = Verdict(None, None, failed.kind, failed.reason)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            record = json.dumps({"answer": str(reply), "identity": self.identity}, ensure_ascii=False)
            write_atomic(path, lambda p, record=record: p.write_text(record, encoding="utf-8"))
            out[i] = read_verdict(str(reply), self.template.answers)
        return out


def load_pairwise_judge(options, device, untrained: bool, seed: int, template: str = DEFAULT_PAIRWISE_TEMPLATE):
    """The pairwise judge ``options`` (``JudgeOptions``) describe, as ``load_judge`` builds a judge's backend."""
    from bench.metrics.judge import judge_backend

    return PairwiseJudge(judge_backend(options, device, untrained, seed), load_pairwise_template(template))
