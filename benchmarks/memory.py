"""Peak memory of null-text inversion and of a Prompt-to-Prompt edit on a full-size SD 1.5 backbone.

Two parts, each in its own process so that each peak is its own:

- ``null_text``: ``bench.diffusion.inversion.ddim.prepare_inversion`` of one sample, first the DDIM pivot
  (VAE encode + inversion), then the null-text optimisation (``inner_steps`` forward and
  backward passes per step; early stopping off, so every inner step runs).
- ``p2p``: ``methods/p2p.py`` (through the registry) over that null-text inversion, read
  back from the disk cache the first part wrote: CFG over source and target (UNet batch 4),
  cross- and self-attention injected at every step (the most attention work a step can do),
  local blend on the sample's edit words and the attention-map picture, both of which keep
  cross-attention maps; then the VAE decode.

The backbone is SD 1.5's architecture (UNet, AutoencoderKL, CLIP ViT-L/14 text encoder,
DDIM) with **random weights**, written once with ``save_pretrained`` (safetensors, about
4.3 GB in fp32) into ``--model-dir`` and loaded through ``bench.diffusion.backbone.Backbone``, the
``from_pretrained`` path real checkpoints take. Memory does not depend on the weights'
values, so these are memory numbers only; images from it mean nothing. ``--backbone FOLDER``
measures a real SD pipeline folder instead.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``; on CPU the
process's peak resident set (``VmHWM``, the figure ``getrusage``'s ``ru_maxrss`` reports),
which counts the weights (memory-mapped from the safetensors files, so every weight is
paged in before the baseline is taken), so the increase over the resident set after loading
is shown too; memory in use on CPU is the resident set after ``malloc_trim`` hands freed heap
memory back. The counters are reset at every UNet call at a new timestep (and at each VAE
call), giving one row per step: a graph or maps held across steps would show as memory in
use growing from step to step, and as later steps peaking higher. CPU fp16 is slow or
unsupported, so CPU runs default to fp32: an upper bound for fp16 on a GPU, where the
activations take half the bytes.

    python benchmarks/memory.py                                  # cuda fp16 if there is a GPU, else cpu fp32
    python benchmarks/memory.py --device cpu --steps 2 --inner-steps 2
    python benchmarks/memory.py --backbone /path/to/stable-diffusion-v1-5 --dtype fp16

``--flux-params`` prints instead the parameter bytes of every component of a full-size FLUX.1 [dev]
pipeline, counted from its architecture on the meta device (accelerate's ``init_empty_weights``):
no weight is allocated, so it runs anywhere in seconds. The architecture: the transformer from
black-forest-labs/flux ``util.py`` (``flux-dev``: 19 double- and 38 single-stream blocks, width
3072, guidance embedding), its autoencoder (``ch`` 128, ``ch_mult`` 1, 2, 4, 4, 16 latent channels),
CLIP ViT-L/14's text encoder and T5 v1.1 XXL's encoder (d_model 4096, d_ff 10240, 24 layers, 64
heads, gated GELU).

    python benchmarks/memory.py --flux-params
"""

import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTS = ("null_text", "p2p")
GIB = 2**30


