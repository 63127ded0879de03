"""``openai_images`` (issue 35 item 4): an OpenAI-compatible images-edit endpoint as a method,
run against a local server on 127.0.0.1 (``tests/images_server.py``)."""

import io
import json
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from bench.errors import ConfigError
from bench.execution.config import build_config
from bench.execution.runner import resume_run, start_run
from bench.store import Store
from bench.metrics.http_client import MAX_RETRY_AFTER_S, retry_after
from tests.chat_server import Reply
from tests.helpers import read_cells
from tests.images_server import ImagesServer

KEY_VAR = "EDITBENCH_TEST_IMAGES_KEY"
KEY = f"sk-test-{uuid.uuid4().hex}"  # distinctive, so a search of the run folder cannot miss it
RED = (200, 30, 30)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)


def red(fields, image):
    """The server's edit: one colour at the API's fixed square size, whatever came in."""
    return Image.new("RGB", (1024, 1024), RED)


def config(tmp_path, server, n: int = 3, batch_size: int = 3, **params):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"s{i}.png")
        entry = {"id": f"s{i}", "image": f"s{i}.png", "source_prompt": "a photo", "instruction": f"make it red {i}"}
        lines.append(json.dumps(entry))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    method = {"base_url": server.url, "api_key_env": KEY_VAR, "model": "tiny-images", "backoff_s": 0.0, **params}
    return build_config({
        "dataset": {"name": None, "path": str(folder / "manifest.jsonl")}, "methods": {"openai_images": method},
        "metrics": ["psnr"], "output": str(tmp_path / "runs"), "batch_size": batch_size,
        "backbone": {"name": "tiny", "resolution": 64},
    })  # fmt: skip


def files_holding(run_dir, text: str) -> list[str]:
    return [str(p) for p in run_dir.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_every_cell_is_the_servers_image_at_the_frame_size_and_the_key_is_sent_but_never_stored(tmp_path):
    with ImagesServer(red) as server:
        run_dir, counts = start_run(config(tmp_path, server), progress=False)
    assert counts["ok"] == 3 and counts["failed"] == 0
    cells = read_cells(run_dir).sort_values("sample_id")
    for path in cells["output_path"]:
        image = Image.open(run_dir / path)
        assert image.size == (64, 64) and np.all(np.asarray(image) == RED)  # resized from 1024x1024
    for column in ("time_s", "gpu_time_s", "peak_mem_mb", "nfe"):
        assert cells[column].isna().all(), f"{column}: not measured, so empty"
    requests = sorted(server.requests, key=lambda r: r["prompt"])
    assert [r["prompt"] for r in requests] == ["make it red 0", "make it red 1", "make it red 2"]
    assert {r["model"] for r in requests} == {"tiny-images"} and {r["n"] for r in requests} == {"1"}
    assert all(r["image"].size == (64, 64) and r["image.content_type"] == "image/png" for r in requests)
    assert not {"size", "quality", "input_fidelity", "response_format"} & set().union(*requests), "unset: not sent"
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in server.headers)
    assert files_holding(run_dir, KEY) == [] and files_holding(run_dir, KEY_VAR)  # the name is kept, never the key
    store = Store(run_dir)
    labels = store.info("labels")
    store.close()
    assert any("not measured" in label for label in labels) and any("takes no seed" in label for label in labels)


def test_optional_fields_are_sent_when_set(tmp_path):
    with ImagesServer(red) as server:
        start_run(config(tmp_path, server, n=1, size="1024x1024", quality="low", input_fidelity="high"), progress=False)
    assert {k: server.requests[0][k] for k in ("size", "quality", "input_fidelity")} == {
        "size": "1024x1024", "quality": "low", "input_fidelity": "high"}


def test_a_url_reply_is_fetched_and_stretched_to_the_frame(tmp_path):
    def by_url(fields, image):
        return Reply({"created": 0, "data": [{"url": f"{server.url.removesuffix('/v1')}/files/edit.png"}]})

    with ImagesServer(by_url) as server:
        buffer = io.BytesIO()
        Image.new("RGB", (96, 64), RED).save(buffer, format="PNG")
        server.files["/files/edit.png"] = buffer.getvalue()
        run_dir, counts = start_run(config(tmp_path, server, n=1, response_format="url"), progress=False)
    assert counts["ok"] == 1 and server.requests[0]["response_format"] == "url"
    image = Image.open(run_dir / read_cells(run_dir)["output_path"].iloc[0])
    assert image.size == (64, 64) and np.all(np.asarray(image) == RED), "another aspect ratio: stretched to the frame"


