"""Where a judge's answers come from: a local transformers VLM or an OpenAI-compatible endpoint.

Both take the same request, images (PIL, in order) followed by one text, and return the
answer's text, decoded greedily (``do_sample=False`` locally, ``temperature: 0`` on an
endpoint) unless ``temperature`` > 0 (sampling; each request then carries a seed: the local
backend seeds its sampler, an endpoint gets ``seed``, which OpenAI-compatible servers take).
``identity`` names what answered: model id, revision and decoding; it keys the judgment cache
and goes to the manifest and every table. With ``expected_score`` the local backend also
returns the expected value of each score from its answer tokens' probabilities
(``bench.metrics.judge_expected``).

- ``local``: ``AutoModelForImageTextToText`` + ``AutoProcessor`` of a hub id (read from the
  local Hugging Face cache, never downloaded) or a folder; safetensors only. The default is
  ``Qwen/Qwen2.5-VL-7B-Instruct``, GEdit-Bench's open judge family. The chat is one user
  message with the images first, as GEdit-Bench's Qwen2.5-VL judge builds it.
- ``endpoint``: ``POST {url}/chat/completions`` of any OpenAI-compatible server (vLLM, SGLang,
  ``transformers serve``), built by the ``request`` form (``REQUEST_FORMS``): ``editbench`` (the
  default) sends the images first as PNG data URLs at ``temperature: 0`` with the template's
  token limit; ``gedit_gpt41`` builds the request GEdit-Bench's headline numbers came from (its
  ``viescore/mllm_tools/openai.py``: the text first, then the images as JPEG, ``max_tokens``
  1400, no ``temperature``, i.e. the API's default). The form is part of the judge's identity. The API key is read from the environment
  variable ``api_key_env`` names, when it names one, and is never stored. Requests run up to
  ``concurrency`` at a time, each with a ``timeout_s`` and up to ``retries`` retries after
  transient errors (connection errors, timeouts, HTTP 408/409/429/5xx), waiting
  ``backoff_s * 2**attempt`` seconds between tries, or what the server's ``Retry-After`` asks
  (``bench.metrics.http_client``, the client the ``openai_images`` method shares). The endpoint is checked once at load
  (``GET {url}/models``): an unreachable one stops the run before any cell. A request that
  ends without an answer raises ``JudgeFailure`` with its class (refused, content-filtered,
  transport error, timeout: ``bench.metrics.judge_failures``) and the server's own message.
"""

import base64
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError, unknown
from bench.metrics.http_client import MAX_MESSAGE, HttpFailure, RetryPolicy, get_status, post, server_message
from bench.metrics.judge_failures import CONTENT_FILTERED, REFUSED, TIMEOUT, TRANSPORT_ERROR, JudgeFailure

BACKENDS = ("local", "endpoint")


@dataclass(frozen=True)
class RequestForm:
    """How an endpoint request is built: the text before or after the images, the images'
    encoding, the temperature (None: not sent, the API's default), the token limit (None: the
    template's ``max_new_tokens``) and the decoding it gives, as the judge line names it."""

    text_first: bool
    image_format: str
    temperature: float | None
    max_tokens: int | None
    about: str


