"""Human-preference sets (EditReward-Bench, VCReward-Bench): groups of edits of one source and
instruction, with the humans' pairwise verdicts, read through a bundled card
(``datasets/<name>/card.yaml``, ``format: preferences``) from a local copy or the Hugging Face cache.

A card maps the set's columns: ``instruction``, ``source`` (image), ``candidates`` (two image
columns of one row, or one column holding a list of two images), ``label`` (the verdict: ``A>B``,
``B>A``, ``A=B...``, or ``Image A``/``Image B``/``Tie``), optional ``scores`` (the annotators'
score of each candidate) and ``task``. Every row is one pair. Rows of one ``subset`` with the same
instruction and source image form a group (EditReward-Bench's 3- and 4-candidate groups are
stored as their pairs); equal candidate images are one candidate. ``subsets`` are the folders of
the repository (``<subset>/*.parquet``); ``ties`` names the subsets scored with ties.
"""

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bench.data import dataset_cards
from bench.errors import ConfigError, unknown

#: A pair's human verdict: the first candidate preferred, the second, or a tie.
FIRST, SECOND, TIE = 1, -1, 0


@dataclass
class PreferenceGroup:
    """Candidates (PIL images) of one source and instruction, and the humans' pairwise verdicts
    ``(i, j, verdict)`` (``FIRST``: candidate i preferred); ``scores``: the annotators' score per
    candidate when the set has them."""

    id: str
    subset: str
    task: str
    instruction: str
    source: Image.Image
    candidates: list[Image.Image] = field(default_factory=list)
    pairs: list[tuple[int, int, int]] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)


def preference_cards() -> dict[str, dict]:
    return {name: card for name, card in dataset_cards().items() if card.get("format") == "preferences"}


def verdict(label) -> int:
    """A label as ``FIRST``/``SECOND``/``TIE``: ``A>B``, ``B>A``/``A<B``, ``A=B...``, ``Image A``, ``Tie``."""
    text = str(label).strip().lower().replace(" ", "")
    if text in ("a>b", "imagea", "a", "1") or text.startswith("a>"):
        return FIRST
    if text in ("b>a", "a<b", "imageb", "b", "2") or text.startswith("b>"):
        return SECOND
    if text.startswith("a=b") or text in ("tie", "equal", "0"):
        return TIE
    raise ConfigError(f"preference label {label!r} is none of A>B, B>A, A=B, Image A, Image B, Tie")


def _image(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes"):
        return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
    raise ConfigError(f"preference set: expected an image, got {type(value).__name__}")


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()


def _rows(card: dict, path: str | None, subset: str):
    """The rows of one subset: ``<root>/<subset>/*.parquet`` of a local copy or the hub snapshot."""
    import datasets

    from bench.hub_data import _cached_snapshot

    root = Path(path).expanduser() if path else _cached_snapshot(card["hub"], None, False)
    files = sorted(str(f) for f in (root / subset).glob("*.parquet"))
    if not files:
        raise ConfigError(f"preference set {card['name']}: no parquet files in {root / subset}")
    datasets.disable_progress_bars()
    return datasets.load_dataset("parquet", data_files=files, split="train")


def load_preferences(name: str, path: str | None = None, limit: int | None = None) -> list[PreferenceGroup]:
    """The groups of preference set ``name`` (a card), from ``path`` (a local copy laid out like the
    hub repository) or the Hugging Face cache; at most ``limit`` groups per subset."""
    cards = preference_cards()
    if name not in cards:
        raise ConfigError(f"--set: {unknown('preference set', name, cards)}")
    card = cards[name]
    columns = card["columns"]
    groups: list[PreferenceGroup] = []
    for subset in card["subsets"]:
        by_key: dict[str, PreferenceGroup] = {}
        for row in _rows(card, path, subset):
            missing = [c for c in _wanted(columns) if c not in row]
            if missing:
                raise ConfigError(f"preference set {name}/{subset} lacks the column(s) {', '.join(missing)} its card maps")
            source = _image(row[columns["source"]])
            key = hashlib.sha256((row[columns["instruction"]] + _digest(source)).encode()).hexdigest()[:16]
            group = by_key.get(key)
            if group is None:
                if limit is not None and len(by_key) >= limit:
                    continue
                task = str(row[columns["task"]]) if columns.get("task") else subset
                group = by_key[key] = PreferenceGroup(f"{subset}/{key}", subset, task, row[columns["instruction"]],
                                                      source)  # fmt: skip
            pictures = row[columns["candidates"]] if isinstance(columns["candidates"], str) else [
                row[c] for c in columns["candidates"]]  # fmt: skip
            scores = [row[c] for c in columns["scores"]] if columns.get("scores") else [None, None]
            at = [_candidate(group, _image(p), s) for p, s in zip(pictures, scores)]
            group.pairs.append((at[0], at[1], verdict(row[columns["label"]])))
        groups += by_key.values()
    return groups


def _wanted(columns: dict) -> list[str]:
    out = [columns["instruction"], columns["source"], columns["label"]]
    out += [columns["candidates"]] if isinstance(columns["candidates"], str) else list(columns["candidates"])
    return out + list(columns.get("scores") or []) + ([columns["task"]] if columns.get("task") else [])


def _candidate(group: PreferenceGroup, image: Image.Image, score) -> int:
    """The index of ``image`` among the group's candidates (added when new)."""
    digest = _digest(image)
    for i, known in enumerate(group.candidates):
        if _digest(known) == digest:
            return i
    group.candidates.append(image)
    group.scores.append(None if score is None else float(score))
    return len(group.candidates) - 1