def test_a_500_is_retried_and_a_429_waits_for_its_retry_after(tmp_path):
    replies = iter([Reply({"error": {"message": "boom"}}, 500),
                    Reply({"error": "slow down"}, 429, headers={"Retry-After": "1"})])

    def flaky(fields, image):
        return next(replies, None) or red(fields, image)

    with ImagesServer(flaky) as server:
        started = time.perf_counter()
        run_dir, counts = start_run(config(tmp_path, server, n=1, retries=2), progress=False)
        waited = time.perf_counter() - started
    assert counts["ok"] == 1 and len(server.requests) == 3
    assert waited >= 1.0, "Retry-After: 1 is honoured although backoff_s is 0"
    assert retry_after("7") == 7 and retry_after(None) == 0 and retry_after("1e9") == MAX_RETRY_AFTER_S


def test_a_400_fails_its_own_cell_with_the_apis_message_and_a_retry_later_succeeds(tmp_path):
    refuse = {"on": True}

    def picky(fields, image):
        if refuse["on"] and fields["prompt"].endswith("1"):  # the server quotes the key back: it must not be stored
            return Reply({"error": {"message": f"bad prompt (key {KEY})", "type": "invalid_request_error"}}, 400)
        return red(fields, image)

    with ImagesServer(picky) as server:
        run_dir, counts = start_run(config(tmp_path, server, retries=3), progress=False)
        assert counts == {"ok": 2, "failed": 1, "skipped": 0, "already done": 0}
        assert len(server.requests) == 3, "a 400 is not retried, and the batch's other requests are not sent again"
        error = read_cells(run_dir).set_index("sample_id").loc["s1", "error"]
        assert "HTTP 400" in error and "invalid_request_error" in error and "bad prompt" in error
        assert KEY not in error and "<api key>" in error
        assert files_holding(run_dir, KEY) == []
        refuse["on"] = False
        _, again = resume_run(run_dir, progress=False, retry_failed=True)
    assert again["ok"] == 1 and again["already done"] == 2
    assert (read_cells(run_dir)["status"] == "ok").all() and len(read_cells(run_dir)) == 3


def test_a_request_past_its_timeout_fails_its_cell(tmp_path):
    def slow(fields, image):
        return Reply({"created": 0, "data": []}, delay_s=1.5)

    with ImagesServer(slow) as server:
        run_dir, counts = start_run(config(tmp_path, server, n=1, timeout_s=0.3, retries=1), progress=False)
    assert counts["failed"] == 1
    error = read_cells(run_dir)["error"].iloc[0]
    assert "timed out after 2 tries" in error


def test_requests_of_a_batch_run_in_parallel_up_to_the_concurrency(tmp_path):
    with ImagesServer(red, delay_s=0.3) as server:
        _, counts = start_run(config(tmp_path, server, n=4, batch_size=4, concurrency=2), progress=False)
    assert counts["ok"] == 4 and server.max_in_flight == 2


def test_missing_key_or_server_is_a_config_error_before_any_cell(tmp_path, monkeypatch):
    with ImagesServer(red) as server:
        loaded = config(tmp_path, server)
        monkeypatch.delenv(KEY_VAR)
        with pytest.raises(ConfigError, match=KEY_VAR):
            start_run(loaded, progress=False)
    assert server.requests == []
    monkeypatch.setenv(KEY_VAR, KEY)
    with pytest.raises(ConfigError, match="unreachable"):  # the server has stopped
        start_run(loaded, progress=False)
    assert not list((tmp_path / "runs").glob("*")), "no run folder is left behind"


def test_retry_failed_goes_with_resume(tmp_path):
    from click.testing import CliRunner

    from run_bench import main

    result = CliRunner().invoke(main, ["run", str(tmp_path / "config.yaml"), "--retry-failed"])
    assert result.exit_code == 1 and "--resume RUN_DIR" in result.output



def test_a_samples_reference_images_go_after_its_source_as_the_image_array(tmp_path):
    with ImagesServer(red) as server:
        run_config = config(tmp_path, server, n=2)
        manifest = tmp_path / "data" / "manifest.jsonl"
        Image.new("RGB", (96, 48), (0, 0, 250)).save(tmp_path / "data" / "wide.png")
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        lines[1]["reference_images"] = ["wide.png"]
        manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        run_dir, counts = start_run(run_config, progress=False)
    assert counts["ok"] == 2
    plain, with_reference = sorted(server.requests, key=lambda r: r["prompt"])
    assert plain["image"].size == (64, 64) and "image[]" not in plain
    source, reference = with_reference["image[]"]
    assert "image" not in with_reference and source.size == (64, 64)
    assert reference.size[0] == 2 * reference.size[1] and np.asarray(reference)[..., 2].min() > 200  # its own aspect
    store = Store(run_dir)
    warnings = store.info("warnings") or []
    store.close()
    assert not any("reference" in w for w in warnings), "openai_images reads references: no ignored-references warning"
