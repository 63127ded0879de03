"""Benchmarks published as Hugging Face datasets (MagicBrush, Emu Edit, GEdit-Bench, ...), read with ``datasets``.

A bundled card (``datasets/<name>/card.yaml``, ``format: hub``) says how the benchmark's columns
become sample fields: ``id`` (columns joined with ``_``), ``fields`` (sample field -> column),
``groups`` (category name -> column, e.g. ``language``), ``turns`` (multi-turn benchmarks) and the
mask rule. A multi-turn benchmark gives its turns one of two ways: ``turns: {column: C, first: 1}``,
one row per turn whose column ``C`` numbers it (the chain is the row's other id columns, e.g.
MagicBrush's ``img_id``), or ``turns: {list: FIELD}``, one row per chain whose ``FIELD`` column
(e.g. ``instruction``) holds one entry per turn; any other mapped column holding a list gives
each turn its own entry too (sample ids ``<id>_<turn>``). The rows come from, in this order:

- ``dataset.path``, a local copy: a folder written by ``save_to_disk``, or a folder of parquet
  files laid out like the hub repository (``data/<split>-*.parquet``, read with ``load_dataset``);
- the Hugging Face cache (``huggingface_hub.snapshot_download(..., local_files_only=True)``);
  ``dataset.allow_download: true`` lets it fetch the repository when it is not cached. Nothing
  is downloaded otherwise, whatever ``HF_HUB_OFFLINE`` says.

Every column the card maps is checked against what it is read as (text: string; images: image;
id: string or integer; groups: string, bool or integer; the turn column: the type of the card's
first turn), naming column, expected and found type. Image cells are decoded per sample as the
``datasets`` library does, from their ``{"bytes": ..., "path": ...}`` form: that also reads a parquet
written by pandas, which lacks the image feature metadata. Images go through ``bench.samples``'
preparation rule (the run's resolution policy; by default shorter side to the resolution, centre
crop): the source, the ground truth (``target_image``, brought to the source's size; also kept at
its own size as ``target_original``) and the mask alike. A card's ``reference_images`` column holds
one image or a list of images per row (further input images of the editors that take several),
each prepared at its own aspect ratio (``bench.samples.Frame.reference_frame``); a chain's row gives
every turn the same references.
"""

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.errors import ConfigError, SampleError
from bench.samples import Sample, SampleRef, image_tensor, prepare_image, prepare_mask, prepare_reference, to_eight_bit

#: Sample fields a card may map to a column (images: ``image``, ``target_image``, ``mask``; one
#: image or a list of them: ``reference_images``).
TEXT_FIELDS = ("source_prompt", "target_prompt", "instruction", "output_caption", "edit_type")
IMAGE_FIELDS = ("image", "target_image", "mask")
REFERENCES = "reference_images"
MASK_RULES = ("white", "nonzero")


def group_value(value) -> str:
    """A category column's value as the text reports group by: booleans as ``true``/``false``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _local_copy(folder: Path, split: str):
    """The split of a local copy: a ``save_to_disk`` folder or a hub-like folder of data files."""
    import datasets

    datasets.disable_progress_bars()  # editbench shows its own progress
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ConfigError(f"dataset {folder}: no split {split!r}; it has {', '.join(loaded)}")
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(str(folder), split=split)
    except (ValueError, FileNotFoundError) as exc:  # no data files, or no such split
        raise ConfigError(f"dataset {folder}: cannot read split {split!r} ({str(exc).splitlines()[0][:200]})") from exc


def _cached_snapshot(hub_id: str, revision: str | None, allow_download: bool) -> Path:
    """The local snapshot folder of a hub dataset repository (fetched only if ``allow_download``)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, repo_type="dataset", revision=revision,
                                      local_files_only=not allow_download))  # fmt: skip
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        if allow_download:
            raise ConfigError(f"dataset {hub_id!r} (revision {revision or 'main'}) could not be downloaded "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}) (no network, or HF_HUB_OFFLINE=1)") from exc
        raise ConfigError(
            f"dataset {hub_id!r} (revision {revision or 'main'}) is not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE}; download it once (hf download {hub_id} --repo-type dataset), "
            "give a local copy in dataset.path, or set dataset.allow_download: true"
        ) from exc


