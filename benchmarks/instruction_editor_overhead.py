"""The instruction editors' adapter overhead: one cell through the method (``edit_batch``, as the
worker calls it) against the same work done by calling the diffusers pipeline directly.

For each instruction editor on its embedded tiny checkpoint (CPU, fp32), the same sample, seed,
size and steps go through both paths in alternation, ``--repeats`` times after a warm-up call
each, the first of each pair swapping every repeat: a call right after the other path's ran up
to ~10% faster here (qwen_image_edit, 6 pairs: adapter first +10.5%, direct first -12.0%), so a
fixed order measured the order. The figure is the ratio of median times minus 1 (goal: at most
5% per cell, issue 35).
The direct path is the pipeline ``from_pretrained`` from the checkpoint's folder, built once;
the adapter builds its pipeline object over the backbone's networks per batch, as in a run.

LongCat's pipeline takes no size (it makes ~1024² px, here from the tiny VAE's rule) and the
adapter resizes its output to the sample's, so that resize is part of the overhead measured.

    python benchmarks/instruction_editor_overhead.py            # every instruction editor
    python benchmarks/instruction_editor_overhead.py --repeats 20 --method kontext
"""

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Editor:
    """How to run one instruction editor both ways."""

    tiny: str  # its embedded tiny backbone
    pipeline: str  # the diffusers pipeline class called directly
    setting: dict  # the method's setting
    direct: dict  # keyword arguments of the direct call besides image, prompt, generator and size
    takes_size: bool = True  # the pipeline takes height/width (LongCat's does not)
    image_list: bool = False  # the pipeline takes a list of images (Qwen-Image-Edit-Plus)
    method: str = ""  # the editbench method, when it is not the entry's name (FLUX.2 [dev] runs ``flux2``)


QWEN_CFG = {"negative_prompt": " ", "true_cfg_scale": 4.0, "num_inference_steps": 2}
EDITORS = {
    "kontext": Editor("tiny-kontext", "FluxKontextPipeline", {"steps": 4},
                      {"guidance_scale": 2.5, "num_inference_steps": 4, "_auto_resize": False}),
    "qwen_image_edit": Editor("tiny-qwen-image-edit", "QwenImageEditPipeline", {"steps": 2}, QWEN_CFG),
    "qwen_image_edit_plus": Editor("tiny-qwen-image-edit-plus", "QwenImageEditPlusPipeline", {"steps": 2}, QWEN_CFG,
                                   image_list=True),
    "flux2": Editor("tiny-flux2-klein", "Flux2KleinPipeline", {"steps": 4},
                    {"guidance_scale": 4.0, "num_inference_steps": 4}),
    "flux2_dev": Editor("tiny-flux2-dev", "Flux2Pipeline", {"steps": 4},
                        {"guidance_scale": 4.0, "num_inference_steps": 4}, method="flux2"),
    "longcat_edit": Editor("tiny-longcat", "LongCatImageEditPipeline", {"steps": 4},
                           {"guidance_scale": 4.5, "num_inference_steps": 4}, takes_size=False),
}  # fmt: skip
WIDTH, HEIGHT = 144, 112


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(editor_name: str, repeats: int) -> tuple[float, float]:
    """(median seconds per cell through the adapter, median seconds calling the pipeline directly)."""
    import diffusers

    from bench.diffusion.backbone import Backbone, BackboneSpec
    from bench.method import EditRow
    from bench.registry import get_method
    from bench.samples import Sample
    from methods.kontext import pil_image

    editor = EDITORS[editor_name]
    method_name = editor.method or editor_name
    backbone = Backbone(BackboneSpec(name=editor.tiny, device="cpu", dtype="fp32"))
    method = get_method(method_name)()
    setting = method.resolve(editor.setting, backbone.family_name)
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    image = (image * 255).round() / 255  # an 8-bit image, as samples are
    sample = Sample("bench", image, "a photo", instruction="make it red")
    pipe = getattr(diffusers, editor.pipeline).from_pretrained(backbone.folder)
    pipe.set_progress_bar_config(disable=True)
    size = {"height": HEIGHT, "width": WIDTH} if editor.takes_size else {}
    if method_name == "kontext":
        size["max_area"] = HEIGHT * WIDTH

    def adapter():
        method.edit_batch(backbone, [EditRow(sample, None, torch.Generator().manual_seed(1))], setting)

    def direct():
        source = pil_image(sample.image)
        pipe(image=[source] if editor.image_list else source, prompt=sample.instruction,
             generator=torch.Generator().manual_seed(1), output_type="pt", **size, **editor.direct)  # fmt: skip

    adapter(), direct()  # warm-up
    paths = {"adapter": adapter, "direct": direct}
    times = {"adapter": [], "direct": []}
    for repeat in range(repeats):
        for name in ("adapter", "direct") if repeat % 2 == 0 else ("direct", "adapter"):
            times[name].append(_timed(paths[name]))
    return statistics.median(times["adapter"]), statistics.median(times["direct"])


@click.command()
@click.option("--repeats", default=10, show_default=True,
              help="timed calls per path and method (even: each path first as often)")
@click.option("--method", "editors", multiple=True, type=click.Choice(list(EDITORS)),
              help="an editor (flux2_dev: flux2 on FLUX.2 [dev]); default: all")
def main(repeats: int, editors: tuple[str, ...]):
    torch.set_num_threads(1)
    print(f"| method | adapter s/cell | pipeline s/cell | overhead | ({repeats} alternating calls each, CPU, fp32, "
          f"{WIDTH}x{HEIGHT}) |\n|---|---|---|---|---|")  # fmt: skip
    for name in editors or EDITORS:
        adapter, direct = measure(name, repeats)
        print(f"| {name} | {adapter:.4f} | {direct:.4f} | {adapter / direct - 1:+.1%} | |")


if __name__ == "__main__":
    main()
