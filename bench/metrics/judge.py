"""VIEScore judge metrics (Ku et al., ACL 2024) as GEdit-Bench reports them: ``vie_sc``, ``vie_pq``, ``vie_o``.

A vision-language model (``bench.metrics.judge_backends``) answers two fixed templates
(``bench/metrics/templates/<name>.yaml``, versioned data, the published wording):

- semantic consistency, ``vie_sc``: the source image, the edited image and the instruction;
  the answer rates editing success and over-editing, 0-10; SC is their minimum;
- perceptual quality, ``vie_pq``: the edited image alone; naturalness and artifacts, 0-10;
  PQ is their minimum;
- overall, ``vie_o`` = sqrt(SC * PQ) of the same two answers.

Images are the source as the run prepared it (GEdit-Bench's card: its ``input_image`` under
``keep_aspect``, nothing cropped) and the edited PNG's pixels brought to the source's size as
GEdit-Bench's scorer brings them (``judged_edit``: PIL bicubic resize, no crop; a no-op when the
sizes agree, as they do for every cell editbench makes). A cell whose sample
has no instruction is NaN with that reason, unless ``metric_options.judge.instruction`` is
``from_prompts``: then a sample with both prompts gets the instruction
``Change "<source prompt>" to "<target prompt>".`` (the wording is editbench's own). An answer
that cannot be read (``bench.metrics.judge_answers``) and a request that failed after its
retries are NaN with their class and reason (``bench.metrics.judge_failures``); each cell keeps
the raw answers, classes and reasons as its note (``editbench export``: ``note.<metric>``;
``failure.<metric>`` and ``nan_reason.<metric>`` give the class and the specific reason).

Every answer is cached on disk (``$EDITBENCH_CACHE/judgments``), keyed by the template part,
the two images' pixel hashes, the instruction, the judge's identity (backend, model, revision,
dtype, decoding) and the template version with its token limit, so nothing is asked twice:
``vie_sc``, ``vie_pq`` and ``vie_o`` of one cell share two answers, and a resumed or re-scored
run asks only what no earlier run asked. Failed requests are not cached on disk, but a judge
remembers them while it lives: the metrics of one run or ``score`` send a failed request no
more often than the backend's retries allow (``vie_o`` does not ask again what ``vie_sc``
was refused), while ``score --retry-failed``, a new judge, asks it again.
"""

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from PIL import Image

from bench.errors import ConfigError, unknown
from bench.metrics.base import ImageMetric
from bench.metrics.extractors import network
from bench.metrics.judge_answers import read_answer, read_final_score, read_json_keys, read_named_scores
from bench.metrics.judge_backends import Chat, ChatEndpoint, JudgeOptions, LocalVLM
from bench.metrics.judge_failures import (
    NO_INSTRUCTION,
    OK,
    OUT_OF_RANGE,
    TRANSPORT_ERROR,
    UNREADABLE,
    Failure,
    JudgeFailure,
)
from bench.metrics.options import Option
from bench.paths import cache_dir, write_atomic

TEMPLATES = Path(__file__).parent / "templates"
NAN = float("nan")
#: How a template's answers are read (``Template.reader``) and its criteria combined (``combine``).
READERS = {"viescore": lambda text, criteria, score_range: read_answer(text, len(criteria), score_range),
           "named_lines": read_named_scores, "json_keys": read_json_keys, "final_score": read_final_score}  # fmt: skip
COMBINE = {"min": min, "mean": lambda scores: sum(scores) / len(scores)}


def judge_options(value, where: str) -> JudgeOptions:
    """The ``judge`` option's check: a mapping of ``JudgeOptions`` keys (or one already built)."""
    if isinstance(value, dict):
        names = list(JudgeOptions.__dataclass_fields__)
        for key in value:
            if key not in names:
                raise ConfigError(f"{where}: {unknown('key', key, names)}")
        return JudgeOptions(**value)
    if not isinstance(value, JudgeOptions):
        raise ConfigError(f"{where} = {value!r}; expected a mapping, e.g. {{backend: local}}")
    return value


