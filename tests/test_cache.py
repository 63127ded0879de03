"""The disk cache of inversions: bit-identical hits, misses on any key change, runner records."""

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import bench.diffusion.inversion.spec
from bench import cache
from bench.data import Sample
from bench.diffusion.inversion.ddim import NullTextParams, prepare_inversion
from bench.diffusion.inversion.spec import cache_fields
from bench.execution.config import load_config
from bench.execution.runner import Runner
from bench.paths import repo_root
from bench.store import Store

STEPS = 3
NTI = NullTextParams(inner_steps=2)


@pytest.fixture
def sample(image, request):
    # a prompt of its own per test, so no other test's entries can answer
    return Sample("s", image, f"a photo of a cat for {request.node.name}", "a photo of a dog")


def prepared(backbone, sample, kind="null_text", steps=STEPS, inversion_w=1.0, nti=NTI):
    before = backbone.nfe.count
    prep = prepare_inversion(backbone, sample, kind, steps, inversion_w, nti)
    return prep, backbone.nfe.count - before


def test_a_hit_is_bit_identical_to_the_fresh_computation_and_costs_nothing(backbone, sample):
    fresh, nfe = prepared(backbone, sample)
    hit, hit_nfe = prepared(backbone, sample)
    assert not fresh.cache_hit and nfe > 0
    assert hit.cache_hit and hit_nfe == 0 and hit.grad_evals == 0
    assert torch.equal(hit.value.latents, fresh.value.latents)
    assert torch.equal(hit.value.null_embeddings, fresh.value.null_embeddings)
    # ddim, negative_prompt and direct share the DDIM trajectory, already computed as the pivot
    for kind in ("ddim", "negative_prompt", "direct"):
        other, other_nfe = prepared(backbone, sample, kind)
        assert other.cache_hit and other_nfe == 0 and other.value.kind == kind
        assert torch.equal(other.value.latents, fresh.value.latents)


def test_changing_any_key_field_recomputes(backbone, sample, monkeypatch):
    prepared(backbone, sample)
    pixel = sample.image.clone()
    pixel[0, 0, 0] = 1 - pixel[0, 0, 0]
    changes = {
        "steps": dict(steps=STEPS + 1),
        "inversion_w": dict(inversion_w=2.0),
        "nti lr": dict(nti=replace(NTI, lr=0.02)),
        "nti w": dict(nti=replace(NTI, w=5.0)),
        "nti inner steps": dict(nti=replace(NTI, inner_steps=1)),
        "source prompt": dict(sample=replace(sample, source_prompt=sample.source_prompt + "!")),
        "image": dict(sample=replace(sample, image=pixel)),
    }
    for what, change in changes.items():
        args = {"sample": sample, **change}
        prep, nfe = prepared(backbone, **args)
        assert not prep.cache_hit and nfe > 0, what
    monkeypatch.setattr(bench.diffusion.inversion.spec, "INVERSION_VERSION", bench.diffusion.inversion.spec.INVERSION_VERSION + 1)
    prep, nfe = prepared(backbone, sample)
    assert not prep.cache_hit and nfe > 0, "version"
    monkeypatch.undo()
    monkeypatch.setitem(backbone.fingerprint, "id", "another-backbone")
    prep, nfe = prepared(backbone, sample)
    assert not prep.cache_hit and nfe > 0, "backbone"


def test_entries_are_safetensors_named_by_their_key_and_unreadable_ones_miss(backbone, sample):
    prep, _ = prepared(backbone, sample, "ddim")
    fields = cache_fields(backbone, sample, STEPS, "ddim", {"inversion_w": 1.0})
    path = cache.entry_path(fields)
    assert path.is_file() and path.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then JSON
    assert not list(path.parent.glob("*.tmp-*"))
    loaded = cache.load(fields)
    assert set(loaded) == {"latents"} and torch.equal(loaded["latents"], prep.value.latents)
    assert cache.load({**fields, "steps": STEPS + 7}) is None
    path.write_bytes(b"not a safetensors file")
    again, nfe = prepared(backbone, sample, "ddim")
    assert not again.cache_hit and nfe > 0 and torch.equal(again.value.latents, prep.value.latents)
    assert cache.load(fields) is not None  # rewritten