def open_split(source: str, split: str, revision: str | None = None, allow_download: bool = False):
    """The ``datasets.Dataset`` of ``split`` of ``source``: a local folder (when one exists at that
    path) or a hub id read from the Hugging Face cache (see the module docstring)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return _local_copy(folder, split)
    if "/" not in source or source.startswith((".", "/", "~")):
        raise ConfigError(f"dataset {source!r}: no such folder, and not a hub id (owner/name)")
    return _local_copy(_cached_snapshot(source, revision, allow_download), split)


def open_benchmark(card: dict, spec) -> object:
    """The ``datasets.Dataset`` of the spec's split: its local copy ``path``, else the card's hub id."""
    split = spec.split or card["split"]
    if spec.path is not None and not Path(spec.path).expanduser().is_dir():
        raise ConfigError(f"dataset path {spec.path!r} is not a folder (a local copy of {card['hub']})")
    return open_split(spec.path or spec.hub or card["hub"], split, spec.revision, spec.allow_download)


def _check_columns(card: dict, columns: list[str], where: str) -> None:
    wanted = [*card["id"], *card.get("fields", {}).values(), *card.get("groups", {}).values()]
    if (card.get("turns") or {}).get("column"):
        wanted.append(card["turns"]["column"])
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise ConfigError(f"dataset {where}: lacks the column(s) {', '.join(missing)} that card {card['name']!r} "
                          f"maps; it has {', '.join(columns)}")  # fmt: skip


def column_kind(feature) -> str:
    """A column's type in words: ``string``, ``integer``, ``float``, ``bool``, ``null``, ``image`` (an image
    feature, or the ``{bytes, path}`` struct pandas writes), ``list of <kind>``, else the feature's own name."""
    import datasets

    if isinstance(feature, datasets.Image) or (isinstance(feature, dict) and "bytes" in feature):
        return "image"
    inner = feature[0] if isinstance(feature, list) else getattr(feature, "feature", None)  # [x], Sequence, List
    if inner is not None:
        return f"list of {column_kind(inner)}"
    if not isinstance(feature, datasets.Value):
        return type(feature).__name__
    dtype = feature.dtype
    if dtype in ("string", "large_string"):
        return "string"
    if dtype.startswith(("int", "uint")):
        return "integer"
    return "float" if dtype.startswith("float") else dtype  # bool, null, binary, ...


