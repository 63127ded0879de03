"""Print the method x backbone-family table of the built-in methods, from the registry; the table lives in
docs/backbones.md (``--check docs/backbones.md``: exit 1 when it differs; ``--write docs/backbones.md``: replace it there)."""

import sys
from pathlib import Path

from bench.diffusion.families import FAMILIES, FAMILY_TITLES
from bench.registry import builtin_names, get_method

BEGIN, END = "<!-- family-table:begin -->", "<!-- family-table:end -->"


def family_table() -> str:
    """One row per built-in method, one column per family: yes where the method declares it."""
    rows = ["| method | " + " | ".join(FAMILY_TITLES[f] for f in FAMILIES) + " |", "| --- |" + " --- |" * len(FAMILIES)]
    for cls in map(get_method, builtin_names()):
        rows.append(f"| `{cls.name}` | " + " | ".join("yes" if f in cls.families else "" for f in FAMILIES) + " |")
    return "\n".join(rows)


def page_table(page: Path) -> str:
    text = page.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def write_page_table(page: Path) -> None:
    text = page.read_text()
    head, tail = text[: text.index(BEGIN) + len(BEGIN)], text[text.index(END) :]
    page.write_text(f"{head}\n{family_table()}\n{tail}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if page_table(Path(sys.argv[2])) == family_table() else 1)
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_page_table(Path(sys.argv[2]))
    else:
        print(family_table())