def test_a_sweep_inverts_once_and_a_later_run_reuses_the_disk_cache(backbone, tmp_path):
    config = load_config(
        repo_root() / "configs" / "inversion.yaml",
        overrides=[f"output={tmp_path}", "dataset.limit=1", "ddim_inversion.steps=3", "null_text_inversion.steps=3",
                   "null_text_inversion.inner_steps=2", "p2p.steps=3", "p2p.inner_steps=2"],
    )  # fmt: skip
    runs = []
    for name in ("first", "second"):
        run_dir = Path(tmp_path) / name
        run_dir.mkdir()
        counts = Runner(config, run_dir, backbone=backbone, progress=False).run()
        store = Store(run_dir)
        runs.append(store.cells_frame())
        store.close()
        assert counts["ok"] == config.n_settings and counts["failed"] == 0, runs[-1].error.dropna().tolist()
    first, second = (cells[cells.method != "reconstruct"] for cells in runs)
    assert (second.prep_cached == 1).all() and (second.prep_nfe.fillna(0) == 0).all()
    assert (second.grad_evals == 0).all() and (second.prep_grad_evals.fillna(0) == 0).all()
    nti = first[first.method == "null_text_inversion"]
    assert (nti.prep_cached == 0).all() and (nti.prep_nfe > 0).all() and (nti.prep_grad_evals > 0).all()
    assert (first.grad_evals == 0).all()  # the optimisation is preparation, not part of any edit
    p2p = first[first.method == "p2p"]
    per_inversion = p2p.groupby([p2p.sample_id, p2p.setting.str.extract(r'"inversion": "(\w+)"')[0]])
    assert (per_inversion.prep_nfe.apply(lambda s: (s > 0).sum()) <= 1).all()  # computed at most once, then reused
    merged = first.merge(second, on="key")
    for a, b in zip(merged.output_path_x, merged.output_path_y):
        assert (tmp_path / "first" / a).read_bytes() == (tmp_path / "second" / b).read_bytes()
    assert all((tmp_path / "first" / p).with_suffix(".attention.png").is_file() for p in p2p.output_path)


def test_two_writers_of_one_entry_at_once_leave_one_valid_entry():
    """Two workers (threads here: one pid, so per-process temp names would collide) save the same
    entry again and again while a reader polls it: the reader only ever sees one writer's whole file."""
    from safetensors.torch import load_file

    fields, kind = {"kind": "ddim", "image": "same-for-both", "steps": 50}, "inversions-race-test"
    path = cache.entry_path(fields, kind)
    errors = []

    def write_many(value: float):
        try:
            for _ in range(30):
                cache.save(fields, {"latents": torch.full((4, 64, 64), value)}, kind=kind)
        except Exception as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write_many, args=(value,)) for value in (1.0, 2.0)]
    for writer in writers:
        writer.start()
    reads = 0
    while any(writer.is_alive() for writer in writers):
        if path.is_file():  # load_file raises on a half-written file
            assert load_file(str(path))["latents"].unique().tolist() in ([1.0], [2.0])
            reads += 1
    for writer in writers:
        writer.join()
    assert not errors and reads > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert cache.load(fields, kind=kind)["latents"].unique().tolist() in ([1.0], [2.0])


def test_a_damaged_entry_is_a_miss_recomputed_and_overwritten_with_one_warning(backbone, sample):
    prep, _ = prepared(backbone, sample, "ddim")
    path = cache.entry_path(cache_fields(backbone, sample, STEPS, "ddim", {"inversion_w": 1.0}))
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 5] ^= 0xFF  # same size, one byte of the tensor changed
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="does not match its checksum") as warned:
        again, nfe = prepared(backbone, sample, "ddim")
    assert len(warned) == 1
    assert not again.cache_hit and nfe > 0 and torch.equal(again.value.latents, prep.value.latents)
    hit, hit_nfe = prepared(backbone, sample, "ddim")  # overwritten: a hit again
    assert hit.cache_hit and hit_nfe == 0 and torch.equal(hit.value.latents, prep.value.latents)
