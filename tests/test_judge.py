"""VIEScore judge metrics: the template data, answer reading, the local transformers backend
on a tiny random Qwen2.5-VL, the endpoint backend against a real HTTP server on 127.0.0.1,
the score rule, the judgment cache and the per-cell notes."""

import base64
import io
import json
import math

import pytest
import torch

from bench.data import Sample
from bench.errors import ConfigError
from bench.metrics import get_metric
from bench.metrics import MetricOptions
from bench.metrics.extractors import Extractors
from bench.metrics.judge import Judge, instruction_of, judge_identity, load_judge, load_template
from bench.metrics.judge_answers import read_answer
from bench.metrics.judge_backends import ChatEndpoint, JudgeOptions, LocalVLM
from tests.chat_server import ChatServer, Reply, completion


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from bench.metrics.tiny_vlm import write_tiny_qwen25_vl

    return write_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test starts with an empty judgment cache."""
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def images(n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.rand(n, 3, 32, 32, generator=g)


def samples(n: int = 2, instruction: str | None = "make it a dog"):
    return [Sample(f"s{i}", torch.zeros(3, 32, 32), "a cat", "a dog", instruction=instruction) for i in range(n)]


# -- the template ------------------------------------------------------------------------------
def test_template_is_versioned_data_in_the_published_form():
    t = load_template("viescore_tie_0shot_v1")
    assert t.version == "viescore-tie-0shot/1" and t.score_range == (0, 10) and t.max_new_tokens == 512
    sc, pq = t.parts["sc"], t.parts["pq"]
    assert sc.images == ("source", "edited") and pq.images == ("edited",)
    assert sc.prompt.count("<instruction>") == 1 and sc.prompt.endswith("Editing instruction: <instruction>\n")
    assert pq.placeholder is None and pq.prompt.endswith("output score = [naturalness, artifacts]\n")
    for part in (sc, pq):  # both start with VIEScore's undelimited context and ask for the JSON form
        assert part.prompt.startswith("You are a professional digital artist.") and '"score" : [...]' in part.prompt
        assert len(part.criteria) == 2


def test_unknown_template_is_a_one_line_error():
    with pytest.raises(ConfigError, match="viescore_tie_0shot_v1"):
        load_template("viescore_v9")


# -- reading answers ---------------------------------------------------------------------------
@pytest.mark.parametrize("answer, scores", [
    ('{\n"score" : [8, 6],\n"reasoning" : "The hat is there; the background is kept."\n}', (8, 6)),
    ('Here is my rating:\n```json\n{"score": [3, 9], "reasoning": "barely edited"}\n```', (3, 9)),
    ('||V^=^V||\n{\n"score" : [5, 10],\n"reasoning" : "ok"\n}\n||V^=^V||', (5, 10)),
    ("[6, 0]", (6, 0)),
    ('{"score": [8, 6], "reasoning": "cut off before the brace', (8, 6)),  # no JSON: the bare list is read
    ("{score: [4, 7], reasoning: 'fine'}".replace("'", '"'), (4, 7)),
    ('{"score": [7.5, 2], "reasoning": ""}', (7.5, 2)),
])  # fmt: skip
def test_answers_in_the_templates_formats_are_read(answer, scores):
    reading = read_answer(answer, 2)
    assert reading.ok and reading.scores == scores


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("The edit looks good, I would say eight.", "no JSON object"),
    ('{"score": [8, "reasoning": "cut off', "no JSON object"),
    ('{"score": [8, 6] "reasoning": "missing comma"}', "does not parse"),
    ('{"rating": [8, 6]}', "no 'score' entry"),
    ('{"score": [11, 6], "reasoning": ""}', "outside 0-10"),
    ('{"score": [-1, 6], "reasoning": ""}', "outside 0-10"),
    ('{"score": ["high", 6], "reasoning": ""}', "not a number"),
    ('{"score": [8], "reasoning": ""}', "1 score(s) given"),
    ("7", "no JSON object or score list"),  # VIEScore reads a bare number; the templates rate two criteria
    ('{"score": [8, 6, 2], "reasoning": ""}', "3 score(s) given"),
])  # fmt: skip
def test_malformed_answers_give_no_scores_and_say_why(answer, reason):
    reading = read_answer(answer, 2)
    assert not reading.ok and reason in reading.reason


def test_instruction_from_prompts_only_when_asked():
    bare = Sample("x", torch.zeros(3, 4, 4), "a cat", "a dog")
    assert instruction_of(bare, "sample") is None
    assert instruction_of(bare, "from_prompts") == 'Change "a cat" to "a dog".'
    given = Sample("y", torch.zeros(3, 4, 4), "a cat", "a dog", instruction="add a hat")
    assert instruction_of(given, "from_prompts") == "add a hat"


# -- the score rule and the cache, through a real HTTP endpoint ----------------------------------
def rule_answers(images, text, body):
    """SC answers [7, 3], PQ answers [9, 4]: SC = 3, PQ = 4, O = sqrt(12)."""
    return '{"score": [7, 3], "reasoning": "sc"}' if len(images) == 2 else '{"score": [9, 4], "reasoning": "pq"}'


def endpoint_options(server, **more) -> MetricOptions:
    return MetricOptions(judge={"backend": "endpoint", "url": server.url, "model": "tiny-judge", "backoff_s": 0.01,
                                **more})  # fmt: skip


def scored(options, names=("vie_sc", "vie_pq", "vie_o"), batch=None):
    extractors = Extractors(options)
    metrics = [get_metric(n)() for n in names]
    for m in metrics:
        m.load(extractors)
    batch = batch or samples()
    edited, source = images(len(batch))
    return {m.name: (m(edited, source, batch), m.notes) for m in metrics}, extractors


def test_score_rule_minimum_inside_geometric_mean_across():
    with ChatServer(rule_answers) as server:
        values, _ = scored(endpoint_options(server))
        assert values["vie_sc"][0].tolist() == [3, 3] and values["vie_pq"][0].tolist() == [4, 4]
        assert values["vie_o"][0] == pytest.approx(torch.full((2,), math.sqrt(12), dtype=torch.float64))
        # two cells x (SC, PQ): vie_o reused the cached answers of vie_sc and vie_pq
        assert len(server.requests) == 4
        request = server.requests[0]
        assert request["temperature"] == 0 and request["max_tokens"] == 512 and request["model"] == "tiny-judge"
        note = json.loads(values["vie_o"][1][0])
        assert note["sc"]["answer"].startswith('{"score": [7, 3]') and note["pq"]["reason"] is None


def test_cache_keys_on_instruction_images_and_judge_and_is_shared_across_runs():
    with ChatServer(rule_answers) as server:
        scored(endpoint_options(server), names=("vie_sc",))
        assert len(server.requests) == 2
        scored(endpoint_options(server), names=("vie_sc",))  # a new run, same judge: nothing asked
        assert len(server.requests) == 2
        scored(endpoint_options(server), names=("vie_sc",), batch=samples(instruction="make it red"))
        assert len(server.requests) == 4
        scored(endpoint_options(server, revision="v2"), names=("vie_sc",))  # another judge revision
        assert len(server.requests) == 6


def test_no_instruction_is_nan_with_reason_and_asks_nothing_for_sc():
    with ChatServer(rule_answers) as server:
        values, _ = scored(endpoint_options(server), batch=samples(instruction=None))
        assert torch.isnan(values["vie_sc"][0]).all() and torch.isnan(values["vie_o"][0]).all()
        assert values["vie_pq"][0].tolist() == [4, 4]  # PQ needs no instruction
        assert "no instruction" in json.loads(values["vie_sc"][1][0])["sc"]["reason"]
        assert len(server.requests) == 2
        values, _ = scored(endpoint_options(server, instruction="from_prompts"), batch=samples(instruction=None))
        assert values["vie_sc"][0].tolist() == [3, 3]
        assert 'Change "a cat" to "a dog".' in server.requests[-1]["messages"][0]["content"][-1]["text"]


def test_unreadable_answer_is_nan_with_its_reason_and_raw_text():
    with ChatServer(lambda images, text, body: "I like it, 9/10") as server:
        values, _ = scored(endpoint_options(server), names=("vie_pq",))
        assert torch.isnan(values["vie_pq"][0]).all()
        note = json.loads(values["vie_pq"][1][0])["pq"]
        assert note["answer"] == "I like it, 9/10" and note["reason"].startswith("unreadable answer")


def test_transient_errors_are_retried_and_concurrency_is_bounded():
    with ChatServer(rule_answers, fail_first=2, delay_s=0.05) as server:
        options = endpoint_options(server, concurrency=2, retries=3)
        extractors = Extractors(options)
        metric = get_metric("vie_pq")()
        metric.load(extractors)
        edited, source = images(6)
        values = metric(edited, source, samples(6))
        assert values.tolist() == [4] * 6 and len(server.requests) == 8  # 6 answers + 2 refused
        assert server.max_in_flight <= 2


def test_exhausted_retries_are_nan_and_not_cached():
    with ChatServer(rule_answers, fail_first=100) as server:
        values, _ = scored(endpoint_options(server, retries=1), names=("vie_pq",))
        assert torch.isnan(values["vie_pq"][0]).all()
        assert "HTTP 503" in json.loads(values["vie_pq"][1][0])["pq"]["reason"]
        assert len(server.requests) == 4  # 2 cells x (1 try + 1 retry)
        server.fail_first = 0
        values, _ = scored(endpoint_options(server, retries=1), names=("vie_pq",))
        assert values["vie_pq"][0].tolist() == [4, 4]


def test_unreachable_endpoint_stops_at_load():
    with ChatServer(rule_answers) as server:
        url = server.url
    with pytest.raises(ConfigError, match="unreachable"):
        ChatEndpoint(JudgeOptions(backend="endpoint", url=url, timeout_s=2))


def test_api_key_comes_from_the_named_variable_and_is_sent(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    with ChatServer(rule_answers) as server:
        _, extractors = scored(endpoint_options(server, api_key_env="MY_JUDGE_KEY"), names=("vie_pq",))
        assert server.headers[0]["Authorization"] == "Bearer sk-test-123"
        assert "sk-test-123" not in json.dumps(judge_identity(extractors))
    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(ConfigError, match="MY_JUDGE_KEY"):
        ChatEndpoint(JudgeOptions(backend="endpoint", url="http://127.0.0.1:9/v1", api_key_env="MY_JUDGE_KEY"))


def test_bad_judge_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="judge backend"):
        MetricOptions(judge={"backend": "cloud"})
    with pytest.raises(ConfigError, match="did you mean"):
        MetricOptions(judge={"modle": "x"})
    with pytest.raises(ConfigError, match="http"):
        MetricOptions(judge={"backend": "endpoint"})


# -- the local backend on a tiny random Qwen2.5-VL -------------------------------------------------
def test_local_backend_loads_the_folder_and_decodes_greedily(tiny_vlm):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    backend = LocalVLM(JudgeOptions(model=str(tiny_vlm)), "cpu")
    assert backend.identity["revision"].startswith("sha256:") and backend.identity["decoding"] == "greedy"
    edited, source = images(1)
    from bench.metrics.judge import to_pil

    pictures = [to_pil(source[0]), to_pil(edited[0])]
    first = backend.answer_many([(pictures, "Rate the edit.")], 24)[0]
    assert isinstance(first, str) and first == backend.answer_many([(pictures, "Rate the edit.")], 24)[0]
    # the same model and processor driven directly through transformers give the same answer
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_vlm, local_files_only=True)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Rate the edit."}]}]
    inputs = processor(text=[processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)],
                       images=pictures, return_tensors="pt")  # fmt: skip
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    assert first == processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]


def test_local_judge_metric_end_to_end_keeps_the_raw_answer(tiny_vlm):
    judge = load_judge(JudgeOptions(model=str(tiny_vlm)), "cpu", False, 0)
    assert isinstance(judge, Judge) and judge.identity["template"] == "viescore-tie-0shot/1"
    edited, source = images(1)
    answers = judge.answers("pq", edited, source, samples(1))
    assert answers[0].text is not None  # the random model's answer, kept for audit
    reading = read_answer(answers[0].text, 2)
    assert math.isnan(answers[0].score) != reading.ok  # a score exactly when the answer reads


def test_endpoint_serving_the_tiny_model_answers_like_the_local_backend(tiny_vlm):
    local = LocalVLM(JudgeOptions(model=str(tiny_vlm)), "cpu")
    with ChatServer(lambda images, text, body: local.answer_many([(images, text)], body["max_tokens"])[0]) as server:
        endpoint = ChatEndpoint(JudgeOptions(backend="endpoint", url=server.url, model="tiny"))
        edited, _ = images(1)
        from bench.metrics.judge import to_pil

        request = ([to_pil(edited[0])], "Rate the image.")
        assert endpoint.answer_many([request], 16) == local.answer_many([request], 16)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_transformers_serve_of_the_tiny_folder_answers_like_the_local_backend(tiny_vlm, tmp_path):
    """The endpoint backend against ``transformers serve`` (transformers[serving]) serving the
    tiny Qwen2.5-VL folder offline on a loopback port: the same greedy answer as the local backend.
    Slow (18-34 s on 2 shared cores, mostly the server's start); the default run keeps the same
    property against the loopback test server answering from the tiny model (above)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    serve = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(tiny_vlm),
             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(120):  # at most ~60 s to start
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(0.5)
        from bench.metrics.judge import to_pil

        edited, _ = images(1)
        request = ([to_pil(edited[0])], "Rate the image.")
        endpoint = ChatEndpoint(JudgeOptions(backend="endpoint", url=url, model=str(tiny_vlm), timeout_s=60, retries=0))
        local = LocalVLM(JudgeOptions(model=str(tiny_vlm)), "cpu")
        assert endpoint.answer_many([request], 16) == local.answer_many([request], 16)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_a_malformed_template_file_is_a_one_line_error(monkeypatch, tmp_path):
    import bench.metrics.judge as judge

    (tmp_path / "broken_v1.yaml").write_text("version: broken/1\nsc: {prompt: x}\n")
    monkeypatch.setattr(judge, "TEMPLATES", tmp_path)
    with pytest.raises(ConfigError, match="broken_v1.yaml lacks or mistypes"):
        load_template("broken_v1")


# -- failures: each request at most 1 + retries times, the server's message kept ----------------
def test_vie_o_does_not_ask_again_what_vie_sc_and_vie_pq_were_refused():
    with ChatServer(rule_answers, fail_first=1000) as server:
        values, _ = scored(endpoint_options(server, retries=1))
        assert all(torch.isnan(v).all() for v, _ in values.values())
        assert len(server.requests) == 2 * 2 * 2  # 2 cells x 2 parts (sc, pq) x (1 try + 1 retry), not again for vie_o
        assert json.loads(values["vie_o"][1][0])["sc"]["class"] == "transport_error"


def test_equal_requests_in_one_batch_are_sent_once():
    with ChatServer(rule_answers) as server:
        edited, source = images(1)
        metric = get_metric("vie_pq")()
        metric.load(Extractors(endpoint_options(server)))
        assert metric(edited.repeat(3, 1, 1, 1), source.repeat(3, 1, 1, 1), samples(3)).tolist() == [4] * 3
        assert len(server.requests) == 1


@pytest.mark.parametrize("reply, kind, said", [
    (Reply({"error": {"message": "model is overloaded", "type": "server_error"}}), "transport_error",
     "model is overloaded"),
    (Reply(b"<html>502 Bad Gateway</html>"), "transport_error", "not JSON: b'<html>502 Bad Gateway"),
    (Reply(completion(None, refusal="I can't rate this image.")), "refused", "I can't rate this image."),
    (Reply(completion("", finish_reason="content_filter")), "content_filtered", "finish_reason content_filter"),
    (Reply({"error": {"code": "content_filter", "message": "The prompt was filtered"}}, status=400),
     "content_filtered", "The prompt was filtered"),
    (Reply({"error": {"message": "bad image"}}, status=400), "transport_error", "HTTP 400 after 1 tries: bad image"),
])  # fmt: skip
def test_a_reply_without_an_answer_keeps_its_class_and_the_servers_message(reply, kind, said):
    with ChatServer(lambda images, text, body: reply) as server:
        values, _ = scored(endpoint_options(server, retries=2), names=("vie_pq",))
        note = json.loads(values["vie_pq"][1][0])["pq"]
        assert torch.isnan(values["vie_pq"][0]).all() and note["class"] == kind and said in note["reason"]
        assert "KeyError" not in note["reason"] and "JSONDecodeError" not in note["reason"]
        assert len(server.requests) == 2  # none of these is transient: one try per cell


def test_a_judge_that_never_answers_is_a_timeout_after_its_retries():
    with ChatServer(lambda images, text, body: Reply(completion('{"score": [9, 4]}'), delay_s=1.0)) as server:
        values, _ = scored(endpoint_options(server, retries=1, timeout_s=0.3), names=("vie_pq",), batch=samples(1))
        note = json.loads(values["vie_pq"][1][0])["pq"]
        assert note["class"] == "timeout" and "within 0.3 s, 2 tries" in note["reason"]
        assert len(server.requests) == 2


def test_answers_outside_the_range_are_their_own_class():
    with ChatServer(lambda images, text, body: '{"score": [12, 4]}') as server:
        values, _ = scored(endpoint_options(server), names=("vie_pq",), batch=samples(1))
        assert json.loads(values["vie_pq"][1][0])["pq"]["class"] == "out_of_range"


def test_an_edit_of_another_size_is_judged_resized_to_the_source_bicubic_uncropped():
    """GEdit-Bench finding 1: its scorer resizes the edit to the judged source's size (PIL bicubic)."""
    from PIL import Image

    from bench.metrics.judge import to_pil

    seen = []

    def record(images, text, body):
        seen.append([im.size for im in images])
        return rule_answers(images, text, body)

    g = torch.Generator().manual_seed(3)
    source, edited = torch.rand(3, 24, 40, generator=g), torch.rand(3, 12, 16, generator=g)
    with ChatServer(record) as server:
        judge = load_judge(JudgeOptions(backend="endpoint", url=server.url, model="tiny-judge"), "cpu", False, 0)
        (answer,) = judge.answers("sc", [edited], [source], samples(1))
        assert answer.score == 3 and seen == [[(40, 24), (40, 24)]]
        sent = server.requests[0]["messages"][0]["content"][1]["image_url"]["url"].split(",", 1)[1]
        expected = to_pil(edited).resize((40, 24), Image.Resampling.BICUBIC)
        assert Image.open(io.BytesIO(base64.b64decode(sent))).tobytes() == expected.tobytes()


def test_gedit_card_judges_input_image_whole(tmp_path):
    """GEdit-Bench finding 1: the card reads ``input_image`` (what its scorer judges against) under
    ``keep_aspect`` (nothing cropped), not ``input_image_raw`` centre-cropped to a square."""
    from bench.data import DatasetSpec, load_dataset
    from tests.helpers import write_hub_fixture

    folder = write_hub_fixture(tmp_path / "gedit", "gedit_bench", "train", n=2)
    spec = DatasetSpec(name="gedit_bench", path=folder)
    sample = load_dataset(spec)[0].load(spec.policy().frame(256))
    assert sample.source_size == (40, 32)  # the fixture's input_image; input_image_raw is 80 x 64
    height, width = sample.image.shape[1:]
    assert width / height == pytest.approx(40 / 32, rel=0.05) and width != height


def test_gedit_gpt41_request_form_is_selectable_and_part_of_the_judge_identity():
    """GEdit-Bench finding 4: its GPT-4.1 requests put the text first, then JPEG images, with
    max_tokens 1400 and the API's default temperature; editbench's default form stays as it was."""
    with ChatServer(rule_answers) as server:
        values, extractors = scored(endpoint_options(server, request="gedit_gpt41"), names=("vie_sc",))
        assert values["vie_sc"][0].tolist() == [3, 3]
        body = server.requests[0]
        content = body["messages"][0]["content"]
        assert [p["type"] for p in content] == ["text", "image_url", "image_url"]
        assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert body["max_tokens"] == 1400 and "temperature" not in body
        identity = judge_identity(extractors)
        assert identity["request"] == "gedit_gpt41" and identity["max_new_tokens"] == 1400
        assert "gedit_gpt41 request" in identity["line"] and "API-default-temperature decoding" in identity["line"]
        scored(endpoint_options(server), names=("vie_sc",))  # the default form: another judge, asked again
        assert len(server.requests) == 4
        default = server.requests[-1]
        assert default["messages"][0]["content"][-1]["type"] == "text" and default["temperature"] == 0
    with pytest.raises(ConfigError, match="request"):
        JudgeOptions(request="gedit_gpt41")  # the local backend has one form
    with pytest.raises(ConfigError, match="unknown request form"):
        JudgeOptions(backend="endpoint", url="http://127.0.0.1:1/v1", request="gpt")


def test_answer_reading_rules_each_give_scores_and_the_docs_name_every_difference():
    """GEdit-Bench finding 5: no reading rule that can never produce a score (the bare number was
    read as one score, then always refused by the two-criteria count); the module doc names how
    editbench differs from VIEScore's parser instead of claiming to follow it."""
    import bench.metrics.judge_answers as answers

    assert not read_answer("7", 2).ok and "1 score(s)" not in read_answer("7", 2).reason
    assert read_answer("[7, 2]", 2).scores == (7, 2) and read_answer("{score: [7, 2]}", 2).scores == (7, 2)
    doc = answers.__doc__
    for difference in ("fix_json", "bare number", "[11, 6]", "random score"):
        assert difference in doc


def test_a_request_form_orders_interleaved_parts_and_a_sampling_temperature_is_still_sent():
    """The request form applies to any request (a ``Chat`` of labels and images too): text first
    for gedit_gpt41, images as JPEG; a temperature the options set (sampling) is sent even where
    the form sends none, and the judge line then names that decoding."""
    from PIL import Image

    from bench.metrics.judge_backends import Chat

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    with ChatServer(rule_answers) as server:
        greedy = ChatEndpoint(JudgeOptions(backend="endpoint", url=server.url, request="gedit_gpt41"))
        body = json.loads(greedy._body(Chat(("Image A:", red, "Image B:", blue, "Rate.")), 64, None))
        content = body["messages"][0]["content"]
        assert [p.get("text") for p in content] == ["Image A:", "Image B:", "Rate.", None, None]
        assert content[3]["image_url"]["url"].startswith("data:image/jpeg;base64,") and "temperature" not in body
        sampled = ChatEndpoint(JudgeOptions(backend="endpoint", url=server.url, request="gedit_gpt41",
                                            temperature=0.7, samples=2))  # fmt: skip
        assert json.loads(sampled._body(Chat((red, "Rate.")), 64, 1))["temperature"] == 0.7
        assert sampled.identity["decoding"].startswith("sampled at temperature 0.7")


def test_named_line_answers_outside_the_range_are_classed_out_of_range():
    from bench.metrics.judge_answers import read_named_scores
    from bench.metrics.judge_failures import OUT_OF_RANGE

    reading = read_named_scores("Prompt Compliance: 7\nVisual Naturalness: 4", ("Prompt Compliance", "Visual Naturalness"),
                                (1, 5))  # fmt: skip
    assert not reading.ok and reading.kind == OUT_OF_RANGE