JUDGE = Option("judge", JudgeOptions, JudgeOptions(), "the VLM judge of vie_sc, vie_pq, vie_o, imgedit_score, kris_* "
               "and rise_*: a mapping of JudgeOptions keys (bench.metrics.judge_backends), e.g. "
               "{backend: endpoint, url: ...}",
               judge_options)  # fmt: skip


@dataclass(frozen=True)
class TemplatePart:
    """One prompt of a template: the images it shows (``source``/``edited``/``reference``, the
    sample's ground-truth image ``target_image``, in order; ``inputs``: the source, then its
    reference images, each with its entry's label, ``{n}`` there its number from 1; ``frames``: the
    inputs and the edit in frame order, the edit's frame number and the inputs' given by the metric,
    labelled by the first label (an input) or the second (the edit), ``{n}`` the frame number), its
    text, the placeholder the instruction replaces (None: no instruction), the criteria it rates,
    ``labels``, a text before each image (none: the images, then the text), ``explanation``, the
    placeholder the sample's explanation replaces (KRIS-Bench's knowledge hint; None: none), and
    ``text_first``: the prompt before the labelled images (KRIS-Bench's order) instead of after."""

    images: tuple[str, ...]
    prompt: str
    placeholder: str | None
    criteria: tuple[str, ...]
    labels: tuple[str, ...] = ()
    explanation: str | None = None
    text_first: bool = False

    def request(self, pictures: list, text: str, labels: tuple[str, ...] | None = None):
        """What the backend is asked: ``(images, text)``, or the labels (``labels``: one per
        picture, as ``arranged`` gives them; by default the part's own) and images interleaved."""
        labels = self.labels if labels is None else labels
        if not labels:
            return pictures, text
        labelled = tuple(x for pair in zip(labels, pictures) for x in pair)
        return Chat((text, *labelled) if self.text_first else (*labelled, text))

    @property
    def per_sample(self) -> bool:
        """Whether the pictures and labels depend on the sample (``inputs``, ``frames``)."""
        return bool({"inputs", "frames"} & set(self.images))

    def arranged(self, images: dict, inputs: list, frames: tuple | None) -> tuple[list, tuple[str, ...]]:
        """The pictures this part shows and their labels: ``images`` by name, ``inputs`` the
        source and its reference images, ``frames`` (the inputs' frame numbers, the edit's)."""
        if not self.per_sample:
            return [images[name] for name in self.images], self.labels
        pictures, labels = [], []
        for k, name in enumerate(self.images):
            label = self.labels[k] if self.labels else ""
            if name == "inputs":
                pictures += inputs
                labels += [label.replace("{n}", str(n)) for n in range(1, len(inputs) + 1)]
            elif name == "frames":
                numbered = sorted([(n, False, picture) for n, picture in zip(frames[0], inputs)]
                                  + [(frames[1], True, images["edited"])], key=lambda f: f[0])  # fmt: skip
                pictures += [picture for _, _, picture in numbered]
                labels += [self.labels[edit].replace("{n}", str(n)) for n, edit, _ in numbered]
            else:
                pictures.append(images[name])
                labels.append(label)
        return pictures, tuple(labels)

    def text(self, instruction: str | None, explanation: str | None) -> str:
        """The prompt with the instruction and the explanation in their placeholders."""
        text = self.prompt.replace(self.placeholder, instruction) if self.placeholder else self.prompt
        return text.replace(self.explanation, explanation) if self.explanation else text


@dataclass(frozen=True)
class Template:
    """A template file: its parts, the score range, how an answer is read (``reader``:
    ``viescore``, a JSON score list; ``named_lines``, one ``Criterion: n`` line per criterion),
    how a part's criteria make its score (``combine``: ``min``, VIEScore's, or ``mean``) and
    ``scale``, which every score is multiplied by (see a template file's header)."""

    version: str
    score_range: tuple[float, float]
    max_new_tokens: int
    parts: dict[str, TemplatePart]
    scale: float = 1.0
    reader: str = "viescore"
    combine: str = "min"


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


