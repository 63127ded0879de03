"""Where a backbone's networks wait between calls: on the compute device, or on the CPU.

Two ways to keep GPU memory down, both recorded in the manifest (``BackboneSpec``):

- ``offload_encoders`` (``backbone.offload_text_encoders``): each text/vision encoder waits on the
  CPU and is on the compute device only during its own forward call; the denoiser and the VAE
  stay resident. It is installed as hooks on the encoder modules themselves, so it holds wherever
  they are called from: the backbone's ``encode_text`` (SD, SDXL, SD3, FLUX.1) or an instruction
  editor's diffusers pipeline (Kontext, Qwen-Image-Edit, FLUX.2, LongCat), with no method's code
  involved. A call with inputs on the CPU (diffusers reads an encoder's device to place the token
  ids) gets them moved to the compute device with the weights.
- ``model_cpu_offload`` (``backbone.cpu_offload``): diffusers' ``enable_model_cpu_offload``,
  every network on the CPU until it runs, the previous one sent back then.

Neither changes a number: the same weights compute on the same device.
"""

import torch


def offload_encoders(encoders: list[torch.nn.Module], device: torch.device, offload_device: str = "cpu") -> None:
    """Keep each of ``encoders`` on ``offload_device``, moving it to ``device`` for each forward call
    and back after it (also when the call raises, so a failed cell leaves no encoder behind)."""
    for encoder in encoders:
        encoder.to(offload_device)
        encoder.register_forward_pre_hook(_onload(device), with_kwargs=True)
        encoder.register_forward_hook(_offload(offload_device), always_call=True)


def _onload(device: torch.device):
    from accelerate.utils import send_to_device

    def hook(module, args, kwargs):
        module.to(device)
        return send_to_device(args, device), send_to_device(kwargs, device)

    return hook


def _offload(offload_device: str):
    def hook(module, args, output):
        module.to(offload_device)

    return hook


def model_cpu_offload(models: list[torch.nn.Module], device: torch.device) -> None:
    """diffusers' ``enable_model_cpu_offload``: a chain of accelerate hooks that moves each model to
    ``device`` when it runs and the previous one back to the CPU."""
    from accelerate import cpu_offload_with_hook

    hook = None
    for model in models:
        _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
