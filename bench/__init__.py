"""editbench: a benchmark harness for diffusion-based image editing and guidance methods.

This package's top level is the spine every layer uses (errors, parameters, the method
interface, the registry, samples, the store, caches, paths); the layers above it are the
subpackages ``metrics``, ``diffusion``, ``execution`` and ``reporting`` (ARCHITECTURE.md).

It is also the stable face for methods written outside the repository: everything a method
adapter needs is importable from ``bench`` directly (``from bench import Method, register,
denoise``), whichever module it lives in. The names resolve lazily, so importing a spine
module does not load diffusers.
"""

import importlib

__version__ = "0.1.0"

_FACE = {
    # the method interface and its registration
    "Method": "bench.method",
    "EditResult": "bench.method",
    "EditRow": "bench.method",
    "Preparation": "bench.method",
    "PreparationSpec": "bench.method",
    "Conformance": "bench.method",
    "Identity": "bench.method",
    "cfg_evaluations": "bench.method",
    "register": "bench.registry",
    "Param": "bench.params",
    "steps_param": "bench.params",
    "guidance_param": "bench.params",
    "start_level_param": "bench.params",
    "whole_steps": "bench.params",
    "ConfigError": "bench.errors",
    "SampleError": "bench.errors",
    # the sampling helpers a method calls
    "Step": "bench.diffusion.sampling",
    "guided_eps": "bench.diffusion.sampling",
    "text_guided_eps": "bench.diffusion.sampling",
    "encode_prompts": "bench.diffusion.sampling",
    "fresh_noise": "bench.diffusion.sampling",
    "generators": "bench.diffusion.sampling",
    "source_latents": "bench.diffusion.sampling",
    "decode_rows": "bench.diffusion.sampling",
    "split_rows": "bench.diffusion.sampling",
    "partial_timesteps": "bench.diffusion.sampling",
    "prev_timestep": "bench.diffusion.sampling",
    "alpha_bar": "bench.diffusion.sampling",
    "noise_to": "bench.diffusion.sampling",
    "renoise": "bench.diffusion.sampling",
    "denoise": "bench.diffusion.sampling",
    "keep_noised_source": "bench.diffusion.sampling",
    # the preparations a method declares (``Method.preparation``): the inversions' specs
    "InversionSpec": "bench.diffusion.inversion.spec",
    "DDIMInversionSpec": "bench.diffusion.inversion.ddim",
    "NullTextInversionSpec": "bench.diffusion.inversion.ddim",
    "NullTextParams": "bench.diffusion.inversion.ddim",
    "inversion_spec": "bench.diffusion.inversion.ddim",
    "DDPMInversionSpec": "bench.diffusion.inversion.ddpm",
    "EdictInversionSpec": "bench.diffusion.inversion.edict",
    "FlowInversionSpec": "bench.diffusion.inversion.flow",
    "RFInversionSpec": "bench.diffusion.inversion.rf",
    "SolverInversionSpec": "bench.diffusion.inversion.solver_inversion",
}
__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name not in _FACE:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    return getattr(importlib.import_module(_FACE[name]), name)


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