def load_template(name: str) -> Template:
    """The template file ``bench/metrics/templates/<name>.yaml``."""
    path = TEMPLATES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"metric_options.judge.template: {unknown('judge template', name, template_names())}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        parts = {key: TemplatePart(tuple(data[key]["images"]), data[key]["prompt"], data[key]["placeholder"],
                                   tuple(data[key]["criteria"]), tuple(data[key].get("labels", ())),
                                   data[key].get("explanation"), bool(data[key].get("text_first", False)))
                 for key in data.get("parts", ("sc", "pq"))}  # fmt: skip
        template = Template(data["version"], tuple(data["score_range"]), int(data["max_new_tokens"]), parts,
                            float(data.get("scale", 1.0)), data.get("reader", "viescore"),
                            data.get("combine", "min"))  # fmt: skip
        if template.reader not in READERS or template.combine not in COMBINE:
            raise ValueError(f"reader {template.reader!r} or combine {template.combine!r}")
        return template
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"judge template {path} lacks or mistypes {exc}; see the fields its header lists") from None


def instruction_of(sample, mode: str) -> str | None:
    """The instruction the judge reads (see the module doc); None when there is none."""
    if sample.instruction:
        return sample.instruction
    if mode == "from_prompts" and sample.source_prompt and sample.target_prompt:
        return f'Change "{sample.source_prompt}" to "{sample.target_prompt}".'
    return None


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> an 8-bit RGB picture, rounding as the saved PNGs do."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels)


def judged_edit(edited: Image.Image, source: Image.Image) -> Image.Image:
    """The edit as GEdit-Bench's scorer judges it: resized to the source's size (PIL bicubic,
    stretched, never cropped), ``Image.open(edited).convert("RGB").resize(source.size)`` there."""
    return edited if edited.size == source.size else edited.resize(source.size, Image.Resampling.BICUBIC)


