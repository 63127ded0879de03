"""Preparation specs: the disk-cache keys of the entries written before specs existed stay valid,
and a method declares its preparation with the one hook ``Method.preparation``."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from bench import cache
from bench.errors import ConfigError
from bench.method import Method, PreparationSpec
from bench.registry import all_methods, get_method, register

@dataclass(frozen=True)
class _KeyedSample:
    """What a cache key reads of a ``bench.data.Sample``."""

    image_hash: str
    source_prompt: str


BACKBONE = SimpleNamespace(fingerprint_id="fp0123456789abcd")
SAMPLE = _KeyedSample(image_hash="img0hash", source_prompt="a cat")
BASE = {"version": 1, "backbone": "fp0123456789abcd", "image": "img0hash", "source_prompt": "a cat"}

#: Computed once with the code before specs (``InversionSpec(...).cache_key``, EDICT's ``cache_fields``):
#: (method, given setting) -> the key fields and the cache entry's file name.
PINNED = {
    ("ddim_inversion", ()): (
        {"steps": 50, "kind": "ddim", "params": {"inversion_w": 1.0}},
        "8f0d7a4daf96ffb5d80051ec11e353ccda46c8a4095c9807c070cb7e3ee759af",
    ),
    ("null_text_inversion", ()): (
        {"steps": 50, "kind": "null_text", "params": {
            "inversion_w": 1.0, "w": 7.5, "inner_steps": 10, "lr": 0.01, "lr_decay": 0.01, "early_stop": 1e-05,
            "early_stop_slope": 2e-05}},
        "bbec2d2306ee4c4285bf5cd0467d804ebb879055442bee779e766d3155c84aa4",
    ),
    ("ddpm_inversion", ()): (
        {"steps": 50, "kind": "ddpm", "params": {"inversion_w": 1.0, "noise_seed": 0}},
        "ab93e379b317f6c1846c11b66300ef438da6041694253a58dddeef35063bf7fd",
    ),
    ("flow_inversion", (("steps", 28),)): (
        {"steps": 28, "kind": "flow", "params": {"inversion_w": 1.0}},
        "bbb9730ca689ae68b26c7de83a81835f1b1cfb48a3993bb6b2d0744012e321ef",
    ),
    ("rf_inversion", ()): (
        {"steps": 28, "kind": "rf", "params": {"inversion_w": 0.0, "noise_seed": 0, "gamma": 0.5}},
        "41a1ee9c73c5688b80b65581df19f850c1012dc7ad4ff8b66a575bcf310416bf",
    ),
    ("rf_solver", (("steps", 25),)): (
        {"steps": 25, "kind": "rf_solver", "params": {"inversion_w": 1.0}},
        "ae6c6380810245a87bf95fdb3803f7579eac0cdc7a020025d24b9b9e1a1c94b0",
    ),
    ("fireflow", (("steps", 8),)): (
        {"steps": 8, "kind": "fireflow", "params": {"inversion_w": 1.0}},
        "f5edafe22559011e5b1b7a3fee17dba307349077e9258f9067beb334088c55b9",
    ),
    ("edict", (("steps", 50),)): (
        {"steps": 50, "kind": "edict", "params": {"inversion_w": 3.0, "p": 0.93, "strength": 1.0, "leapfrog": False}},
        "f32ddb837da9292be7acd75adc2557e7f780d2a98ec9cd46c805813d25b897a1",
    ),
    ("edict", (("steps", 50), ("own_scheduler", True))): (
        {"steps": 50, "kind": "edict", "params": {
            "inversion_w": 3.0, "p": 0.93, "strength": 1.0, "leapfrog": False, "own_scheduler": True}},
        "a0ad815e5f5b2b0c3b453c5eafe57284dd782c6d99e202c384f67f85dfd43195",
    ),
}  # fmt: skip


@pytest.mark.parametrize("method, given", list(PINNED), ids=[f"{m}-{i}" for i, (m, _) in enumerate(PINNED)])
def test_the_specs_keep_the_cache_keys_of_earlier_entries(method, given):
    fields, entry = PINNED[method, given]
    cls = get_method(method)
    spec = cls.preparation(cls.resolve(dict(given)))
    key = spec.cache_key(BACKBONE, SAMPLE)
    assert key == {**BASE, **fields}
    assert cache.entry_path(key).name == f"{entry}.safetensors"


@pytest.mark.parametrize("inversion", ["ddim", "negative_prompt", "direct", "null_text", "ddpm"])
def test_p2p_and_the_over_inversion_editors_share_the_inversion_methods_entries(inversion):
    """The DDIM-family kinds share the DDIM entry; p2p's null-text and ddpm inversions are the methods' own."""
    own = {"null_text": "null_text_inversion", "ddpm": "ddpm_inversion"}.get(inversion, "ddim_inversion")
    fields, entry = PINNED[own, ()]
    editors = ["p2p"] if inversion == "ddpm" else ["p2p", "masactrl", "pnp", "pix2pix_zero"]
    for name in editors:
        cls = get_method(name)
        spec = cls.preparation(cls.resolve({"steps": 50, "inversion": inversion, "inversion_w": 1.0}))
        assert spec.cache_key(BACKBONE, SAMPLE) == {**BASE, **fields}, name
        assert cache.entry_path(spec.cache_key(BACKBONE, SAMPLE)).name == f"{entry}.safetensors", name


def test_a_literal_source_prompt_is_part_of_the_spec_and_its_key():
    masactrl = get_method("masactrl")
    plain = masactrl.preparation(masactrl.resolve({"steps": 50, "inversion": "ddim"}))
    literal = masactrl.preparation(masactrl.resolve({"steps": 50, "inversion": "ddim", "source_prompt": ""}))
    assert literal != plain and literal.cached
    assert literal.cache_key(BACKBONE, SAMPLE) == {**BASE, **PINNED["ddim_inversion", ()][0], "source_prompt": ""}
    assert masactrl.estimate_nfe(masactrl.resolve({"steps": 50, "source_prompt": ""}))[1] == 50
    pnp = get_method("pnp")  # PnP's source branch takes the literal prompt, its inversion the sample's
    literal = pnp.preparation(pnp.resolve({"steps": 50, "source_prompt": ""}))
    assert literal == pnp.preparation(pnp.resolve({"steps": 50}))


def test_a_preparation_not_kept_on_disk_is_never_looked_up():
    controlnet = get_method("controlnet")
    spec = controlnet.preparation(controlnet.resolve({}))
    assert not spec.cached and spec.cache_key(BACKBONE, SAMPLE) is None and not spec.is_cached(BACKBONE, SAMPLE)
    assert spec.nfe() == 0 and controlnet.estimate_nfe(controlnet.resolve({}))[1] == 0


def test_no_method_defines_the_retired_hooks_and_registering_one_fails():
    for cls in all_methods():
        assert cls.prepare is Method.prepare, cls.name
    assert get_method("p2p").prepares() and not get_method("sdedit").prepares()

    class OldStyle(Method):
        name = "test_old_style_preparation"
        prep_params = ("steps",)

        def prepare(self, backbone, sample, setting):
            return None

    with pytest.raises(ConfigError, match="defines prep_params, prepare: a method declares its preparation"):
        register(OldStyle)


def test_a_spec_must_be_a_frozen_dataclass_so_equal_settings_share_it():
    class ByIdentity(PreparationSpec):
        kind = "by_identity"

    @dataclass(frozen=True)
    class ByValue(PreparationSpec):
        kind = "by_value"
        a: int

    class Unfrozen(Method):
        name = "test_unfrozen_spec"

        @classmethod
        def preparation(cls, setting):
            return ByIdentity()

    class Frozen(Unfrozen):
        @classmethod
        def preparation(cls, setting):
            return ByValue(setting["a"])

    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        Unfrozen.preparation_key({})
    assert Frozen.preparation_key({"a": 1}) == Frozen.preparation_key({"a": 1}) != Frozen.preparation_key({"a": 2})


def test_the_dry_run_counts_one_preparation_per_cache_entry(tmp_path):
    """ddim, negative_prompt and direct are one DDIM trajectory; masactrl's literal prompt is another."""
    from bench.execution.plan import plan_settings
    from tests.helpers import run_config

    config = run_config(tmp_path, {
        "p2p": {"steps": 2, "inversion": ["ddim", "direct", "negative_prompt", "null_text", "none"]},
        "masactrl": {"steps": 2, "start_step": 0, "inversion": ["ddim", "direct"], "source_prompt": ["sample", ""]},
        "controlnet": {"steps": 2, "untrained": True},
    })  # fmt: skip
    _, preparations = plan_settings(config, 1)
    cached = {}
    for p in preparations:
        if p.spec.cached:
            cached.setdefault(p.method, []).append(p.spec)
    assert {method: [spec.kind for spec in specs] for method, specs in cached.items()} == {
        "p2p": ["ddim", "null_text"], "masactrl": ["ddim", "ddim"],
    }  # fmt: skip
    assert [spec.source_prompt for spec in cached["masactrl"]] == [None, ""]
    # kept in memory only: counted too (the run computes it), once per preparation key
    assert [(p.method, p.spec.cached) for p in preparations if p.method == "controlnet"] == [("controlnet", False)]