REQUEST_FORMS = {
    "editbench": RequestForm(False, "PNG", 0, None, "greedy"),
    "gedit_gpt41": RequestForm(True, "JPEG", None, 1400, "API-default-temperature"),  # GEdit-Bench's viescore/mllm_tools/openai.py
    "imgedit_gpt4o": RequestForm(True, "PNG", None, None, "API-default-temperature"),  # ImgEdit-Bench's basic_bench.py
    "kris_gpt4o": RequestForm(False, "JPEG", None, 1000, "API-default-temperature"),  # KRIS-Bench's metrics_*.py (the template orders the parts)
    "rise_gpt41": RequestForm(True, "JPEG", 0, 4096, "greedy"),  # RISEBench's gpt_eval.py gpt_generate
}  # fmt: skip
DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class JudgeOptions:
    """``metric_options.judge``: which judge answers the VIEScore metrics, and how.

    ``model``: a hub id or folder (local) or the served model's name (endpoint); ``revision``:
    the hub revision to read from the cache (local) or what the server runs, as the user knows
    it (endpoint: recorded, not checked); ``device``/``dtype``: local only (``device`` null: the
    backbone's; ``dtype`` auto: bf16 on CUDA, else fp32); ``url``, ``api_key_env``,
    ``concurrency``, ``timeout_s``, ``retries``, ``backoff_s``: endpoint only;
    ``template``: a template file of ``bench/metrics/templates`` (without ``.yaml``);
    ``instruction``: ``sample`` (the sample's instruction; none: NaN) or ``from_prompts``
    (an instruction made from the sample's prompts when it has none, see ``bench.metrics.judge``);
    ``samples``: answers asked per item (k; the item's score is their mean, tables show their
    spread), each with its own seed, at ``temperature`` (0: greedy, or with a ``request`` form
    that sends no temperature, the API's default; k > 1 at 0 measures only the server's
    nondeterminism); ``expected_score`` (local only): score by the expected value of
    each score's tokens instead of the greedy digits; ``top_p``, ``top_k``: nucleus and top-k
    sampling when sampling (null: off on the local backend, which sends it switched off so that
    the model's generation_config cannot fill it in; not sent to an endpoint: the server's default);
    ``adapter`` (local only): a LoRA adapter folder or hub id (safetensors) merged into ``model``
    with peft, as EditScore's scorer loads its LoRA; ``request``: how an endpoint request is
    built, a key of ``REQUEST_FORMS`` (endpoint only).
    """

    backend: str = "local"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    revision: str | None = None
    device: str | None = None
    dtype: str = "auto"
    url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    template: str = "viescore_tie_0shot_v1"
    instruction: str = "sample"
    samples: int = 1
    temperature: float = 0.0
    expected_score: bool = False
    top_p: float | None = None
    top_k: int | None = None
    adapter: str | None = None
    request: str = "editbench"

    def __post_init__(self):
        where = "metric_options.judge"
        if self.request not in REQUEST_FORMS:
            raise ConfigError(f"{where}.request: {unknown('request form', self.request, list(REQUEST_FORMS))}")
        if self.request != "editbench" and self.backend != "endpoint":
            raise ConfigError(f"{where}.request = {self.request!r} builds an endpoint's request; the local backend "
                              "has one form (images first)")  # fmt: skip
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}.backend: {unknown('judge backend', self.backend, BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{where}.dtype: {unknown('dtype', self.dtype, DTYPES)}")
        if self.instruction not in ("sample", "from_prompts"):
            raise ConfigError(f"{where}.instruction = {self.instruction!r}; expected sample or from_prompts")
        if self.backend == "endpoint" and not (isinstance(self.url, str) and self.url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}.url = {self.url!r}; the endpoint backend needs an http(s) URL, e.g. "
                              "http://127.0.0.1:8000/v1")  # fmt: skip
        for key in ("concurrency", "retries", "samples"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "retries" else 1):
                raise ConfigError(f"{where}.{key} = {value!r}; expected a {'non-negative' if key == 'retries' else 'positive'} integer")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError(f"{where}.temperature = {self.temperature!r}; expected a number >= 0 (0: greedy)")
        if self.expected_score and (self.backend != "local" or self.temperature):
            raise ConfigError(f"{where}.expected_score needs the local backend and greedy decoding (temperature 0): "
                              "an endpoint does not return the score tokens' probabilities")  # fmt: skip
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0 < self.top_p <= 1):  # fmt: skip
            raise ConfigError(f"{where}.top_p = {self.top_p!r}; expected a number in (0, 1]")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):  # fmt: skip
            raise ConfigError(f"{where}.top_k = {self.top_k!r}; expected a positive integer")
        if (self.top_p is not None or self.top_k is not None) and not self.temperature:
            raise ConfigError(f"{where}: top_p and top_k shape sampling; set a temperature > 0 (0 is greedy)")
        if self.adapter and self.backend != "local":
            raise ConfigError(f"{where}.adapter is for the local backend; a server serves its LoRA under a model name")
        for key in ("timeout_s", "backoff_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (key == "timeout_s" and not value):
                raise ConfigError(f"{where}.{key} = {value!r}; expected a positive number of seconds")


def png_data(image, image_format: str = "PNG") -> bytes:
    """The picture's file bytes (PNG, or JPEG at PIL's default quality as GEdit-Bench encodes it)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@dataclass(frozen=True)
class Chat:
    """A request whose images and texts interleave (``parts``: PIL images and strings, in
    order), with an optional system prompt; the plain request ``(images, text)`` is the images
    followed by the text."""

    parts: tuple
    system: str | None = None


def chat_of(request) -> Chat:
    return request if isinstance(request, Chat) else Chat((*request[0], request[1]))


#: The values of top_p and top_k that switch them off in transformers' ``generate``.
SAMPLING_OFF = {"top_p": 1.0, "top_k": 0}


def decoding(options: JudgeOptions, explicit: bool = False, model_penalty: float | None = None) -> str:
    """How answers are decoded, as the judge's identity records it; ``explicit``: unset top_p
    and top_k are sent switched off (the local backend), so the record says so;
    ``model_penalty``: the repetition penalty the model's generation_config applies (named when
    sampling and not 1)."""
    if not options.temperature:
        return "greedy" + (", expected score from token probabilities" if options.expected_score else "")
    said = "".join(f", {key} {value:g}" + " (off)" * (getattr(options, key) is None)
                   for key, value in sampling(options, explicit).items())  # fmt: skip
    if model_penalty not in (None, 1.0):
        said += f", repetition_penalty {model_penalty:g} (the model's generation_config)"
    return f"sampled at temperature {options.temperature:g}{said}, seed per answer"


def sampling(options: JudgeOptions, explicit: bool = False) -> dict:
    """The sampling settings a request carries beyond the temperature: the ones set, and with
    ``explicit`` the unset ones switched off (``SAMPLING_OFF``), so that no generation_config
    fills them in (Qwen-VL's top_k 1 would make sampling greedy)."""
    chosen = {key: getattr(options, key) for key in SAMPLING_OFF}
    return {key: SAMPLING_OFF[key] if value is None else value for key, value in chosen.items()
            if value is not None or explicit}  # fmt: skip


class JudgeBackend:
    """Answers (images, text) requests; ``identity`` says who answers and how."""

    identity: dict

    def answer_many(self, requests: list, max_new_tokens: int, seeds: list[int] | None = None) -> list[str | Exception]:
        """One answer text per request (``(images, text)`` or a ``Chat``; seeded by ``seeds`` when
        sampling), or the exception that request ended with (a ``JudgeFailure`` where the backend
        knows the failure's class)."""
        raise NotImplementedError


class LocalVLM(JudgeBackend):
    """A transformers vision-language model (with a LoRA adapter merged when one is named), loaded once."""

    def __init__(self, options: JudgeOptions, device, untrained_folder: Path | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from bench.devices import resolve_device
        from bench.metrics.offline import local_or_cached

        source = str(untrained_folder) if untrained_folder else options.model
        try:
            device = resolve_device(options.device) if options.device else torch.device(device)
        except ConfigError as exc:
            raise ConfigError(f"metric_options.judge.device: {exc}") from None
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(options.dtype)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        revision = {"revision": options.revision} if options.revision and not untrained_folder else {}

        def load_model(name, **kwargs):
            return AutoModelForImageTextToText.from_pretrained(name, dtype=dtype, **revision, **kwargs)

        what = f"judge {options.model}"
        self.model = local_or_cached(source, load_model, what, f"vision-language model {options.model!r}")
        adapter = options.adapter if not untrained_folder else None  # a LoRA of the real model, not the tiny one
        if adapter:
            self.model = merged_adapter(self.model, adapter)
        self.model.to(device).eval().requires_grad_(False)
        self.processor = local_or_cached(source, lambda n, **k: AutoProcessor.from_pretrained(n, **revision, **k),
                                         what, f"processor of {options.model!r}")  # fmt: skip
        self.device = device
        self.identity = {
            "backend": "local", "model": f"untrained {untrained_folder.name}" if untrained_folder else options.model,
            "revision": options.revision or weights_revision(self.model),
            "decoding": decoding(options, explicit=True,
                                 model_penalty=getattr(self.model.generation_config, "repetition_penalty", None)),
            "dtype": str(dtype).removeprefix("torch."),
        } | ({"adapter": adapter} if adapter else {})  # fmt: skip
        self.options = options

    def answer_many(self, requests, max_new_tokens, seeds=None):
        seeds = seeds or [0] * len(requests)
        return [self._answer(chat_of(request), max_new_tokens, seed) for request, seed in zip(requests, seeds)]

    def _answer(self, request: Chat, max_new_tokens: int, seed: int = 0) -> str:
        import torch

        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"} for p in request.parts]
        messages = [{"role": "system", "content": request.system}] * bool(request.system)
        chat = self.processor.apply_chat_template(messages + [{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)  # fmt: skip
        images = [p for p in request.parts if not isinstance(p, str)]
        inputs = self.processor(text=[chat], images=images, return_tensors="pt").to(self.device)
        sampled = {"do_sample": True, "temperature": float(self.options.temperature),
                   **sampling(self.options, explicit=True)}  # fmt: skip
        decode = sampled if self.options.temperature else {"do_sample": False}
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=1, **decode,
                                      output_logits=self.options.expected_score,
                                      return_dict_in_generate=True)  # fmt: skip
        new = out.sequences[:, inputs["input_ids"].shape[1] :]
        answer = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        if not self.options.expected_score:
            return answer
        from bench.metrics.judge_expected import expected_scores

        return expected_scores(self.model, self.processor.tokenizer, inputs, new[0], out.logits, answer)


def merged_adapter(model, adapter: str):
    """``model`` with the LoRA ``adapter`` (a folder, or a hub id in the local cache; its
    ``adapter_model.safetensors``) merged by peft (``merge_and_unload``)."""
    from peft import PeftModel

    from bench.metrics.offline import ExtractorMissing, hf_cache

    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(adapter, local_files_only=True))
        except Exception:  # not in the cache (huggingface_hub raises several kinds)
            pass
    if not (folder / "adapter_model.safetensors").is_file():
        raise ExtractorMissing(f"judge adapter {adapter}", f"LoRA adapter_model.safetensors of {adapter!r}",
                               [str(folder), f"Hugging Face cache {hf_cache()}"])  # fmt: skip
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def weights_revision(model) -> str:
    """``sha256:<16 hex>`` over the model's safetensors files (hub-cache blobs are named by
    their digest, so this is free there); the folder's name when it has none."""
    import hashlib

    from bench.weights import file_digest

    folder = Path(getattr(model, "name_or_path", "") or ".")
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return f"unknown ({folder.name})"
    digest = hashlib.sha256("".join(file_digest(f) for f in files).encode()).hexdigest()
    return f"sha256:{digest[:16]}"


class ChatEndpoint(JudgeBackend):
    """An OpenAI-compatible ``/chat/completions`` endpoint (see the module doc)."""

    def __init__(self, options: JudgeOptions):
        self.options = options
        self.url = options.url.rstrip("/")
        self.key = None
        if options.api_key_env:
            self.key = os.environ.get(options.api_key_env)
            if not self.key:
                raise ConfigError(f"metric_options.judge.api_key_env names {options.api_key_env!r}, "
                                  "but that environment variable is not set")  # fmt: skip
        self._check_reachable()
        self._pool: ThreadPoolExecutor | None = None
        self.form = REQUEST_FORMS[options.request]
        api_default = self.form.temperature is None and not options.temperature
        self.identity = {"backend": "endpoint", "model": options.model, "url": self.url,
                         "revision": options.revision or "unknown (endpoint)",
                         "decoding": self.form.about if api_default else decoding(options)}  # fmt: skip
        if options.request != "editbench":  # the default form keeps the identity (and cache keys) it always had
            self.identity |= {"request": options.request, "max_new_tokens": self.form.max_tokens}

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def _check_reachable(self) -> None:
        try:  # any answer will do: some servers do not list models
            get_status(f"{self.url}/models", self._headers(), min(self.options.timeout_s, 10))
        except HttpFailure as exc:
            raise ConfigError(f"judge endpoint {self.url} is unreachable ({exc.message}); start the server or fix "
                              "metric_options.judge.url") from None  # fmt: skip

    def answer_many(self, requests, max_new_tokens, seeds=None):
        if self._pool is None:  # one pool for the judge's life: its threads start once, not per batch
            self._pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="judge")
        seeds = seeds or [None] * len(requests)
        futures = [self._pool.submit(self._answer, chat_of(request), max_new_tokens, seed)
                   for request, seed in zip(requests, seeds)]  # fmt: skip
        return [f.exception() or f.result() for f in futures]

    def _body(self, request: Chat, max_new_tokens: int, seed: int | None) -> bytes:
        """The request as JSON, built by the request form: the text before the images when it
        says so, its image encoding, its token limit, and no temperature when it sends none and
        the options do not sample (the API's default)."""
        form = self.form
        parts = request.parts
        if form.text_first:
            parts = [p for p in parts if isinstance(p, str)] + [p for p in parts if not isinstance(p, str)]
        kind = form.image_format.lower()
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image_url", "image_url": {
            "url": f"data:image/{kind};base64," + base64.b64encode(png_data(p, form.image_format)).decode()}}
            for p in parts]  # fmt: skip
        system = [{"role": "system", "content": request.system}] * bool(request.system)
        body = {"model": self.options.model, "messages": system + [{"role": "user", "content": content}],
                "max_tokens": form.max_tokens or max_new_tokens, "stream": False, **sampling(self.options)}  # fmt: skip
        if form.temperature is not None or self.options.temperature:
            body["temperature"] = self.options.temperature or form.temperature
        if seed is not None:
            body["seed"] = seed
        return json.dumps(body).encode()

    def _answer(self, request: Chat, max_new_tokens: int, seed: int | None = None) -> str:
        """The answer's text; a ``JudgeFailure`` with its class when there is none."""
        body = self._body(request, max_new_tokens, seed)
        policy = RetryPolicy(self.options.timeout_s, self.options.retries, self.options.backoff_s)
        try:  # a content filter's reply is final, whatever its status
            reply = post(f"{self.url}/chat/completions", body, self._headers(), policy,
                         final=lambda status, message: content_filtered(message))  # fmt: skip
        except HttpFailure as exc:
            tries = f"{exc.tries} tries"
            if exc.status is not None and content_filtered(exc.message):
                raise JudgeFailure(CONTENT_FILTERED,
                                   f"the provider's content filter (HTTP {exc.status}): {exc.message}") from None
            if exc.status is not None:
                raise JudgeFailure(TRANSPORT_ERROR,
                                   f"judge endpoint answered HTTP {exc.status} after {tries}: {exc.message}") from None
            if exc.timed_out:
                raise JudgeFailure(TIMEOUT,
                                   f"judge endpoint did not answer within {self.options.timeout_s:g} s, {tries}") from None
            raise JudgeFailure(TRANSPORT_ERROR, f"judge endpoint failed after {tries}: {exc.message}") from None
        return answer_text(reply)


