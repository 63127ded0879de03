"""What the disk-cached inversions' specs share: the cache key of an inversion of a sample's source image.

Each inversion family defines its spec beside its code (a frozen dataclass subclassing
``InversionSpec``): ``ddim.DDIMInversionSpec`` (kinds ``ddim``, ``negative_prompt``, ``direct``,
one cache entry) and ``ddim.NullTextInversionSpec``, ``ddpm.DDPMInversionSpec``,
``edict.EdictInversionSpec``, ``flow.FlowInversionSpec``, ``rf.RFInversionSpec`` and
``solver_inversion.SolverInversionSpec`` (RF-Solver, FireFlow). A spec holds only the parameters
its inversion depends on; ``cache_params`` names those that change what it computes, so the key
of every entry written before specs existed is unchanged (``tests/test_preparation_specs.py``
pins them).
"""

from dataclasses import replace
from typing import ClassVar

from bench.method import PreparationSpec, cfg_evaluations

#: Bump whenever a change to an inversion changes what it computes: it is part of every cache key.
INVERSION_VERSION = 1


def cache_fields(backbone, sample, steps: int, kind: str, params: dict) -> dict:
    """The cache key of an inversion: every field that changes what it computes."""
    return {
        "version": INVERSION_VERSION,
        "backbone": backbone.fingerprint_id,
        "image": sample.image_hash,
        "source_prompt": sample.source_prompt,
        "steps": steps,
        "kind": kind,
        "params": params,
    }


class InversionSpec(PreparationSpec):
    """An inversion of a sample's source image, kept in the disk cache. Subclasses are frozen
    dataclasses with at least ``steps`` and ``inversion_w``, and set ``kind``."""

    cached: ClassVar[bool] = True
    #: The prompt inverted instead of the sample's source prompt; None: the sample's own. A class
    #: default here, a field of the specs whose methods may invert another prompt (the DDIM family).
    source_prompt: str | None = None

    @property
    def cache_kind(self) -> str:
        """The ``kind`` field of the cache key (kinds that share one computation share one entry)."""
        return self.kind

    def nfe(self) -> int:
        """One guided evaluation per step at ``inversion_w``; inversions that cost otherwise override it."""
        return self.steps * cfg_evaluations(self.inversion_w)

    def cache_params(self) -> dict:
        """The key's ``params``: this spec's parameters that change what the inversion computes."""
        return {"inversion_w": self.inversion_w}

    def source(self, sample):
        """``sample`` with the source prompt this inversion inverts."""
        return sample if self.source_prompt is None else replace(sample, source_prompt=self.source_prompt)

    def cache_key(self, backbone, sample) -> dict:
        return cache_fields(backbone, self.source(sample), self.steps, self.cache_kind, self.cache_params())

    def cache_entry(self) -> tuple:
        return self.cache_kind, self.steps, self.source_prompt, tuple(sorted(self.cache_params().items()))