# -- FLUX.1 [dev]'s parameter bytes, without weights -----------------------------------------------
def flux_dev_components() -> dict[str, torch.nn.Module]:
    """FLUX.1 [dev]'s four networks at full size on the meta device (no memory allocated)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with init_empty_weights():
        return {
            "transformer": FluxTransformer2DModel(
                patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56),
            ),
            "vae": AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
            ),
            "text_encoder (CLIP-L)": CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                max_position_embeddings=77, hidden_act="quick_gelu",
            )),
            "text_encoder_2 (T5-XXL)": T5EncoderModel(T5Config(
                vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu",
            )),
        }  # fmt: skip


def print_flux_params() -> None:
    """Parameters and their bytes per component of FLUX.1 [dev], in fp32 and bf16/fp16."""
    rows = [(name, sum(p.numel() for p in model.parameters())) for name, model in flux_dev_components().items()]
    rows.append(("total", sum(n for _, n in rows)))
    print(f"{'component':26}{'parameters':>16}{'fp32 GiB':>10}{'bf16 GiB':>10}")
    for name, n in rows:
        print(f"{name:26}{n:>16,}{gib(4 * n):>10}{gib(2 * n):>10}")
    print("parameter bytes only, counted on the meta device: activations, the CUDA context and the allocator come on top")


# -- the random full-size backbone ------------------------------------------------------------------
def default_model_dir() -> Path:
    return Path(os.environ.get("EDITBENCH_CACHE") or tempfile.gettempdir()) / "editbench-memory-sd15-random"


def build_random_sd15(folder: Path) -> None:
    """Write an SD 1.5-architecture pipeline with seeded random weights (fp32) to ``folder``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.diffusion.tiny import write_pipeline
    from bench.tokenizer import CLIP_VOCAB_SIZE

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    write_pipeline(folder, unet, vae, text_encoder)


# -- measuring ---------------------------------------------------------------------------------------
def _proc_status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


