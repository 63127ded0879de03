"""A hub id whose configs are not in the hub cache yet (a dry run before the first download): an
official id resolves to the family and variant its ``model_index.json`` names
(``bench.diffusion.families.OFFICIAL_HUB_IDS``), as a cached one does; any other id is said to be a
guess in the dry run."""

import pytest

from bench.diffusion.backbone import BackboneSpec, known_family, step_rules
from bench.diffusion.families import OFFICIAL_HUB_IDS, PIPELINE_FAMILIES
from bench.execution.plan import dry_run_text
from bench.method import rules_in_force
from bench.registry import get_method
from tests.helpers import run_config


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """No hub id's configs are cached, whatever this machine's hub cache holds."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_every_official_id_names_a_supported_pipeline():
    assert all(name == name.lower() for name in OFFICIAL_HUB_IDS)
    assert set(OFFICIAL_HUB_IDS.values()) <= set(PIPELINE_FAMILIES)


@pytest.mark.parametrize("name, family", [("black-forest-labs/FLUX.1-dev", "flux"),
                                          ("black-forest-labs/FLUX.2-dev", "flux2"),
                                          ("Qwen/Qwen-Image-Edit-2509", "qwen_image_plus"),
                                          ("someone/my-finetune", None)])  # fmt: skip
def test_an_uncached_official_id_has_its_family(name, family):
    assert known_family(BackboneSpec(name=name)) == family


def test_an_uncached_flux2_dev_counts_one_evaluation_per_step_and_klein_two():
    setting = get_method("flux2").resolve({"steps": 3}, "flux2")  # guidance 4: CFG on [klein]
    for name, nfe in (("black-forest-labs/FLUX.2-dev", 3), ("black-forest-labs/FLUX.2-klein-base-9B", 6)):
        with rules_in_force(step_rules(BackboneSpec(name=name))):
            assert get_method("flux2").estimate_nfe(setting) == (nfe, 0), name


def test_flowedit_on_an_uncached_flux1_dev_takes_flowedits_flux_defaults(tmp_path):
    """The README's GPU command for configs/instruction_editors.yaml, before FLUX.1-dev is downloaded."""
    config = run_config(tmp_path, {"flowedit": {"backbone": "black-forest-labs/FLUX.1-dev"}})
    (setting,) = config.settings["flowedit"]
    assert (setting["src_w"], setting["tar_w"], setting["steps"], setting["n_max"]) == (1.5, 5.5, 28, 24)
    assert "guess" not in dry_run_text(config)


def test_the_dry_run_says_when_a_hub_ids_family_is_a_guess(tmp_path):
    config = run_config(tmp_path, {"sdedit": {"steps": 2, "backbone": "someone/my-finetune"}})
    notes = [line for line in dry_run_text(config).splitlines() if "guess" in line]
    assert len(notes) == 1 and "someone/my-finetune" in notes[0] and "assumes SD 1.x" in notes[0]