def content_filtered(message: str) -> bool:
    """Whether an error message names the provider's content filter (OpenAI/Azure: ``content_filter``)."""
    return "content_filter" in message or "content management policy" in message


def answer_text(raw: bytes) -> str:
    """The text of a ``/chat/completions`` reply body; a ``JudgeFailure`` naming what the server
    sent when the body is not JSON, has no ``choices``, or the provider refused or filtered."""
    try:
        reply = json.loads(raw)
    except ValueError:
        raise JudgeFailure(TRANSPORT_ERROR, f"judge endpoint sent a body that is not JSON: {raw[:MAX_MESSAGE]!r}") from None
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices:
        message = server_message(raw) if isinstance(reply, dict) and reply.get("error") else repr(raw[:MAX_MESSAGE])
        kind = CONTENT_FILTERED if content_filtered(message) else TRANSPORT_ERROR
        raise JudgeFailure(kind, f"judge endpoint's reply has no choices: {message}")
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    if message.get("refusal"):
        raise JudgeFailure(REFUSED, f"the judge refused: {str(message['refusal'])[:MAX_MESSAGE]}")
    if choice.get("finish_reason") == "content_filter":
        raise JudgeFailure(CONTENT_FILTERED, "the provider's content filter stopped the answer (finish_reason "
                           f"content_filter); partial text: {str(message.get('content') or '')[:MAX_MESSAGE]!r}")  # fmt: skip
    return message.get("content") or ""
