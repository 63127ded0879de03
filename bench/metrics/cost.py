"""Cost per cell, measured by the runner (``bench.timing``) and exposed as metrics: wall
seconds, GPU seconds (CUDA events) and peak GPU memory on CUDA, NFE and gradient evaluations."""

from bench.metrics.base import CostMetric

NOT_MEASURED = "the method does not measure its cost (its images are made elsewhere)"


class WallTime(CostMetric):
    name, column = "time_s", "time_s"
    higher_is_better = False
    nan_reason = NOT_MEASURED
    description = "wall-clock seconds of the edit (preparation reported apart as prep_time_s)"


class GPUTime(CostMetric):
    name, column = "gpu_time_s", "gpu_time_s"
    higher_is_better = False
    nan_reason = f"the cell did not run on CUDA, or {NOT_MEASURED}"
    description = "GPU seconds of the edit, between CUDA events"


class PeakMemory(CostMetric):
    name, column = "peak_mem_mb", "peak_mem_mb"
    higher_is_better = False
    nan_reason = f"the cell did not run on CUDA, or {NOT_MEASURED}"
    description = "peak GPU memory allocated during the edit (MiB)"


class NFE(CostMetric):
    name, column = "nfe", "nfe"
    higher_is_better = False
    nan_reason = NOT_MEASURED
    description = "UNet evaluations of one latent during the edit (a CFG step of batch 1 is 2)"


class GradEvals(CostMetric):
    name, column = "grad_evals", "grad_evals"
    higher_is_better = False
    nan_reason = NOT_MEASURED
    description = "backward passes through the UNet (e.g. null-text optimisation)"


METRICS = (WallTime, GPUTime, PeakMemory, NFE, GradEvals)