class MemoryTrace:
    """Peak and in-use memory of this process, one row per segment of work.

    A segment is a run of UNet calls at one timestep (one step), or of VAE encoder or decoder
    calls, within a named phase; work before a segment's first call belongs to it. At every
    boundary the row takes the peak since the segment began and the memory in use, and the
    peak counter is reset (CUDA: ``reset_peak_memory_stats``; CPU: ``/proc/self/clear_refs``).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._libc = None if self.cuda else ctypes.CDLL("libc.so.6")
        self.rows: list[dict] = []
        self._phase: str | None = None
        self._what = "start"
        self._calls = self._grad_calls = 0

    def in_use(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated()
        self._libc.malloc_trim(0)  # hand freed heap memory back first, so the resident set is what is live
        return _proc_status_bytes("VmRSS")

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS

    def _close(self) -> None:
        if self._phase is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
            peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        else:
            peak, reserved = _proc_status_bytes("VmHWM"), None
        self.rows.append(
            dict(phase=self._phase, what=self._what, calls=self._calls, grad_calls=self._grad_calls,
                 peak=peak, peak_reserved=reserved, in_use=self.in_use())
        )  # fmt: skip
        self._reset()

    def _enter(self, what: str) -> None:
        if what != self._what:
            if self._calls:
                self._close()
                self._calls = self._grad_calls = 0
            self._what = what
        self._calls += 1
        self._grad_calls += torch.is_grad_enabled()

    def start(self, phase: str) -> None:
        """End the current segment (if any) and begin ``phase``; the first call starts counting."""
        if self._phase is None:
            self._reset()
        else:
            self._close()
        self._phase, self._what, self._calls, self._grad_calls = phase, "start", 0, 0

    def stop(self) -> None:
        self._close()
        self._phase = None

    def watch(self, backbone) -> None:
        def unet_call(module, args, kwargs):
            self._enter(f"t={int(args[1] if len(args) > 1 else kwargs['timestep'])}")

        backbone.unet.register_forward_pre_hook(unet_call, with_kwargs=True)
        backbone.vae.encoder.register_forward_pre_hook(lambda *_: self._enter("VAE encode"))
        backbone.vae.decoder.register_forward_pre_hook(lambda *_: self._enter("VAE decode"))


# -- one part, in a child process ----------------------------------------------------------------------
def p2p_setting(steps: int, inner_steps: int) -> dict:
    from bench.registry import get_method

    return get_method("p2p").resolve(
        {
            "steps": steps,
            "inversion": "null_text",
            "inner_steps": inner_steps,
            "early_stop": 0.0,  # every inner step runs: the optimisation's full cost
            "early_stop_slope": 0.0,
            "cross_replace_steps": 1.0,
            "self_replace_steps": 1.0,
            "blend_words": "auto",
            "attention_maps": True,
        }
    )


def run_part(part: str, folder: str, device: str, dtype: str, size: int, steps: int, inner_steps: int, sample_id: str):
    """Load the backbone, run ``part`` under a ``MemoryTrace``; the result as a JSON-able dict."""
    from bench.data import DatasetSpec, load_dataset
    from bench.diffusion.backbone import Backbone, BackboneSpec
    from bench.diffusion.inversion.ddim import prepare_inversion
    from bench.registry import get_method
    from methods.null_text_inversion import null_text_params

    t0 = time.perf_counter()
    backbone = Backbone(BackboneSpec(name=folder, device=device, dtype=dtype, resolution=size))
    with torch.no_grad():  # page every weight in, so the resident set after loading holds all of them
        for module in (backbone.unet, backbone.vae, backbone.text_encoder):
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.sum()
    load_s = time.perf_counter() - t0
    refs = {ref.id: ref for ref in load_dataset(DatasetSpec(name="sample"))}
    sample = refs[sample_id].load(backbone.resolution)
    setting = p2p_setting(steps, inner_steps)
    trace = MemoryTrace(backbone.device)
    trace.watch(backbone)
    loaded = trace.in_use()
    notes = []
    t0 = time.perf_counter()
    if part == "null_text":
        trace.start("DDIM inversion")
        ddim = prepare_inversion(backbone, sample, "ddim", steps)
        trace.start("null-text optimisation")
        nti = prepare_inversion(backbone, sample, "null_text", steps, nti=null_text_params(setting))
        if ddim.cache_hit or nti.cache_hit:
            raise SystemExit("the inversion came from the cache: nothing was measured")
    else:
        method = get_method("p2p")()
        prep = method.prepare(backbone, sample, setting)
        if not prep.cache_hit:
            raise SystemExit("p2p's null-text inversion was not in the cache the null_text part wrote")
        trace.start("p2p edit")
        result = method.edit(backbone, sample, prep.value, setting, torch.Generator("cpu").manual_seed(0))
        notes.append(f"local blend on {sample.edit_words[0]!r} -> {sample.edit_words[1]!r}")
        notes += [f"{name} picture {picture.size[0]}x{picture.size[1]}" for name, picture in result.artifacts.items()]
    trace.stop()
    return dict(part=part, device=str(backbone.device), dtype=dtype, size=backbone.resolution, steps=steps,
                inner_steps=inner_steps, loaded=loaded, rows=trace.rows, load_s=load_s,
                wall_s=time.perf_counter() - t0, notes=notes)  # fmt: skip


# -- the report ------------------------------------------------------------------------------------------
def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def print_report(results: list[dict], weights_label: str, cuda: bool) -> None:
    print(f"weights: {weights_label}")
    cols = ["part", "device", "dtype", "size", "steps", "after load GiB", "peak GiB", "peak over load GiB"]
    cols += ["peak reserved GiB"] if cuda else []
    cols += ["wall s"]
    lines = []
    for r in results:
        peak = max(row["peak"] for row in r["rows"])
        line = [r["part"], r["device"], r["dtype"], str(r["size"]), str(r["steps"])]
        line += [gib(r["loaded"]), gib(peak), gib(peak - r["loaded"])]
        line += [gib(max(row["peak_reserved"] for row in r["rows"]))] if cuda else []
        lines.append(line + [f"{r['wall_s']:.0f}"])
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    for line in [cols, *lines]:
        print("  ".join(v.rjust(w) for v, w in zip(line, widths)))
    what = "GPU memory allocated (reserved: held from the driver)" if cuda else "resident set size (VmHWM / ru_maxrss)"
    print(f"memory: {what}; 'after load' = weights and state before the part; wall s: the part, without loading")
    if not cuda:
        print(f"CPU {results[0]['dtype']}: an upper bound for fp16 on a GPU (activations take half the bytes)")
    for r in results:
        print(f"\n{r['part']}: per step (peak since the previous row; in use at the row's end)"
              + (f"; {', '.join(r['notes'])}" if r["notes"] else ""))  # fmt: skip
        print(f"  {'phase':24}{'segment':>12}{'UNet/VAE calls':>16}{'with grad':>11}{'peak GiB':>10}{'in use GiB':>12}")
        for row in r["rows"]:
            print(f"  {row['phase']:24}{row['what']:>12}{row['calls']:>16}{row['grad_calls']:>11}"
                  f"{gib(row['peak']):>10}{gib(row['in_use']):>12}")  # fmt: skip
        for phase in dict.fromkeys(row["phase"] for row in r["rows"]):
            steps = [row for row in r["rows"] if row["phase"] == phase and row["what"].startswith("t=")]
            if len(steps) > 1:
                first, last = steps[0], steps[-1]
                print(f"  {phase}, first step -> last step: peak {gib(first['peak'])} -> {gib(last['peak'])} GiB, "
                      f"in use {gib(first['in_use'])} -> {gib(last['in_use'])} GiB")  # fmt: skip


@click.command()
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="default: cuda if available, else cpu")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="default: fp16 on cuda, fp32 on cpu")
@click.option("--size", default=512, show_default=True, help="image resolution")
@click.option("--steps", default=3, show_default=True, help="DDIM steps (peak per step is what matters)")
@click.option("--inner-steps", default=2, show_default=True, help="null-text Adam iterations per step")
@click.option("--sample", "sample_id", default="chelsea", show_default=True, help="id in the bundled 'sample' set")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None,
              help="folder of the random SD 1.5 pipeline, built if absent  [default: $EDITBENCH_CACHE or the temp dir]")
@click.option("--backbone", default=None, help="a real SD pipeline folder (or hub id) to measure instead")
@click.option("--flux-params", is_flag=True, help="print FLUX.1 [dev]'s parameter bytes per component (no weights) and exit")
@click.option("--part", type=click.Choice(PARTS), default=None, hidden=True)
@click.option("--result", type=click.Path(path_type=Path), default=None, hidden=True)
def main(device, dtype, size, steps, inner_steps, sample_id, model_dir, backbone, flux_params, part, result):
    if flux_params:
        print_flux_params()
        return
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("fp16" if device == "cuda" else "fp32")
    if part is not None:  # a child: measure one part, write its result
        result.write_text(json.dumps(run_part(part, backbone, device, dtype, size, steps, inner_steps, sample_id)))
        return
    if backbone is None:
        folder = model_dir or default_model_dir()
        if not (folder / "model_index.json").is_file():
            click.echo(f"building a random SD 1.5 pipeline in {folder} (about 4.3 GB) ...", err=True)
            t0 = time.perf_counter()
            build_random_sd15(folder)
            click.echo(f"built in {time.perf_counter() - t0:.0f} s", err=True)
        backbone = str(folder)
        weights_label = "random (SD 1.5 architecture): memory numbers only, independent of weight values"
    else:
        weights_label = backbone
    results = []
    with tempfile.TemporaryDirectory(prefix="editbench-memory-") as tmp:
        env = {**os.environ, "EDITBENCH_CACHE": tmp}  # empty: the null_text part computes, p2p reads it back
        for name in PARTS:
            out = Path(tmp) / f"{name}.json"
            args = ["--part", name, "--result", str(out), "--backbone", backbone, "--device", device,
                    "--dtype", dtype, "--size", str(size), "--steps", str(steps), "--inner-steps", str(inner_steps),
                    "--sample", sample_id]  # fmt: skip
            click.echo(f"measuring {name} ...", err=True)
            subprocess.run([sys.executable, __file__, *args], env=env, check=True)
            results.append(json.loads(out.read_text()))
            loaded_s, ran_s = results[-1]["load_s"], results[-1]["wall_s"]
            click.echo(f"{name}: loaded in {loaded_s:.0f} s, ran in {ran_s:.0f} s", err=True)
    print_report(results, weights_label, device == "cuda")


if __name__ == "__main__":
    main()
