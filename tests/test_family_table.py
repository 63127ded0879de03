"""docs/backbones.md's method x family table is what the registry says
(regenerate: ``python scripts/family_table.py --write docs/backbones.md``)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_family_table_of_the_backbones_page_equals_the_registry():
    spec = importlib.util.spec_from_file_location("family_table", ROOT / "scripts" / "family_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.page_table(ROOT / "docs" / "backbones.md") == module.family_table()
