"""openai_images: an OpenAI-compatible images-edit endpoint (gpt-image-1, or a server copying its API) as a method.

Each cell is one request, ``POST {base_url}/images/edits`` as ``multipart/form-data``: ``image``
(the sample's source as editbench prepared it, the frame every method edits, as PNG; with the
sample's reference images, the source then each reference as the array ``image[]``),
``prompt`` (the sample's instruction), ``model``, ``n`` = 1, and ``size``, ``quality``,
``input_fidelity`` and ``response_format`` only when set (empty: not sent, the API's default).
The reply is ``{"data": [{"b64_json": ...}]}``; a ``url`` instead is fetched without the key.

What the API takes (OpenAI's OpenAPI description 2.3.0, as generated into openai-client-base
0.12.0, docs.rs: ``CreateImageRequest``, ``InputFidelity``; Azure AI Foundry's REST reference
"Create an image edit multipart", learn.microsoft.com): for the GPT image models up to 16 png,
webp or jpg images under 50 MB and a prompt of up to 32000 characters; ``size`` 1024x1024,
1536x1024, 1024x1536 or auto (the default); ``quality`` low, medium, high or auto (the default);
``input_fidelity`` high or low (the default; gpt-image-1 and later, not gpt-image-1-mini);
``response_format`` url or b64_json for dall-e-2/3 only: the GPT image models always return base64.

Checked before any cell: the environment variable ``api_key_env`` names is set (the key is read
from it at each request and never stored: not in the config, manifest, store, logs or errors;
a server's message quoting it has it replaced by ``<api key>``), and at load the endpoint answers
(``GET {base_url}/models``) and does not refuse the key. The requests of a batch run in parallel,
at most ``concurrency`` at a time (so ``batch_size`` >= ``concurrency`` keeps them all busy); each
try has ``timeout_s``, and transient errors (connection errors, timeouts, HTTP 408/409/429/5xx)
are retried up to ``retries`` times with a doubling backoff from ``backoff_s`` or the server's
``Retry-After`` (``bench.metrics.http_client``, the judges' client). A request that fails fails
its own cell with the status code and the API's message; ``editbench run --resume RUN
--retry-failed`` asks again.

The reply is brought to the frame sent (bicubic, no crop; a reply of another aspect ratio, as
the API's fixed sizes give, is stretched to it), so metrics compare it with the source as they
do every method's edit. Nothing runs here, so time, GPU time, memory and NFE are not measured
(empty, as for ``external``). The API takes no seed: every seed of a sample is one more request,
a new draw that the seed does not reproduce (the method is stochastic, not seeded).
"""

import base64
import io
import json
import os
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from bench import Conformance, EditResult, Method, Param, register
from bench.diffusion.families import TEXT_TO_IMAGE_FAMILIES
from bench.errors import ConfigError, SampleError
from bench.metrics.http_client import MAX_MESSAGE, HttpFailure, RetryPolicy, get_status, post
from bench.metrics.judge import to_pil
from bench.metrics.judge_backends import png_data
from bench.samples import image_tensor, to_eight_bit

MAX_PIXELS = 8192 * 8192  # a larger reply fails its cell before decoding
SIZE_RULE = ("openai_images: each reply is resized to the frame sent (bicubic, no crop); a reply of another aspect "
             "ratio (the API's sizes are fixed) is stretched to it")  # fmt: skip
COST_LABEL = "openai_images: made by a remote API, so their time, GPU time, memory and NFE are not measured"
SEED_LABEL = "openai_images: the API takes no seed; each seed is one more request, not a reproducible draw"
#: Form fields sent only when set (empty: the API's default).
OPTIONAL_FIELDS = ("size", "quality", "input_fidelity", "response_format")


class ImagesApiError(RuntimeError):
    """A request to the images endpoint that gave no image: what the server said, never the key."""


@register
class OpenAIImages(Method):
    name = "openai_images"
    description = "an OpenAI-compatible images-edit endpoint (gpt-image-1 and servers copying its API)"
    needs = frozenset({"instruction"})
    reads_references = True  # a sample's reference images go after its source, as the form's ``image[]`` array
    stochastic = True  # the API takes no seed: two requests for one sample may differ
    measures_cost = False
    families = TEXT_TO_IMAGE_FAMILIES  # it never touches the backbone; the run's frame is all it takes
    conformance = Conformance(
        exempt="it sends each cell to a remote API and computes nothing: batching, NFE, repeatability and precision "
        "are the server's, not the method's (tests/test_openai_images.py checks it against a local server)"
    )
    params = (
        Param("model", str, "gpt-image-1", "the served model's name"),
        Param("base_url", str, "https://api.openai.com/v1",
              "the API's base URL; requests go to {base_url}/images/edits"),
        Param("api_key_env", str, "OPENAI_API_KEY", "the NAME of the environment variable holding the API key "
              "(empty: no key); the key itself is never stored"),
        Param("size", str, "", "output size, e.g. 1024x1024, 1536x1024, 1024x1536, auto (empty: not sent)"),
        Param("quality", str, "", "low, medium, high or auto (empty: not sent)",
              choices=("", "low", "medium", "high", "auto")),
        Param("input_fidelity", str, "", "high or low (empty: not sent; gpt-image-1 and later)",
              choices=("", "high", "low")),
        Param("response_format", str, "", "b64_json or url, for servers that take it (empty: not sent; the GPT image "
              "models always return b64_json)", choices=("", "b64_json", "url")),
        Param("timeout_s", float, 300.0, "seconds one try may take", low=0, low_open=True),
        Param("retries", int, 3, "more tries after a transient error (connection, timeout, HTTP 408/409/429/5xx)",
              low=0),
        Param("backoff_s", float, 2.0, "first wait between tries, doubling (or the server's Retry-After)", low=0),
        Param("concurrency", int, 4, "requests of a batch in flight at once", low=1),
    )

    @classmethod
    def check(cls, setting):
        if not setting["base_url"].startswith(("http://", "https://")):
            raise ConfigError(f"method 'openai_images': base_url {setting['base_url']!r} is not an http(s) URL, "
                              "e.g. https://api.openai.com/v1")  # fmt: skip

    @classmethod
    def check_ready(cls, setting):
        """Before any cell: the key's environment variable is set, and the endpoint answers and takes
        the key (any other status will do: some servers do not list models)."""
        url = setting["base_url"].rstrip("/")
        try:
            status = get_status(f"{url}/models", headers(setting), min(setting["timeout_s"], 10))
        except HttpFailure as exc:
            raise ConfigError(f"method 'openai_images': {url} is unreachable ({exc.message}); fix base_url or start "
                              "the server") from None  # fmt: skip
        if status in (401, 403):
            raise ConfigError(f"method 'openai_images': {url} refused the API key in ${setting['api_key_env']} "
                              f"(HTTP {status})")  # fmt: skip

    def edit_batch(self, backbone, rows, setting):
        with ThreadPoolExecutor(max_workers=min(setting["concurrency"], len(rows))) as pool:
            futures = [pool.submit(edit_one, row.sample, setting) for row in rows]
        return [future.exception() or future.result() for future in futures]


