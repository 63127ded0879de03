"""Type checks of dataset entries (JSONL manifest lines, PIE-Bench mapping entries).

They run when a manifest is read, so a wrong type fails its own sample with one message that
names the field, what was given and what is allowed, instead of a misleading error later
(e.g. from the tokenizer). ``data.py`` turns the message into a ``SampleError``.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """How one field is checked: ``check(value)``, the allowed values in words, and whether it
    must be present (and, for text, non-blank); ``kind`` names it in "missing required ..."."""

    check: Callable[[object], bool]
    allowed: str
    required: bool = False
    kind: str = "field"


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _optional_text(value) -> bool:
    return value is None or isinstance(value, str)


def _groups(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _id(value) -> bool:
    return _text(value) or _integer(value)


def _shapes(value) -> bool:
    def shape(s) -> bool:
        box = s.get("box") if isinstance(s, dict) else None
        return (
            set(s) == {"shape", "box"}
            and s["shape"] in ("box", "ellipse")
            and isinstance(box, list)
            and len(box) == 4
            and all(_number(x) for x in box)
        )

    return isinstance(value, list) and all(shape(s) for s in value)


def _word_pair(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return len(value.split()) in (0, 2)
    return isinstance(value, list) and len(value) in (0, 2) and all(_text(w) for w in value)


def _texts(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_text(v) for v in value)


def _paths(value) -> bool:
    return isinstance(value, list) and all(_text(v) for v in value)


def _optional_texts(value) -> bool:
    return value is None or (isinstance(value, list) and all(_optional_text(v) for v in value))


def _label(value) -> bool:
    return value is None or _integer(value) or isinstance(value, str)


def _run_lengths(value) -> bool:
    return value is None or (isinstance(value, list) and all(_integer(v) and v >= 0 for v in value))


def _type_id(value) -> bool:
    return _integer(value) or (isinstance(value, str) and value.strip().isdigit())


PROMPT = "a non-empty string"
WORD_PAIR = "two words: a list [source word, target word] or a string 'source target' (or empty)"

JSONL_FIELDS = {
    "id": Field(_id, "a non-empty string or an integer", required=True),
    "image": Field(_text, "a path relative to the manifest (a non-empty string)", required=True),
    "source_prompt": Field(_text, PROMPT, required=True, kind="prompt"),
    "target_prompt": Field(_optional_text, "a string or null"),
    "mask": Field(_text, "a path relative to the manifest (a non-empty string)"),
    "mask_shapes": Field(_shapes, "a list of {shape: box|ellipse, box: [x0, y0, x1, y1]} in fractions of width and height"),
    "edit_words": Field(_word_pair, WORD_PAIR),
    "edit_type": Field(_optional_text, "an edit type name (a string) or null"),
    "class_label": Field(_label, "an ImageNet class index (integer) or name (string), or null"),
    "instruction": Field(_optional_text, "an edit instruction (a string) or null"),
    "target_image": Field(_text, "a path relative to the manifest (a non-empty string): a reference image"),
    "reference_images": Field(_paths, "a list of paths relative to the manifest (non-empty strings): further input "
                              "images, e.g. Qwen-Image-Edit-2509's Picture 2, FLUX.2's references"),
    "explanation": Field(_optional_text, "what the right result is and why (a string) or null, for a judge prompt"),
    "groups": Field(_groups, 'an object of string values naming its subsets, e.g. {"language": "en"}'),
    "instructions": Field(_texts, "a non-empty list of edit instructions, one per turn (a multi-turn sample)"),
    "target_prompts": Field(_optional_texts, "a list of target prompts (strings or null), one per turn"),
}

PIE_FIELDS = {
    "image_path": Field(_text, "a path under annotation_images/ (a non-empty string)", required=True),
    "original_prompt": Field(_text, PROMPT, required=True, kind="prompt"),
    "editing_prompt": Field(_text, PROMPT, required=True, kind="prompt"),
    "editing_instruction": Field(_optional_text, "a string or null"),
    "editing_type_id": Field(_type_id, "an edit type index 0..9 (integer or digit string)"),
    "blended_word": Field(_word_pair, WORD_PAIR),
    "mask": Field(_run_lengths, "a run-length list [start, length, ...] of non-negative integers"),
}

_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}


def _shown(value) -> str:
    text = json.dumps(value, default=str)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({_JSON_TYPES.get(type(value), type(value).__name__)})"


def field_error(entry: dict, fields: dict[str, Field]) -> str | None:
    """What is wrong with the first bad field of ``entry`` (missing, blank or of the wrong type), or ``None``."""
    for name, field in fields.items():
        value = entry.get(name)
        blank = value is None or (isinstance(value, str) and not value.strip())
        if field.required and blank:
            return f"missing required {field.kind} {name!r}"
        if name in entry and not field.check(value):
            return f"field {name!r} is {_shown(value)}; expected {field.allowed}"
    return None
