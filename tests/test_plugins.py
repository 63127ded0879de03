"""Methods from outside the repository: --include files and modules, entry points, clashes."""

import importlib.metadata
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench import registry
from bench.errors import ConfigError
from bench.execution.config import build_config
from bench.registry import get_method, method_names
from run_bench import main
from tests.helpers import write_dataset

METHOD_FILE = '''
"""A user's own method: the source image with its brightness scaled."""
import torch

from bench import EditResult, Method, Param, register


@register
class {cls}(Method):
    name = "{name}"
    description = "scale the source's brightness"
    params = (Param("gain", float, 1.0, "brightness factor", low=0, high=2),)

    def edit(self, backbone, sample, prep, setting, generator):
        return EditResult((sample.image[None] * setting["gain"]).clamp(0, 1))
'''


def write_method(folder, name, cls="Brighten", filename=None):
    path = folder / (filename or f"{name}.py")
    path.write_text(textwrap.dedent(METHOD_FILE.format(cls=cls, name=name)))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_an_included_file_runs_in_a_sweep_is_listed_and_reported(tmp_path):
    method_file = write_method(tmp_path, "brighten_file")
    data = write_dataset(tmp_path / "data", n=2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": None, "path": data}, "methods": {"brighten_file": {"gain": [0.5, 1.0]}}}))
    assert "unknown method 'brighten_file'" in invoke("run", config, "--quiet").output
    result = invoke("run", config, "--include", method_file, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert "4 ok" in result.output
    run_dir = result.stdout.strip().splitlines()[-1]
    report = invoke("report", run_dir).output
    assert "| brighten_file | gain=0.5 | 2 | 0 | 0 |" in report and "| brighten_file | gain=1.0 | 2 | 0 | 0 |" in report
    listed = invoke("methods", "--include", method_file).output
    assert "brighten_file: scale the source's brightness" in listed and "gain = 1.0  [float in [0, 2]]" in listed
    with pytest.raises(ConfigError, match="unknown parameter 'gian'"):
        build_config({"methods": {"brighten_file": {"gian": 1}}}, includes=[str(method_file)])
    assert invoke("run", "--resume", run_dir, "--quiet").output.count("4 already done") == 1  # the manifest names the file


def test_include_from_a_config_resolves_relative_paths_against_the_config(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    write_method(tmp_path / "mine", "brighten_rel")
    config = tmp_path / "mine" / "c.yaml"
    config.write_text(yaml.safe_dump({"include": ["brighten_rel.py"], "methods": {"brighten_rel": {}}}))
    monkeypatch.chdir(tmp_path)
    from bench.execution.config import load_config

    loaded = load_config(config)
    assert loaded.resolved["include"] == [str((tmp_path / "mine" / "brighten_rel.py").resolve())]
    assert loaded.settings == {"brighten_rel": [{"gain": 1.0}]}


def test_include_by_module_name_and_clear_errors(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_method(tmp_path, "brighten_module", filename="user_methods_mod.py")
    build_config({"include": "user_methods_mod", "methods": {"brighten_module": {}}})
    assert "brighten_module" in method_names()
    with pytest.raises(ConfigError, match="include: module 'no_such_module_xyz' cannot be imported"):
        build_config({"include": ["no_such_module_xyz"], "methods": {"reconstruct": {}}})
    with pytest.raises(ConfigError, match=r"include: file not found: .*missing\.py"):
        build_config({"methods": {"reconstruct": {}}}, includes=[str(tmp_path / "missing.py")])
    with pytest.raises(ConfigError, match=r"include: .* is not a \.py file"):  # a folder
        build_config({"methods": {"reconstruct": {}}}, includes=[str(tmp_path)])


def test_a_name_clash_with_a_built_in_is_an_error(tmp_path):
    clash = write_method(tmp_path, "sdedit", cls="MySDEdit", filename="clash.py")
    result = invoke("run", "configs/quickstart.yaml", "--include", clash)
    assert result.exit_code == 1 and "clashes with the built-in method of that name; rename it" in result.output
    assert get_method("sdedit").__module__ == "methods.sdedit"


def fake_entry_points(tmp_path, monkeypatch, name, value):
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint(name=name, value=value, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [entry] if group == registry.ENTRY_POINT_GROUP else [])


def test_an_entry_point_method_is_found_listed_and_validated(tmp_path, monkeypatch):
    write_method(tmp_path, "brighten_ep", cls="BrightenEP", filename="ep_methods_mod.py")
    fake_entry_points(tmp_path, monkeypatch, "brighten_ep", "ep_methods_mod:BrightenEP")
    assert "brighten_ep" in method_names()
    assert get_method("brighten_ep").__name__ == "BrightenEP"
    assert build_config({"methods": {"brighten_ep": {"gain": [0.5, 2]}}}).n_settings == 2
    assert "brighten_ep: scale the source's brightness" in invoke("methods").output


def test_an_entry_point_named_like_a_built_in_is_an_error(tmp_path, monkeypatch):
    fake_entry_points(tmp_path, monkeypatch, "reconstruct", "somewhere:Reconstruct")
    with pytest.raises(ConfigError, match="entry point 'reconstruct' .* clashes with the built-in method"):
        method_names()


def test_the_example_plug_in_of_the_writing_a_method_page_imports_through_the_face_and_runs(tmp_path):
    page = (Path(__file__).resolve().parents[1] / "docs" / "writing-a-method.md").read_text()
    section = page[page.index("# Benchmark your own method"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    imports = [line for line in example.splitlines() if line.startswith(("from bench", "import bench"))]
    assert imports and all(line.startswith("from bench import") for line in imports), imports
    method_file = tmp_path / "my_method.py"
    method_file.write_text(example)
    data = write_dataset(tmp_path / "data", n=1)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": None, "path": data},
                                      "methods": {"prompt_mix": {"steps": 2, "mix": [0.0, 1.0]}}}))
    result = invoke("run", config, "--include", method_file, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output
