"""Where a judge's answers come from: a local transformers VLM or an OpenAI-compatible endpoint.

Both take the same request, images (PIL, in order) followed by one text, and return the
answer's text, decoded greedily (``do_sample=False`` locally, ``temperature: 0`` on an
endpoint). ``identity`` names what answered: model id, revision and decoding; it keys the
judgment cache and goes to the manifest and every table.

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
  ``backoff_s * 2**attempt`` seconds between tries. The endpoint is checked once at load
  (``GET {url}/models``): an unreachable one stops the run before any cell.
"""

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError, unknown

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
}  # fmt: skip
DTYPES = ("auto", "fp32", "fp16", "bf16")
TRANSIENT_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504})


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
    ``request``: how an endpoint request is built, a key of ``REQUEST_FORMS`` (endpoint only).
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
        for key in ("concurrency", "retries"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "concurrency" else 0):
                raise ConfigError(f"{where}.{key} = {value!r}; expected a {'positive' if key == 'concurrency' else 'non-negative'} integer")
        for key in ("timeout_s", "backoff_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (key == "timeout_s" and not value):
                raise ConfigError(f"{where}.{key} = {value!r}; expected a positive number of seconds")


def png_data(image, image_format: str = "PNG") -> bytes:
    """The picture's file bytes (PNG, or JPEG at PIL's default quality as GEdit-Bench encodes it)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


class JudgeBackend:
    """Answers (images, text) requests; ``identity`` says who answers and how."""

    identity: dict

    def answer_many(self, requests: list[tuple[list, str]], max_new_tokens: int) -> list[str | Exception]:
        """One answer text per request, or the exception that request ended with."""
        raise NotImplementedError


class LocalVLM(JudgeBackend):
    """A transformers vision-language model, loaded once, greedy decoding."""

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
        self.model.to(device).eval().requires_grad_(False)
        self.processor = local_or_cached(source, lambda n, **k: AutoProcessor.from_pretrained(n, **revision, **k),
                                         what, f"processor of {options.model!r}")  # fmt: skip
        self.device = device
        self.identity = {
            "backend": "local", "model": f"untrained {untrained_folder.name}" if untrained_folder else options.model,
            "revision": options.revision or weights_revision(self.model),
            "decoding": "greedy", "dtype": str(dtype).removeprefix("torch."),
        }  # fmt: skip

    def answer_many(self, requests, max_new_tokens):
        return [self._answer(images, text, max_new_tokens) for images, text in requests]

    def _answer(self, images: list, text: str, max_new_tokens: int) -> str:
        import torch

        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
        chat = self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)  # fmt: skip
        inputs = self.processor(text=[chat], images=images, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        new = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]


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
        self.form = REQUEST_FORMS[options.request]
        self.identity = {"backend": "endpoint", "model": options.model, "url": self.url,
                         "revision": options.revision or "unknown (endpoint)", "decoding": self.form.about}  # fmt: skip
        if options.request != "editbench":  # the default form keeps the identity (and cache keys) it always had
            self.identity |= {"request": options.request, "max_new_tokens": self.form.max_tokens}

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def _check_reachable(self) -> None:
        request = urllib.request.Request(f"{self.url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(self.options.timeout_s, 10)):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: reachable (some servers do not list models)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"judge endpoint {self.url} is unreachable ({reason}); start the server or fix "
                              "metric_options.judge.url") from None  # fmt: skip

    def answer_many(self, requests, max_new_tokens):
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            futures = [pool.submit(self._answer, images, text, max_new_tokens) for images, text in requests]
            return [f.exception() or f.result() for f in futures]

    def _body(self, images: list, text: str, max_new_tokens: int) -> bytes:
        form = self.form
        kind = form.image_format.lower()
        pictures = [{"type": "image_url", "image_url": {
            "url": f"data:image/{kind};base64," + base64.b64encode(png_data(im, form.image_format)).decode()}}
            for im in images]  # fmt: skip
        words = [{"type": "text", "text": text}]
        content = words + pictures if form.text_first else pictures + words
        body = {"model": self.options.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": form.max_tokens or max_new_tokens, "stream": False}  # fmt: skip
        if form.temperature is not None:
            body["temperature"] = form.temperature
        return json.dumps(body).encode()

    def _answer(self, images: list, text: str, max_new_tokens: int) -> str:
        body = self._body(images, text, max_new_tokens)
        for attempt in range(self.options.retries + 1):
            request = urllib.request.Request(f"{self.url}/chat/completions", data=body, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                    reply = json.loads(response.read())
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                if exc.code not in TRANSIENT_HTTP or attempt == self.options.retries:
                    raise RuntimeError(f"judge endpoint answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.options.retries:
                    raise RuntimeError(f"judge endpoint failed after {attempt + 1} tries: {exc}") from None
            time.sleep(self.options.backoff_s * 2**attempt)