def pixel_hash(picture: Image.Image) -> str:
    return hashlib.sha256(picture.tobytes() + repr(picture.size).encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """One template part's answer for one cell: the text (None when the request failed), the
    score by the template's rule (minimum of the criteria) or NaN, why NaN, and the answer's
    class (``bench.metrics.judge_failures``). With ``judge.samples`` k > 1: the score is the mean
    of the k answers' scores, ``samples`` holds them and ``texts`` their texts."""

    text: str | None
    score: float
    reason: str = ""
    kind: str = OK
    samples: tuple[float, ...] = ()
    texts: tuple[str, ...] = ()
    criteria: tuple[float, ...] = ()  # each criterion's score (a metric may report one criterion)


def mean_answer(answers: list[Answer]) -> Answer:
    """The k answers to one request as one: their mean score, or the first failure (a failed
    answer is never averaged away)."""
    if len(answers) == 1:
        return answers[0]
    failed = [a for a in answers if math.isnan(a.score)]
    if failed:
        return failed[0]
    scores = tuple(a.score for a in answers)
    criteria = tuple(sum(c) / len(c) for c in zip(*(a.criteria for a in answers)))
    return Answer(answers[0].text, sum(scores) / len(scores), samples=scores, texts=tuple(a.text for a in answers),
                  criteria=criteria)  # fmt: skip


class Judge:
    """A backend, a template and the judgment cache; ``answers`` asks only what is not cached.
    ``samples``: answers asked per request (k), each with its own seed and cache entry."""

    def __init__(self, backend, template: Template, instruction_mode: str, samples: int = 1):
        self.backend, self.template, self.instruction_mode, self.samples = backend, template, instruction_mode, samples
        limit = backend.identity.get("max_new_tokens", template.max_new_tokens)  # a request form may set its own
        self.identity = {**backend.identity, "template": template.version, "max_new_tokens": limit}
        if samples > 1:
            self.identity["samples"] = samples
        self._failed: dict[str, Answer] = {}  # cache key -> the failure this judge already got

    def describe(self) -> str:
        """``model@revision, template <version>, <decoding>``: the line tables carry."""
        i = self.identity
        request = f", {i['request']} request" if i.get("request") else ""
        k = f", {i['samples']} answers per item" if i.get("samples") else ""
        return (f"{i['model']}@{i['revision']} via {i['backend']}{request}, template {i['template']}, "
                f"{i['decoding']} decoding{k}")

    def _key(self, part: str, pictures: list[Image.Image], instruction, answer: int = 0) -> str:
        identity = {k: v for k, v in self.identity.items() if k != "url"}  # the same server on another port answers alike
        what = [part, [pixel_hash(p) for p in pictures], instruction, identity] + ([answer] if self.samples > 1 else [])
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def _path(key: str) -> Path:
        return cache_dir() / "judgments" / key[:2] / f"{key}.json"

    def answers(self, part: str, edited: torch.Tensor, source: torch.Tensor, samples: list,
                frames: list | None = None) -> list[Answer]:  # fmt: skip
        """The answer to template ``part`` for every row of the batch (the mean of k, see ``Judge``);
        ``frames``: per row, the inputs' frame numbers and the edit's, for a part showing ``frames``
        (None in a row: that row's answer is NaN)."""
        spec = self.template.parts[part]
        got: dict[tuple[int, int], Answer] = {}  # (row, answer number) -> answer
        asks, seeds, where = [], [], {}  # where: cache key -> the (row, answer number) waiting for that request
        rows: list[Answer | None] = [None] * len(samples)
        for i, sample in enumerate(samples):
            instruction = instruction_of(sample, self.instruction_mode) if spec.placeholder else None
            if spec.placeholder and instruction is None:
                rows[i] = Answer(None, NAN, "the sample has no instruction (judge.instruction: from_prompts derives one)",
                                 NO_INSTRUCTION)  # fmt: skip
                continue
            explanation = getattr(sample, "explanation", None) if spec.explanation else None
            if spec.explanation and not explanation:
                rows[i] = Answer(None, NAN, "the sample has no explanation, which this prompt needs", NO_INSTRUCTION)
                continue
            if "reference" in spec.images and sample.target_image is None:
                rows[i] = Answer(None, NAN, "the sample has no reference image, which this prompt needs",
                                 NO_INSTRUCTION)  # fmt: skip
                continue
            if "frames" in spec.images and not (frames and frames[i]):
                rows[i] = Answer(None, NAN, "the sample's frame numbers are unknown, which this prompt needs",
                                 NO_INSTRUCTION)  # fmt: skip
                continue
            asked = [instruction, explanation] if spec.explanation else instruction  # the cache key's text
            images = {"source": to_pil(source[i])}
            images["edited"] = judged_edit(to_pil(edited[i]), images["source"])
            if "reference" in spec.images:
                images["reference"] = to_pil(sample.target_image)
            inputs = [images["source"], *map(to_pil, sample.reference_images)] if spec.per_sample else []
            pictures, labels = spec.arranged(images, inputs, frames[i] if frames else None)
            if spec.per_sample:  # the labels (frame numbers) are part of what is asked
                asked = [asked, list(labels)]
            for j in range(self.samples):
                key = self._key(part, pictures, asked, j)
                path = self._path(key)
                if key in self._failed:
                    got[i, j] = self._failed[key]
                elif path.is_file():
                    record = json.loads(path.read_text(encoding="utf-8"))
                    got[i, j] = self._read(record["answer"], spec, record.get("expected"))
                elif key in where:  # equal pixels and text in one batch: one request
                    where[key].append((i, j))
                else:
                    asks.append(spec.request(pictures, spec.text(instruction, explanation), labels))
                    seeds.append(j)
                    where[key] = [(i, j)]
        replies = self.backend.answer_many(asks, self.template.max_new_tokens, seeds) if asks else []
        for (key, waiting), reply in zip(where.items(), replies):
            if isinstance(reply, Exception):
                answer = self._failed[key] = failed_answer(reply)
            else:
                expected = list(reply.expected) if hasattr(reply, "expected") else None
                record = {"answer": str(reply), "identity": self.identity, "part": part}
                text = json.dumps(record | ({"expected": expected} if expected else {}), ensure_ascii=False)
                path = self._path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda p, text=text: p.write_text(text, encoding="utf-8"))
                answer = self._read(str(reply), spec, expected)
            for slot in waiting:
                got[slot] = answer
        for i in range(len(samples)):
            if rows[i] is None:
                rows[i] = mean_answer([got[i, j] for j in range(self.samples)])
        return rows

    def _read(self, text: str, spec: TemplatePart, expected: list | None = None) -> Answer:
        reading = READERS[self.template.reader](text, spec.criteria, self.template.score_range)
        if not reading.ok:
            what = "answer out of range" if reading.kind == OUT_OF_RANGE else "unreadable answer"
            return Answer(text, NAN, f"{what}: {reading.reason}", reading.kind)
        scores = expected if expected and len(expected) == len(reading.scores) else reading.scores  # judge.expected_score
        scale = self.template.scale
        return Answer(text, COMBINE[self.template.combine](scores) * scale, criteria=tuple(v * scale for v in scores))


