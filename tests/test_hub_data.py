"""Hub benchmarks (MagicBrush, Emu Edit, GEdit-Bench) from local copies with their published schemas."""

import numpy as np
import pytest
import torch

from bench.data import DatasetSpec, dataset_cards, load_dataset, prepare_image
from bench.errors import ConfigError
from tests.helpers import HUB_SCHEMAS, hub_fixture, write_hub_fixture


@pytest.mark.parametrize("layout", ["parquet", "disk"])
@pytest.mark.parametrize("name", ["magicbrush", "emu_edit", "gedit_bench"])
def test_each_card_loads_its_published_schema_offline(tmp_path, name, layout):
    card = dataset_cards()[name]
    folder = write_hub_fixture(tmp_path / name, name, card["split"], n=4, layout=layout)
    refs = load_dataset(DatasetSpec(name=name, path=folder))
    assert refs and len({r.id for r in refs}) == len(refs)
    sample = refs[0].load(64)
    assert sample.image.shape == (3, 64, 64)
    assert sample.instruction
    row = hub_fixture(name, 4)[0]
    source = row[card["fields"]["image"]]
    assert torch.equal(sample.image, prepare_image(source, 64))  # the column the card names, by the data rule
    assert sample.source_size == source.size


def test_magicbrush_turns_ground_truth_and_mask(tmp_path):
    folder = write_hub_fixture(tmp_path / "mb", "magicbrush", "dev", n=3)
    first = load_dataset(DatasetSpec(name="magicbrush", path=folder))
    every = load_dataset(DatasetSpec(name="magicbrush", path=folder, turns="all"))
    assert [r.id for r in first] == ["1000_1", "1001_1", "1002_1"]
    assert len(every) == 6 and "1000_2" in {r.id for r in every}
    sample = first[0].load(64)
    row = hub_fixture("magicbrush", 3)[0]
    assert torch.equal(sample.target_image, prepare_image(row["target_img"], 64))
    assert sample.target_prompt == sample.instruction == "make turn 1 red"  # no captions: the instruction
    assert sample.mask is not None and 0 < sample.mask.mean() < 1  # the white region
    assert sample.output_caption is None


def test_emu_edit_captions_and_task(tmp_path):
    folder = write_hub_fixture(tmp_path / "emu", "emu_edit", "test", n=7)
    refs = load_dataset(DatasetSpec(name="emu_edit", path=folder, edit_types=("remove",)))
    assert [r.id for r in refs] == ["3"]
    sample = refs[0].load(32)
    assert (sample.source_prompt, sample.output_caption, sample.edit_type) == ("a photo 3", "an edited photo 3", "remove")
    assert sample.target_image is None


def test_gedit_language_and_intersection_filters(tmp_path):
    folder = write_hub_fixture(tmp_path / "gedit", "gedit_bench", "train", n=8)
    all_refs = load_dataset(DatasetSpec(name="gedit_bench", path=folder))
    assert {r.groups["language"] for r in all_refs} == {"en", "cn"}
    english = load_dataset(DatasetSpec(name="gedit_bench", path=folder, where={"language": "en"}))
    both = load_dataset(DatasetSpec(name="gedit_bench", path=folder, where={"language": "en", "intersection": True}))
    assert {r.groups["language"] for r in english} == {"en"} and len(english) == 4
    assert [r.id for r in both] == ["k0_en", "k2_en"]
    assert both[0].load(32).groups == {"language": "en", "intersection": "true"}


def test_hub_id_spec_reads_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="not in the Hugging Face cache.*allow_download"):
        load_dataset(DatasetSpec(hub="facebook/emu_edit_test_set"))


def test_bad_specs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no bundled card"):
        DatasetSpec(hub="someone/unknown")
    with pytest.raises(ConfigError, match="group"):
        DatasetSpec(name="gedit_bench", where={"lang": "en"})
    with pytest.raises(ConfigError, match="edit type"):
        DatasetSpec(name="emu_edit", edit_types=("change_object",))
    with pytest.raises(ConfigError, match="hub benchmarks only"):
        DatasetSpec(path="x.jsonl", split="test")
    folder = write_hub_fixture(tmp_path / "emu", "emu_edit", "test")
    with pytest.raises(ConfigError, match="split 'validation'"):
        load_dataset(DatasetSpec(name="emu_edit", path=folder, split="validation"))
    renamed = hub_fixture("emu_edit").rename_column("task", "kind")
    (tmp_path / "r" / "data").mkdir(parents=True)
    renamed.to_parquet(str(tmp_path / "r" / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(ConfigError, match="lacks the column"):
        load_dataset(DatasetSpec(name="emu_edit", path=str(tmp_path / "r")))


def test_published_schemas_are_the_fixtures():
    for name, schema in HUB_SCHEMAS.items():
        assert list(hub_fixture(name, 2).features) == list(schema)
        assert np.all([c in schema for c in dataset_cards()[name]["fields"].values()])


def test_hub_specs_round_trip_through_the_resolved_config(tmp_path):
    """``--resume`` rebuilds the dataset spec from the manifest: filters, split and turns survive."""
    from bench.execution.config import build_config, config_from_resolved

    folder = write_hub_fixture(tmp_path / "gedit", "gedit_bench", "train", n=4)
    raw = {"dataset": {"name": "gedit_bench", "path": folder, "where": {"language": "en", "intersection": True},
                       "split": "train", "edit_types": ["subject-add"]},
           "methods": {"reconstruct": {}}, "output": str(tmp_path / "runs")}  # fmt: skip
    config = build_config(raw)
    again = config_from_resolved(config.resolved)
    assert again.dataset == config.dataset
    assert [r.id for r in load_dataset(again.dataset)] == ["k0_en"]


def test_a_card_with_a_list_of_instructions_per_sample_gives_chains(tmp_path):
    """``turns: {list: instruction}``: one row per chain; list columns give each turn its entry."""
    import datasets
    from types import SimpleNamespace

    from PIL import Image

    from bench.hub_data import load_hub_benchmark

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    rows = datasets.Dataset.from_dict({"key": ["a", "b"], "image": [photo, photo],
                                       "edits": [["add a hat", "make it red", "add snow"], ["zoom out"]],
                                       "captions": [["a hat", "a red hat", "a snowy red hat"], ["far away"]]},
                                      features=datasets.Features({"key": datasets.Value("string"), "image": datasets.Image(),
                                                                  "edits": [datasets.Value("string")],
                                                                  "captions": [datasets.Value("string")]}))  # fmt: skip
    (tmp_path / "data").mkdir()
    rows.to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    card = {"name": "chains", "hub": "someone/chains", "split": "test", "id": ["key"], "turns": {"list": "instruction"},
            "fields": {"image": "image", "instruction": "edits", "output_caption": "captions"}}  # fmt: skip
    spec = SimpleNamespace(path=str(tmp_path), split=None, hub=None, revision=None, allow_download=False)
    refs = load_hub_benchmark(card, spec)
    assert [(r.id, r.chain, r.turn) for r in refs] == [("a_1", "a", 1), ("a_2", "a", 2), ("a_3", "a", 3), ("b_1", "b", 1)]
    third = refs[2].load(64)
    assert (third.instruction, third.output_caption) == ("add snow", "a snowy red hat")
    assert torch.equal(third.image, prepare_image(photo, 64)), "the row's one image is every turn's recorded source"
