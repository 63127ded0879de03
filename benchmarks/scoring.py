"""Throughput of per-image scoring: images/s of each metric at metric batch sizes 1, 4 and 16.

Scores random images through ``bench.metrics.image_scores.score_images``, the one path a run and
``editbench score`` take, so the batch size here is ``metric_options.batch_size``. Networks are
built untrained at their real size (``untrained_extractors``): speed does not depend on the weight
values, and no value printed here is a score. On CUDA each timing is bracketed by synchronisation.

    python benchmarks/scoring.py                                   # CPU, 256 px
    python benchmarks/scoring.py --device cuda --size 512 --images 64
"""

import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@click.command()
@click.option("--metrics", default="psnr,ssim,lpips,clip_score", show_default=True, help="comma-separated metrics")
@click.option("--batch-sizes", default="1,4,16", show_default=True, help="metric batch sizes to time")
@click.option("--images", default=16, show_default=True, help="images scored per timing")
@click.option("--size", default=256, show_default=True, help="image side in pixels")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N")
def main(metrics, batch_sizes, images, size, device):
    from bench.data import Sample
    from bench.metrics import MetricOptions, get_metric, load_metrics
    from bench.metrics.extractors import Extractors
    from bench.metrics.image_scores import score_images

    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    edited = [torch.rand(3, size, size, generator=g) for _ in range(images)]
    sources = [torch.rand(3, size, size, generator=g) for _ in range(images)]
    samples = [Sample(f"s{i}", sources[i], "a photo of a cat", "a photo of a dog") for i in range(images)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    print(f"{images} images of {size}x{size} on {device}; untrained networks at their real size (speed only)")
    print(f"images/s\n{'metric':<14}" + "".join(f"{f'batch {b}':>10}" for b in batch_sizes.split(",")))
    for name in metrics.split(","):
        metric = get_metric(name)()
        load_metrics([metric], Extractors(MetricOptions(untrained_extractors=True), device))
        score_images([metric], edited[:1], sources[:1], samples[:1], 1)  # warm-up: kernels, lazy loads
        rates = []
        for batch in (int(b) for b in batch_sizes.split(",")):
            sync()
            started = time.perf_counter()
            score_images([metric], edited, sources, samples, batch)
            sync()
            rates.append(images / (time.perf_counter() - started))
        print(f"{name:<14}" + "".join(f"{rate:>10.1f}" for rate in rates))


if __name__ == "__main__":
    main()