def failed_answer(error: Exception) -> Answer:
    """The answer of a request that ended with ``error``: NaN, with its class and message."""
    kind = error.kind if isinstance(error, JudgeFailure) else TRANSPORT_ERROR
    detail = str(error) if isinstance(error, JudgeFailure) else f"{type(error).__name__}: {error}"
    return Answer(None, NAN, f"the judge request failed: {detail}", kind)


def judge_backend(options, device, untrained: bool, seed: int):
    """The backend ``options`` (``JudgeOptions``) describe; with ``untrained`` a local judge is the
    tiny seeded Qwen2.5-VL of ``bench.metrics.tiny_vlm`` (an endpoint stays what it is)."""
    if options.backend == "endpoint":
        return ChatEndpoint(options)
    folder = None
    if untrained:
        from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

        folder = cache_dir() / f"tiny_qwen25_vl_seed{seed}"
        if not (folder / "model.safetensors").is_file():
            write_tiny_qwen25_vl(folder, seed)
    return LocalVLM(options, device, folder)


def load_judge(options, device, untrained: bool, seed: int) -> Judge:
    """The VIEScore judge ``options`` (``JudgeOptions``) describe (backend: ``judge_backend``)."""
    template = load_template(options.template)
    if options.expected_score and tuple(template.score_range) != (0, 10):
        raise ConfigError(f"metric_options.judge.expected_score reads scores of 0-10; template {options.template} "
                          f"scores {template.score_range[0]:g}-{template.score_range[1]:g}")  # fmt: skip
    return Judge(judge_backend(options, device, untrained, seed), template, options.instruction, options.samples)


@network(label=lambda options: "judge Qwen2.5-VL (tiny)" if options.backend == "local" else None)
def judge_network(options: JudgeOptions, *, untrained: bool, seed: int, device) -> Judge:
    """The judge ``options`` describe; untrained only for a local backend (an endpoint is never labelled)."""
    return load_judge(options, device, untrained and options.backend == "local", seed)


def benchmark_judge(extractors, template: str, metric: str) -> Judge:
    """The run's judge (``metric_options.judge``) asking with a benchmark's own ``template``
    (ImgEdit-Bench, KRIS-Bench, RISEBench), loaded once per run through the extractor cache."""
    return extractors.get(judge_network, replace(extractors.options.judge, template=template), metric=metric)


def metric_judges(metrics: list) -> dict[str, dict]:
    """The identity of what judges each loaded judge metric of ``metrics``, by metric name, with
    its ``line``: a VLM judge's (``Judge.identity``, ``Judge.describe``) or a reward model's
    (``identity`` of its metric, e.g. EditReward's)."""
    found = {}
    for metric in metrics:
        judge, identity = getattr(metric, "judge", None), getattr(metric, "identity", None)
        if isinstance(judge, Judge):
            found[metric.name] = {**judge.identity, "line": judge.describe()}
        elif isinstance(identity, dict) and "line" in identity:
            found[metric.name] = identity
    return found


