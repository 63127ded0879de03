"""Judge failure accounting end to end: a loopback endpoint that answers, refuses, filters, times
out, breaks its body or gives garbage and out-of-range scores, one behaviour per instruction;
the report, the export and ``score --retry-failed`` count exactly those, and no request is sent
more than 1 + retries times."""

import json
from collections import Counter

import pytest

from bench.reporting.aggregate import failure_rate_warnings, load_run, summarize
from bench.reporting.report import cells_table, summary_markdown
from tests.chat_server import ChatServer, Reply, completion
from tests.helpers import run_config

RETRIES = 1
BEHAVIOUR = {  # instruction -> the reply to its SC request, and the class it must be counted as
    "make it red": ('{"score": [8, 6]}', "ok"),
    "make it blue": ('{"score": [7, 5]}', "ok"),
    "refuse this": (Reply(completion(None, refusal="I cannot help with that.")), "refused"),
    "filter this": (Reply(completion("", finish_reason="content_filter")), "content_filtered"),
    "filter at the door": (Reply({"error": {"code": "content_filter", "message": "filtered"}}, status=400),
                           "content_filtered"),  # fmt: skip
    "hang": (Reply(completion('{"score": [9, 9]}'), delay_s=1.5), "timeout"),
    "break the body": (Reply(b"<html>proxy error</html>"), "transport_error"),
    "be down": (Reply({"error": {"message": "overloaded"}}, status=503), "transport_error"),
    "ramble": ("I think it is quite good.", "unreadable"),
    "overshoot": ('{"score": [11, 4]}', "out_of_range"),
}


def instruction_in(text: str) -> str:
    return text.rsplit("Editing instruction: ", 1)[1].rstrip("\n")


class Judge:
    """SC by the instruction's behaviour (all answer once ``healthy``); PQ always [9, 6]."""

    healthy = False

    def __call__(self, images, text, body):
        if len(images) == 1:
            return '{"score": [9, 6]}'
        reply, _ = BEHAVIOUR[instruction_in(text)]
        return '{"score": [6, 6]}' if self.healthy and isinstance(reply, Reply) else reply


@pytest.fixture
def faulty_run(tmp_path, monkeypatch):
    from bench.execution.runner import start_run

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    extra = [{"id": f"f{i}", "image": "img0.png", "source_prompt": "a cat", "instruction": text}
             for i, text in enumerate(BEHAVIOUR)]  # fmt: skip
    judge = Judge()
    with ChatServer(judge) as server:
        options = {"backend": "endpoint", "url": server.url, "model": "faulty", "retries": RETRIES, "timeout_s": 0.5,
                   "backoff_s": 0.01}  # fmt: skip
        config = run_config(tmp_path, {"reconstruct": {}}, extra=extra, n=1, metrics=["vie_sc", "vie_pq", "vie_o"],
                            metric_options={"judge": options})  # fmt: skip
        run_dir, _ = start_run(config, progress=False)
        yield run_dir, server, judge


def expected_classes() -> Counter:
    return Counter({**Counter(kind for _, kind in BEHAVIOUR.values()), "no_instruction": 1})  # img0 has none


def test_every_class_is_counted_in_the_report_and_the_export(faulty_run):
    run_dir, server, _ = faulty_run
    sent = Counter(instruction_in(r["messages"][0]["content"][-1]["text"]) for r in server.requests
                   if len(r["messages"][0]["content"]) == 3)  # fmt: skip
    transient = {"hang", "be down"}
    assert sent == {text: 1 + RETRIES if text in transient else 1 for text in BEHAVIOUR}  # never more than 1 + retries

    (row,) = summarize(load_run(run_dir))
    for name in ("vie_sc", "vie_o"):
        stat = row.metrics[name]
        assert Counter({f.kind: f.n for f in stat.failures}) == expected_classes() - Counter(ok=2)
        assert stat.n == 2 and stat.n_nan == len(BEHAVIOUR) - 2 + 1
    assert not row.metrics["vie_pq"].failures and row.metrics["vie_pq"].n == len(BEHAVIOUR) + 1

    table = cells_table(run_dir).set_index("sample_id")
    assert Counter(table["failure.vie_sc"]) == expected_classes()
    assert table.loc["f2", "nan_reason.vie_sc"] == "sc: the judge request failed: the judge refused: I cannot help with that."
    assert "HTTP 503 after 2 tries: overloaded" in table.loc["f7", "nan_reason.vie_o"]
    assert "not JSON: b'<html>proxy error" in table.loc["f6", "nan_reason.vie_sc"]
    assert table.loc["f9", "failure.vie_o"] == "out_of_range" and table.loc["f0", "failure.vie_o"] == "ok"

    text = summary_markdown(run_dir)
    assert "| reconstruct | — | vie_sc | 11 | 10 | 2 | 1 | 1 | 1 | 2 | 2 | 1 | 1 |" in text  # values judged ok classes...
    assert "judge answer class timeout (first: sc: the judge request failed: judge endpoint did not answer" in text


def test_retry_failed_asks_again_only_the_requests_that_got_no_answer(faulty_run):
    from bench.execution.scoring import score_run

    run_dir, server, judge = faulty_run
    before = len(server.requests)
    score_run(run_dir, ["vie_sc", "vie_pq", "vie_o"], progress=False)  # without the flag: nothing is asked
    assert len(server.requests) == before
    judge.healthy = True
    score_run(run_dir, ["vie_sc", "vie_pq", "vie_o"], progress=False, retry_failed=True)
    again = [instruction_in(r["messages"][0]["content"][-1]["text"]) for r in server.requests[before:]]
    no_answer = {text for text, (_, kind) in BEHAVIOUR.items() if kind in
                 {"refused", "content_filtered", "timeout", "transport_error"}}  # fmt: skip
    assert sorted(again) == sorted(no_answer)  # once each; unreadable answers are answers (cached), not retried
    table = cells_table(run_dir).set_index("sample_id")
    assert Counter(table["failure.vie_sc"]) == Counter(ok=2 + len(no_answer), unreadable=1, out_of_range=1,
                                                       no_instruction=1)  # fmt: skip


def test_report_warns_when_rows_failure_rates_differ(faulty_run):
    from dataclasses import replace

    run_dir, _, _ = faulty_run
    (row,) = summarize(load_run(run_dir))
    healthy = replace(row, method="other", metrics={**row.metrics, "vie_sc": replace(row.metrics["vie_sc"], failures=(),
                                                                                      n=10, n_nan=0)})  # fmt: skip
    (warning,) = failure_rate_warnings([row, healthy])
    assert warning.startswith("vie_sc: judge failure rates differ by more than 5 points between rows "
                              "(reconstruct: 80% of 10, other: 0% of 10)")  # fmt: skip
    assert not failure_rate_warnings([row, row])


def test_the_score_command_takes_retry_failed(faulty_run):
    from click.testing import CliRunner

    from run_bench import main

    run_dir, server, judge = faulty_run
    judge.healthy = True
    before = len(server.requests)
    result = CliRunner().invoke(main, ["score", str(run_dir), "--metrics", "vie_sc", "--retry-failed", "--quiet"],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(server.requests) - before == 6  # refused, filtered twice, hung, broken body, down: asked again once each