def column_roles(card: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(column, what the card reads it as, the column kinds that allows) for every column the card maps."""
    roles = [(c, "part of the sample id", ("string", "integer")) for c in card["id"]]
    turns = card.get("turns") or {}
    for field, column in card.get("fields", {}).items():
        kinds = ("image",) if field in IMAGE_FIELDS else ("string",)
        if field == REFERENCES:  # one image or a list of them, every turn's
            roles.append((column, field, ("image", "list of image", "null")))
            continue
        if turns.get("list"):  # a chain's row may hold one entry per turn
            kinds += tuple(f"list of {kind}" for kind in kinds)
        roles.append((column, field, kinds + ("null",) * (field != "image")))  # an optional field may be empty
    roles += [(c, f"group {name!r}", ("string", "bool", "integer")) for name, c in card.get("groups", {}).items()]
    if turns.get("column"):
        first = card["turns"]["first"]
        kind = "integer" if isinstance(first, int) else "string"
        roles.append((card["turns"]["column"], f"the turn (first turn {first!r})", (kind,)))
    return roles


def _check_types(card: dict, features, where: str) -> None:
    """A ``ConfigError`` naming the first column whose type is not what the card reads it as."""
    for column, role, kinds in column_roles(card):
        kind = column_kind(features[column])
        if kind not in kinds:
            found = features[column].dtype if kind in ("integer", "float") else kind  # int64, not just integer
            raise ConfigError(f"dataset {where}: column {column!r} holds {found}; card {card['name']!r} reads it as "
                              f"{role}, which needs {' or '.join(k for k in kinds if k != 'null')}")  # fmt: skip


def undecoded(dataset, columns):
    """``dataset`` with its image ``columns`` (or lists of images) left as ``{bytes, path}`` cells, for
    ``image_cell`` to decode."""
    import datasets

    for column in columns:
        feature = dataset.features[column]
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            dataset = dataset.cast_column(column, type(feature)(datasets.Image(decode=False)))
    return dataset


def reference_counts(dataset, column: str | None) -> list[int]:
    """How many reference images each row's ``column`` holds (one image, a list, or null), read from
    the Arrow table without decoding any image; zeros without the column."""
    if column is None:
        return [0] * len(dataset)
    import pyarrow as pa
    import pyarrow.compute as pc

    values = dataset.select_columns([column]).with_format("arrow")[:].column(column)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return pc.fill_null(pc.list_value_length(values), 0).to_pylist()
    return [int(valid) for valid in pc.is_valid(values).to_pylist()]


def load_hub_benchmark(card: dict, spec) -> list[SampleRef]:
    """``SampleRef``s of a hub benchmark, after the card's turn rule; images are decoded per sample on load."""
    where = spec.path or card["hub"]
    dataset = open_benchmark(card, spec)
    _check_columns(card, list(dataset.column_names), where)
    _check_types(card, dataset.features, where)
    fields, groups = card.get("fields", {}), card.get("groups", {})
    images = [fields[f] for f in (*IMAGE_FIELDS, REFERENCES) if f in fields]
    dataset = undecoded(dataset, images)
    meta_columns = [c for c in dict.fromkeys([*card["id"], *fields.values(), *groups.values()]) if c not in images]
    references = reference_counts(dataset, fields.get(REFERENCES))
    turns = card.get("turns") or {}
    if turns.get("column"):
        meta_columns.append(turns["column"])
    meta = dataset.select_columns(meta_columns).to_dict()
    if turns.get("column") and spec.turns == "first" and len(dataset) and turns["first"] not in meta[turns["column"]]:
        present = sorted({repr(v) for v in meta[turns["column"]]})
        raise ConfigError(f"dataset.turns = first keeps the rows whose {turns['column']!r} is {turns['first']!r}; "
                          f"none of the {len(dataset)} rows of {where} has it; values present: {', '.join(present)}")  # fmt: skip
    refs, seen = [], set()
    for row in range(len(dataset)):
        values = {c: meta[c][row] for c in meta_columns}
        sample_id = "_".join(str(values[c]) for c in card["id"])
        if sample_id in seen:
            raise ConfigError(f"dataset {where}: sample id {sample_id!r} (columns {', '.join(card['id'])}) "
                              "appears more than once")  # fmt: skip
        seen.add(sample_id)
        edit_type = values.get(fields.get("edit_type"))
        edit_type = None if edit_type is None else str(edit_type)
        sample_groups = {name: group_value(values[column]) for name, column in groups.items()}
        if turns.get("list"):
            for turn in range(1, len(values[fields[turns["list"]]] or []) + 1):
                turn_id = f"{sample_id}_{turn}"
                load = _row_loader(dataset, row, turn_id, card, sample_groups, turn)
                refs.append(SampleRef(turn_id, edit_type, load, sample_groups, chain=sample_id, turn=turn,
                                      references=references[row]))  # fmt: skip
            continue
        chain = turn = None
        if turns.get("column"):
            turn = int(values[turns["column"]]) - int(turns.get("first", 1)) + 1
            chain = "_".join(str(values[c]) for c in card["id"] if c != turns["column"]) or sample_id
        refs.append(SampleRef(sample_id, edit_type, _row_loader(dataset, row, sample_id, card, sample_groups),
                              sample_groups, chain=chain, turn=turn, references=references[row]))  # fmt: skip
    return refs


def _turn_entry(sample_id: str, value, turn: int, column: str):
    """A list column's entry for ``turn`` (1-based); any other value is every turn's."""
    if not isinstance(value, list):
        return value
    if turn > len(value):
        raise SampleError(sample_id, f"column {column!r} has {len(value)} entries; turn {turn} has none")
    return value[turn - 1]


def image_cell(sample_id: str, value, column: str):
    """The 8-bit image of one cell of ``column``: a ``{bytes, path}`` cell decoded as the ``datasets``
    library does (the bytes, else the file at the path), or an image already decoded."""
    from PIL import Image

    if isinstance(value, dict) and set(value) <= {"bytes", "path"}:
        data, path = value.get("bytes"), value.get("path")
        if data is None and not (path and Path(path).is_file()):
            raise SampleError(sample_id, f"column {column!r}: the image cell has no bytes and no file at its path {path!r}")
        try:
            value = Image.open(io.BytesIO(data) if data is not None else path)
            value.load()
        except Exception as exc:
            raise SampleError(sample_id, f"column {column!r}: cannot decode its image ({_without_reprs(exc)})") from exc
    if not isinstance(value, Image.Image):
        raise SampleError(sample_id, f"column {column!r} holds {type(value).__name__}, not an image")
    return to_eight_bit(sample_id, value, f"column {column!r}")


def _without_reprs(exc: Exception) -> str:
    """An exception's message without object reprs (PIL names the ``<_io.BytesIO object at 0x...>`` it read)."""
    return f"{type(exc).__name__}: " + re.sub(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(exc))


def _mask(img, rule: str) -> np.ndarray:
    """The edit region of a mask image: ``white`` (grey level above 127; MagicBrush's masks are
    white where the edit goes) or ``nonzero``."""
    grey = np.asarray(img.convert("L"))
    return grey > 127 if rule == "white" else grey > 0


def _row_loader(dataset, row: int, sample_id: str, card: dict, groups: dict[str, str],
                turn: int | None = None) -> Callable[[int], Sample]:  # fmt: skip
    """The loader of one row; ``turn``: the row is a chain whose list columns hold one entry per turn."""
    fields = card.get("fields", {})

    def load(size: int) -> Sample:
        try:
            record = dataset[row]
        except Exception as exc:  # an unreadable row fails its own sample
            raise SampleError(sample_id, f"cannot read row {row}: {_without_reprs(exc)}") from exc
        if turn is not None:  # the references are every turn's
            record = {column: value if column == fields.get(REFERENCES) else _turn_entry(sample_id, value, turn, column)
                      for column, value in record.items()}  # fmt: skip
        source = image_cell(sample_id, record[fields["image"]], fields["image"])
        text = {f: record[fields[f]] for f in TEXT_FIELDS if f in fields and (record[fields[f]] or "").strip()}
        target = target_original = mask = None
        if "target_image" in fields and record[fields["target_image"]] is not None:
            truth = image_cell(sample_id, record[fields["target_image"]], fields["target_image"])
            target, target_original = prepare_image(truth, size, like=source.size), image_tensor(truth)
        if "mask" in fields and record[fields["mask"]] is not None:
            mask_img = image_cell(sample_id, record[fields["mask"]], fields["mask"])
            if mask_img.size != source.size:
                raise SampleError(sample_id, f"mask size {mask_img.size} differs from image size {source.size}")
            mask = prepare_mask(_mask(mask_img, card.get("mask_rule", "white")), size)
        return Sample(
            id=sample_id,
            image=prepare_image(source, size),
            source_size=source.size,
            source_prompt=str(text.get("source_prompt", "")),
            target_prompt=text.get("target_prompt"),
            mask=mask,
            edit_type=None if text.get("edit_type") is None else str(text["edit_type"]),
            instruction=text.get("instruction"),
            target_image=target,
            target_original=target_original,
            output_caption=text.get("output_caption"),
            groups=dict(groups),
            reference_images=_references(sample_id, record, fields.get(REFERENCES), size),
        )

    return load


def _references(sample_id: str, record: dict, column: str | None, frame) -> tuple:
    """A row's reference images (its ``column`` holds one image, a list of them, or null), each
    prepared at its own aspect ratio by the frame's reference rule."""
    value = record[column] if column else None
    if value is None:
        return ()
    cells = dict(enumerate(value)) if isinstance(value, list) else {None: value}
    return tuple(prepare_reference(image_cell(sample_id, cell, column if n is None else f"{column}[{n}]"), frame)
                 for n, cell in cells.items())  # fmt: skip


#: What a ``json_map`` item's image keys hold, as ``editbench datasets`` says it.
JSON_MAP_PATHS = {"image": ": a path under the folder", "target_image": ": a path under the folder",
                  REFERENCES: ": a list of paths under the folder"}  # fmt: skip


def _json_map_summary(card: dict) -> list[str]:
    """The local copy of a ``json_map`` card: its manifest's shape and each item's keys."""
    fields = dict(card["fields"])
    if fields.get(REFERENCES) == fields["image"]:  # one key for both (``bench.data._item_entry``)
        del fields[REFERENCES]
        shown = {**JSON_MAP_PATHS, "image": ": a path under the folder, or a list of them: the source, then its "
                                            "reference images"}  # fmt: skip
    else:
        shown = JSON_MAP_PATHS
    keys = ", ".join(f"{column if isinstance(column, str) else ' or '.join(column)} ({field}{shown.get(field, '')})"
                     for field, column in fields.items())  # fmt: skip
    (column,) = card["id"]
    shape = ("{key: {item}}" if column == "key" else f"one record per line keyed by {column}"
             if card["manifest"].endswith(".jsonl") else f"a JSON list of items keyed by {column}")  # fmt: skip
    manifest = card["manifest"].replace("{edit_type}", "<edit type>")
    per_type = " (one per edit type)" * ("{edit_type}" in card["manifest"])
    flags = f"; item flags (set: not null): {', '.join(card['flags'])}" if card.get("flags") else ""
    return [f"  a local copy is a folder with {manifest}{per_type}, {shape}, each item with: {keys}{flags}"]


def card_summary(card: dict) -> list[str]:
    """What a user needs to build a local copy of a hub card's benchmark and what it reports:
    the columns (each once, with what it is read as and the types allowed), the metrics, the
    judge protocol and the table view (``editbench datasets``)."""
    if card["format"] == "json_map":  # one JSON object of items, images as paths
        lines = _json_map_summary(card)
    else:
        roles: dict[str, list] = {}
        for column, role, kinds in column_roles(card):
            entry = roles.setdefault(column, [[], kinds])
            entry[0].append(role)
            entry[1] = tuple(k for k in entry[1] if k in kinds)  # read in several roles: what all of them allow
        columns = "; ".join(f"{c} ({', '.join(r)}: {' | '.join(k)})" for c, (r, k) in roles.items())
        lines = [f"  columns a local copy must have: {columns}"]
    if card.get("metrics"):
        lines.append(f"  metrics: {', '.join(card['metrics'])}")
    judge = card.get("judge")
    if judge:
        metrics = f"; metrics {', '.join(judge['metrics'])}" if judge.get("metrics") else ""
        request = f"; the authors' request: metric_options.judge.request {judge['request']}" if judge.get("request") else ""
        lines.append(f"  judge protocol: {judge['protocol']}{metrics}, scale {judge['scale']}, answer {judge['answer']}; "
                     f"per sample: {judge['sample_score']}{request}")  # fmt: skip
    view = card.get("table")
    if view:
        names = " or ".join([card["name"], *view.get("aliases", [])])
        overall = view.get("overall", {})
        if view.get("kind") == "elo":
            lines.append(f"  table: editbench report RUN --table {names} (Elo per row from RUN/pairwise.jsonl, "
                         "written by editbench pairwise)")
            return lines
        lines.append(f"  table: editbench report RUN --table {names} ({', '.join(view['columns'].values())} per "
                     f"{view.get('row_title', 'category')}; {overall.get('name')} = {overall.get('rule')})")  # fmt: skip
    return lines