def api_key(setting) -> str | None:
    """The key from the environment variable the setting names (None when it names none); a
    ``ConfigError`` naming the variable, never a key, when it is not set."""
    name = setting["api_key_env"]
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ConfigError(f"method 'openai_images': api_key_env names {name!r}, but that environment variable is not "
                          "set; export it (or set api_key_env to '' for a server without keys)")  # fmt: skip
    return key


def headers(setting, content_type: str | None = None) -> dict:
    """A request's headers: the key as a Bearer token (when the setting names one) and the content type."""
    key = api_key(setting)
    authorization = {"Authorization": f"Bearer {key}"} if key else {}
    return authorization | ({"Content-Type": content_type} if content_type else {})


def edit_one(sample, setting) -> EditResult:
    """One request: the sample's frame and instruction in, the reply brought to the frame out."""
    height, width = sample.image.shape[1:]
    url = f"{setting['base_url'].rstrip('/')}/images/edits"
    fields = {"prompt": sample.instruction, "model": setting["model"], "n": "1"}
    fields |= {name: setting[name] for name in OPTIONAL_FIELDS if setting[name]}
    images = (sample.image, *sample.reference_images)
    form_name = "image" if len(images) == 1 else "image[]"  # several images go as an array, as the API takes them
    files = [(form_name, f"image{i}.png", png_data(to_pil(image))) for i, image in enumerate(images)]
    body, content_type = multipart(fields, files)
    policy = RetryPolicy(setting["timeout_s"], setting["retries"], setting["backoff_s"])
    try:
        reply = post(url, body, headers(setting, content_type), policy)
        picture = reply_image(sample.id, reply, policy.timeout_s)
    except (HttpFailure, ImagesApiError) as exc:
        message = str(exc)
        key = api_key(setting)
        raise ImagesApiError(f"{url}: {message.replace(key, '<api key>') if key else message}") from None
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.BICUBIC)
    return EditResult(image_tensor(picture)[None], labels=[SIZE_RULE, COST_LABEL, SEED_LABEL])


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text ``fields`` and PNG ``files`` (form name, file name,
    bytes), with its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]  # fmt: skip
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")  # fmt: skip
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def reply_image(sample_id: str, raw: bytes, timeout_s: float) -> Image.Image:
    """The first image of an images reply (``b64_json``, or ``url`` fetched without the key) as
    8-bit RGB; ``ImagesApiError`` naming what came instead."""
    try:
        entry = json.loads(raw)["data"][0]
        data = base64.b64decode(entry["b64_json"]) if entry.get("b64_json") else None
        url = entry.get("url")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ImagesApiError(f"the reply has no data[0].b64_json or url: {raw[:MAX_MESSAGE]!r}") from None
    if data is None and not url:
        raise ImagesApiError(f"the reply's data[0] has neither b64_json nor url: {raw[:MAX_MESSAGE]!r}")
    if data is None:
        data = fetched(url, timeout_s)
    try:
        # the size from the header first: an oversized reply is never decoded
        with Image.open(io.BytesIO(data)) as probe:
            if probe.size[0] * probe.size[1] > MAX_PIXELS:
                raise ImagesApiError(f"the reply's image is {probe.size[0]}x{probe.size[1]}, above {MAX_PIXELS} pixels")
            return to_eight_bit(sample_id, probe, "the reply's image").convert("RGB")
    except (ImagesApiError, SampleError):
        raise
    except Exception as exc:
        raise ImagesApiError(f"the reply's image cannot be read: {exc}") from None


def fetched(url: str, timeout_s: float) -> bytes:
    """The bytes at an image ``url`` of a reply (http(s) only; no key goes with it)."""
    if not url.startswith(("http://", "https://")):
        raise ImagesApiError(f"the reply's image url is not http(s): {url[:MAX_MESSAGE]!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ImagesApiError(f"the reply's image url {url[:MAX_MESSAGE]} cannot be read: {exc}") from None
