"""Reading the YAML (or JSON, which YAML reads too) files a user hands editbench: configs,
compare thresholds, published references."""

from pathlib import Path

import yaml

from bench.errors import ConfigError


def read_yaml(path, what: str):
    """The parsed content of ``path``; a ``ConfigError`` naming ``what`` and the file when it
    is missing or not valid YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML: {yaml_problem(exc)}") from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where it stopped (line and column, 1-based) and why."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
