"""The bundled GEdit-schema smoke fixture (datasets/gedit_bench/smoke_fixture, made by
scripts/make_gedit_fixture.py): GEdit-Bench's published schema, read through the card as a local
copy of GEdit-Bench is; and ``dataset.target_prompt_from``, which lets text-guided editors run on it."""

import importlib.util
import io

import numpy as np
import pytest
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.errors import ConfigError
from bench.paths import repo_root
from bench.samples import ResolutionPolicy
from tests.helpers import HUB_SCHEMAS

FIXTURE = repo_root() / "datasets" / "gedit_bench" / "smoke_fixture"


def _pixels(cell) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"), dtype=float)


def test_the_committed_fixture_is_what_the_script_makes_in_gedit_benchs_schema():
    import datasets

    from bench.hub_data import column_kind

    path = repo_root() / "scripts" / "make_gedit_fixture.py"
    spec = importlib.util.spec_from_file_location("make_gedit_fixture", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = datasets.Dataset.from_parquet(str(FIXTURE / script.PARQUET))
    kinds = {"string": "string", "bool": "bool", "image": "image"}
    assert {c: column_kind(f) for c, f in committed.features.items()} == {
        c: kinds[t] for c, t in HUB_SCHEMAS["gedit_bench"].items()
    }
    made = script.fixture_rows()
    committed = committed.cast_column("input_image", datasets.Image(decode=False))
    committed = committed.cast_column("input_image_raw", datasets.Image(decode=False)).to_dict()
    for column, values in made.items():
        if column.startswith("input_image"):  # the same JPEGs (decoded, in case another libjpeg encodes them)
            assert all(np.abs(_pixels(a) - _pixels(b)).mean() < 1 for a, b in zip(values, committed[column]))
        else:
            assert values == committed[column], column
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 200_000


def test_the_fixture_loads_through_the_gedit_card_as_a_local_copy():
    refs = load_dataset(DatasetSpec(name="gedit_bench", path=str(FIXTURE)))
    assert len(refs) == 8 and {r.groups["language"] for r in refs} == {"en", "cn"}
    assert {r.groups["intersection"] for r in refs} == {"true", "false"} and len({r.edit_type for r in refs}) == 4
    samples = [ref.load(ResolutionPolicy("keep_aspect").frame(64)) for ref in refs]
    ratios = {round(s.source_size[0] / s.source_size[1], 2) for s in samples}
    assert len(ratios) == 4 and 1.0 not in ratios  # four aspect ratios, none square
    assert all(s.instruction and s.target_prompt is None for s in samples)


def test_target_prompt_from_gives_instruction_only_samples_a_target_prompt():
    spec = DatasetSpec(name="gedit_bench", path=str(FIXTURE), target_prompt_from="instruction", limit=1)
    (sample,) = [ref.load(64) for ref in load_dataset(spec)]
    assert sample.target_prompt == sample.instruction == "make the cat's fur black"
    own = DatasetSpec(name="sample", limit=1, target_prompt_from="instruction")  # a target prompt of its own stays
    (sample,) = [ref.load(64) for ref in load_dataset(own)]
    assert sample.target_prompt.startswith("a photo of") and sample.target_prompt != sample.instruction
    with pytest.raises(ConfigError, match="target_prompt_from"):
        DatasetSpec(name="sample", target_prompt_from="caption")
