"""Judge throughput: judgments/s of the endpoint backend against a server with a fixed latency.

A loopback OpenAI-compatible server (``tests/chat_server.py``, in its own process so it does not
share the client's interpreter) answers every request after exactly ``--latency`` seconds. The
``vie_pq`` metric scores distinct random images through ``score_images`` (the path of a run and
of ``editbench score``) at each ``concurrency``, with the judgment cache on (empty at the start
of each timing: every image is a miss and is written) and the default retries, after a first
batch of ``max(concurrency)`` other images that starts the judge's threads as a run's first
batch does. The ideal is
``concurrency / latency`` judgments/s; the goal is at least 80 % of it. A batch holds every image
(``metric_options.batch_size`` = ``--images``): requests in flight are bounded by the batch, so
a run's judge throughput is at most ``min(concurrency, batch_size) / latency``.

    python benchmarks/judge_throughput.py                       # latency 1 s, concurrency 8 and 32
    python benchmarks/judge_throughput.py --latency 0.25 --concurrency 4,16,64 --images 256
"""

import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def serve(latency: float, urls, stop) -> None:
    """Run the fixed-latency server until ``stop`` is set; its URL goes to ``urls``."""
    from tests.chat_server import ChatServer

    with ChatServer(lambda images, text, body: '{"score": [9, 6], "reasoning": "fixed"}', delay_s=latency) as server:
        urls.put(server.url)
        stop.wait()


def judgments_per_second(url: str, concurrency: int, edited, sources, samples, warm: int) -> float:
    """Judgments/s of ``vie_pq`` over the images after the first ``warm`` (which start the
    judge's threads, as the first batch of a run does)."""
    from bench.metrics import MetricOptions, get_metric, load_metrics
    from bench.metrics.extractors import Extractors
    from bench.metrics.image_scores import score_images

    with tempfile.TemporaryDirectory() as cache:
        os.environ["EDITBENCH_CACHE"] = cache  # an empty judgment cache: every image is asked and written
        options = MetricOptions(batch_size=len(edited), judge={"backend": "endpoint", "url": url, "model": "fixed",
                                                               "concurrency": concurrency})  # fmt: skip
        metric = get_metric("vie_pq")()
        load_metrics([metric], Extractors(options))
        score_images([metric], edited[:warm], sources[:warm], samples[:warm], warm)
        started = time.perf_counter()
        scores = score_images([metric], edited[warm:], sources[warm:], samples[warm:], len(edited))
        elapsed = time.perf_counter() - started
    assert all(s.values["vie_pq"] == 6 for s in scores), "the fixed server's answer must read as PQ 6"
    return len(scores) / elapsed


@click.command()
@click.option("--latency", default=1.0, show_default=True, help="the server's fixed answer time, seconds")
@click.option("--concurrency", "levels", default="8,32", show_default=True, help="judge.concurrency values to time")
@click.option("--images", default=128, show_default=True, help="distinct images judged per timing (one batch)")
@click.option("--size", default=64, show_default=True, help="image side in pixels")
def main(latency, levels, images, size):
    from bench.data import Sample

    g = torch.Generator().manual_seed(0)
    concurrencies = [int(c) for c in levels.split(",")]
    warm = max(concurrencies)
    edited = [torch.rand(3, size, size, generator=g) for _ in range(warm + images)]
    sources = [torch.rand(3, size, size, generator=g) for _ in range(warm + images)]
    samples = [Sample(f"s{i}", s, "a cat", "a dog", instruction="make it a dog") for i, s in enumerate(sources)]
    urls, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(latency, urls, stop), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=60)
        print(f"{images} distinct {size}x{size} images, server latency {latency:g} s, cache on, retries 3")
        print(f"{'concurrency':>11} {'judgments/s':>12} {'ideal':>8} {'of ideal':>9}")
        for concurrency in concurrencies:
            rate = judgments_per_second(url, concurrency, edited, sources, samples, warm)
            ideal = concurrency / latency
            print(f"{concurrency:>11} {rate:>12.1f} {ideal:>8.1f} {rate / ideal:>9.0%}")
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
