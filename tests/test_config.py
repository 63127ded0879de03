import pytest

from bench.errors import ConfigError
from bench.execution.config import build_config, config_from_resolved, expand_grid, load_config
from bench.registry import get_method, method_names

BASE = {"methods": {"sdedit": {"t0": 0.5, "steps": 10}}}


def test_methods_are_discovered_and_registered():
    assert {"reconstruct", "sdedit"} <= set(method_names())
    assert get_method("sdedit").name == "sdedit"


def test_unknown_method_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown method 'sdedt' \(did you mean 'sdedit'\?\)"):
        get_method("sdedt")


def test_unknown_parameter_suggests_and_lists():
    with pytest.raises(ConfigError, match=r"unknown parameter 't_0' \(did you mean 't0'\?\); parameters: t0, w, steps"):
        build_config({"methods": {"sdedit": {"t_0": 0.5}}})


@pytest.mark.parametrize(
    "value,allowed",
    [(0, r"float in \(0, 1\]"), (1.5, r"float in \(0, 1\]"), ("high", r"float in \(0, 1\]"), (True, r"float in \(0, 1\]")],
)
def test_out_of_range_names_parameter_and_range(value, allowed):
    with pytest.raises(ConfigError, match=rf"parameter 't0' = .* is not allowed; expected {allowed}"):
        build_config({"methods": {"sdedit": {"t0": value}}})


def test_integer_parameter_rejects_fractions():
    with pytest.raises(ConfigError, match=r"'steps' = 10.5 .* int in \[1, 1000\]"):
        build_config({"methods": {"sdedit": {"steps": 10.5}}})


def test_unknown_keys_fail_with_suggestions():
    with pytest.raises(ConfigError, match=r"unknown key 'method' \(did you mean 'methods'\?\)"):
        build_config({"method": {}, **BASE})
    with pytest.raises(ConfigError, match=r"backbone: unknown key 'dtyp' \(did you mean 'dtype'\?\)"):
        build_config({"backbone": {"dtyp": "fp16"}, **BASE})
    with pytest.raises(ConfigError, match=r"dataset: unknown key 'limt' \(did you mean 'limit'\?\)"):
        build_config({"dataset": {"limt": 2}, **BASE})
    with pytest.raises(ConfigError, match=r"unknown metric 'psnrr' \(did you mean 'psnr'\?\)"):
        build_config({"metrics": ["psnrr"], **BASE})
    with pytest.raises(ConfigError, match=r"unknown backbone dtype 'fp8'"):
        build_config({"backbone": {"dtype": "fp8"}, **BASE})


def test_grid_is_cartesian_and_zip_pairs():
    settings = expand_grid("sdedit", {"t0": [0.3, 0.5, 0.7], "zip": {"w": [1, 7.5], "steps": [20, 50]}})
    assert len(settings) == 6
    assert {(s["w"], s["steps"]) for s in settings} == {(1.0, 20), (7.5, 50)}
    assert {s["t0"] for s in settings} == {0.3, 0.5, 0.7}
    with pytest.raises(ConfigError, match="differ in length"):
        expand_grid("sdedit", {"zip": {"w": [1, 2], "steps": [20]}})


def test_defaults_fill_and_duplicates_collapse():
    settings = expand_grid("sdedit", {"t0": [0.5, 0.5]})
    assert settings == [{"t0": 0.5, "w": 7.5, "steps": 50}]


def test_overrides():
    config = build_config(BASE, ["sdedit.t0=0.3,0.5,0.7", "dataset.limit=2", "seeds=0,1", "reconstruct="])
    assert [s["t0"] for s in config.settings["sdedit"]] == [0.3, 0.5, 0.7]
    assert config.dataset.limit == 2 and config.seeds == [0, 1]
    assert config.settings["reconstruct"] == [{}]
    with pytest.raises(ConfigError, match=r"--set sdedt.t0: unknown key 'sdedt' \(did you mean 'sdedit'\?\)"):
        build_config(BASE, ["sdedt.t0=0.3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        build_config(BASE, ["sdedit.t0"])


def test_set_never_adds_a_method_silently():
    with pytest.raises(ConfigError, match=r"--set ilvr.N: method 'ilvr' is not in the config \(its methods: sdedit\)"):
        build_config({"methods": {"sdedit": {}}}, ["ilvr.N=4"])
    with pytest.raises(ConfigError, match="method 'ilvr' is not in the config"):
        build_config({"methods": {"sdedit": {}}}, ["methods.ilvr.N=4"])
    config = build_config({"methods": {"sdedit": {}}}, ["ilvr={}", "ilvr.N=4"])  # the documented way to add one
    assert [s["N"] for s in config.settings["ilvr"]] == [4]


@pytest.mark.parametrize("block", [{"t0": []}, {"zip": {"t0": [], "w": []}}])
def test_an_empty_sweep_list_is_an_error(block):
    with pytest.raises(ConfigError, match="method 'sdedit': parameter 't0' has an empty list"):
        build_config({"methods": {"sdedit": block}})


def test_backbone_option_overrides_config():
    assert build_config(BASE, backbone="/models/sd15").backbone.name == "/models/sd15"


def test_resolved_config_round_trips():
    config = build_config({"methods": {"reconstruct": {}, "sdedit": {"t0": [0.3, 0.7], "w": [1, 3]}}, "seeds": [0, 2]})
    again = config_from_resolved(config.resolved)
    assert again.resolved == config.resolved and again.settings == config.settings


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [sdedit")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_quickstart_config_is_valid():
    from bench.paths import repo_root

    config = load_config(repo_root() / "configs" / "quickstart.yaml")
    assert config.n_settings == 4 and config.backbone.name == "tiny"