def judge_identity(extractors) -> dict | None:
    """What answered the judge metrics of a run (model, revision, template, decoding), or None."""
    judges = extractors.loaded(judge_network)
    return {**judges[0].identity, "line": judges[0].describe()} if judges else None


class _VieScore(ImageMetric):
    """A VIEScore metric: the minimum-combined score of ``parts``; several parts: their geometric mean."""

    parts: tuple[str, ...]
    higher_is_better = True
    is_judge = True
    value_range = (0.0, 10.0)
    needs = frozenset({"instruction", "pretrained weights"})
    options = (JUDGE,)

    def load(self, extractors):
        super().load(extractors)
        self.judge = extractors.get(judge_network, extractors.options.judge, metric=self.name)

    def compute(self, edited, source, samples):
        per_part = [self.judge.answers(part, edited, source, samples) for part in self.parts]
        values, notes = [], []
        for answers in zip(*per_part):
            note = {part: {"answer": a.text, "reason": a.reason or None, "class": a.kind}
                    | ({"answers": list(a.texts), "scores": list(a.samples)} if a.samples else {})
                    for part, a in zip(self.parts, answers)}  # fmt: skip
            if any(math.isnan(a.score) for a in answers):
                values.append(NAN)
            elif answers[0].samples:  # k answers: the mean of the rule applied to each answer's scores
                each = [geometric_mean(scores) for scores in zip(*(a.samples for a in answers))]
                note["samples"] = each
                values.append(sum(each) / len(each))
            else:
                values.append(geometric_mean([a.score for a in answers]))
            notes.append(json.dumps(note, ensure_ascii=False))
        self.notes = notes
        return torch.tensor(values, dtype=torch.float64)

    @classmethod
    def failure(cls, note: str | None) -> Failure | None:
        """The first failed part's class and reason in a cell's note (None: every part answered)."""
        data = json.loads(note or "{}")
        for part in cls.parts:
            answer = data.get(part) or {}
            kind = answer.get("class") or _class_of_unclassed(answer)
            if kind != OK:
                return Failure(kind, f"{part}: {answer.get('reason')}")
        return None

    @classmethod
    def judge_samples(cls, note: str | None) -> list[float] | None:
        """The item's value under each of the judge's k answers (``judge.samples``), or None."""
        return json.loads(note or "{}").get("samples")


def geometric_mean(scores) -> float:
    return math.prod(scores) ** (1 / len(scores))


_NAN_REASON = ("the sample has no instruction, the judge's answer could not be read, or the request failed "
               "(each cell's reason and raw answer: export's note column)")  # fmt: skip


def _class_of_unclassed(answer: dict) -> str:
    """The class of a note part written before notes carried classes."""
    reason = answer.get("reason")
    if reason is None:
        return OK
    if answer.get("answer") is not None:
        return OUT_OF_RANGE if " is outside " in reason else UNREADABLE
    return NO_INSTRUCTION if "no instruction" in reason else TRANSPORT_ERROR


class VieSC(_VieScore):
    name = "vie_sc"
    parts = ("sc",)
    nan_reason = _NAN_REASON
    description = ("VIEScore semantic consistency (GEdit-Bench SC): a VLM judge rates editing success and "
                   "over-editing 0-10 from source, edit and instruction; the minimum of the two")  # fmt: skip


class ViePQ(_VieScore):
    name = "vie_pq"
    parts = ("pq",)
    needs = frozenset({"pretrained weights"})
    nan_reason = "the judge's answer could not be read, or the request failed (export's note column says which)"
    description = ("VIEScore perceptual quality (GEdit-Bench PQ): a VLM judge rates naturalness and artifacts "
                   "0-10 from the edited image; the minimum of the two")  # fmt: skip


class VieO(_VieScore):
    name = "vie_o"
    parts = ("sc", "pq")
    nan_reason = _NAN_REASON
    description = "VIEScore overall (GEdit-Bench O): sqrt(SC * PQ) of the same two judge answers"


METRICS = (VieSC, ViePQ, VieO)
