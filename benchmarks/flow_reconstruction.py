"""Reconstruction error of flow inversion + regeneration with the source prompt: Euler
(``flow_inversion``) against RF-Solver (``rf_solver``) and FireFlow (``fireflow``).

Each image is inverted with its source prompt and regenerated with the same prompt, at
``w = inversion_w = 1`` and without value sharing (``inject = 0``), from an empty inversion cache.
Per method and step count it prints the mean over images of the latent MSE against the source's
latent, the pixel mean absolute error against the source image and against its VAE round trip
(which isolates the inversion's share of the error), the NFE of inversion plus
regeneration and the seconds they took; the ``VAE only`` row is the floor (encode then decode,
no inversion). On the tiny backbones every number but the NFE is a smoke number: an untrained
transformer's velocity field is not the smooth one the papers' error orderings rely on.

    python benchmarks/flow_reconstruction.py --backbone tiny-sd3 --steps 10 --steps 28
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("flow_inversion", "rf_solver", "fireflow")


@dataclass
class Reconstruction:
    method: str
    steps: int
    latent_mse: float
    pixel_mae: float
    vae_pixel_mae: float
    nfe: int
    seconds: float


def reconstruct(backbone, method_name: str, sample, steps: int):
    """(regenerated latent, NFE, seconds) of inverting ``sample`` and regenerating it with its source prompt."""
    import torch

    from bench.diffusion.inversion.ddim import regenerate_batch
    from bench.diffusion.inversion.solver_inversion import regenerate_shared
    from bench.registry import get_method

    method = get_method(method_name)()
    given = {"steps": steps, "w": 1.0, "inversion_w": 1.0, **({} if method_name == "flow_inversion" else {"inject": 0})}
    setting = method.resolve(given)
    before, start = backbone.nfe.count, time.perf_counter()
    with torch.no_grad():
        inversion = method.prepare(backbone, sample, setting).value
        prompt = [sample.source_prompt]
        if method_name == "flow_inversion":
            latent = regenerate_batch(backbone, [inversion], prompt, prompt, 1.0)
        else:
            latent = regenerate_shared(backbone, [inversion], prompt, 1.0)
    return latent, backbone.nfe.count - before, time.perf_counter() - start


def reconstruction_table(backbone, samples, steps_list) -> list[Reconstruction]:
    """One row per method and step count (means over ``samples``), after the ``VAE only`` floor."""
    import torch

    with torch.no_grad():
        sources = [backbone.encode_image(s.image[None]) for s in samples]
        round_trips = [backbone.decode(z).float() for z in sources]
        floor = sum((x - s.image[None]).abs().mean().item() for x, s in zip(round_trips, samples))
        rows = [Reconstruction("VAE only", 0, 0.0, floor / len(samples), 0.0, 0, 0.0)]
        for steps in steps_list:
            for name in METHODS:
                mse = mae = vae_mae = seconds = 0.0
                nfe = 0
                for z0, round_trip, sample in zip(sources, round_trips, samples):
                    latent, n, s = reconstruct(backbone, name, sample, steps)
                    image = backbone.decode(latent).float()
                    mse += (latent.float() - z0.float()).pow(2).mean().item()
                    mae += (image - sample.image[None]).abs().mean().item()
                    vae_mae += (image - round_trip).abs().mean().item()
                    nfe, seconds = nfe + n, seconds + s
                k = len(samples)
                rows.append(Reconstruction(name, steps, mse / k, mae / k, vae_mae / k, nfe // k, seconds / k))
    return rows


def format_table(rows: list[Reconstruction], smoke: bool) -> str:
    lines = [
        "method | steps | latent MSE | pixel MAE vs source | pixel MAE vs VAE round trip | NFE | seconds",
        "--- | --- | --- | --- | --- | --- | ---",
    ]
    for r in rows:
        steps = "—" if r.method == "VAE only" else str(r.steps)
        lines.append(
            f"{r.method} | {steps} | {r.latent_mse:.3g} | {r.pixel_mae:.4g} | {r.vae_pixel_mae:.3g} | {r.nfe} | {r.seconds:.2f}"
        )
    if smoke:
        lines.append("smoke numbers: an untrained backbone; only the NFE column means anything")
    return "\n".join(lines)


@click.command()
@click.option("--backbone", default="tiny-sd3", show_default=True, help="SD3 backbone name or folder")
@click.option("--dataset", default="sample", show_default=True, help="bundled dataset name")
@click.option("--limit", default=3, show_default=True, help="images of the dataset")
@click.option("--steps", "steps_list", multiple=True, type=int, default=(10, 28), show_default=True,
              help="step counts (repeat the option)")  # fmt: skip
@click.option("--device", default="cpu", show_default=True)
def main(backbone, dataset, limit, steps_list, device):
    with tempfile.TemporaryDirectory(prefix="editbench-flow-recon-") as tmp:
        os.environ["EDITBENCH_CACHE"] = str(
            Path(tmp) / "cache"
        )  # empty: every inversion is computed (a tiny backbone is rebuilt, seeded)
        from bench.data import DatasetSpec, load_dataset
        from bench.diffusion.backbone import Backbone, BackboneSpec

        model = Backbone(BackboneSpec(name=backbone, device=device))
        samples = [ref.load(model.resolution) for ref in load_dataset(DatasetSpec(name=dataset, limit=limit))]
        rows = reconstruction_table(model, samples, steps_list)
    print(f"{backbone}: inversion + regeneration with the source prompt, w = inversion_w = 1, {len(samples)} images")
    print(format_table(rows, smoke="untrained backbone" in model.labels))


if __name__ == "__main__":
    main()
