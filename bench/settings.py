"""A method's settings as people read them: parameters in the method's declared order, the ones
that vary between settings, and the short label (``t0=0.3, w=7.5``) that names a setting in
plans, tables, figures and comparisons."""

import json

from bench.errors import ConfigError
from bench.registry import get_method


def param_order(method: str, keys: list[str]) -> list[str]:
    """Parameter names in the method's declared order (stored settings have sorted keys)."""
    try:
        declared = [p.name for p in get_method(method).params]
    except ConfigError:  # a method that no longer exists: keep the stored order
        return list(keys)
    return sorted(keys, key=lambda k: declared.index(k) if k in declared else len(declared))


def unused_params(method: str, setting: dict) -> frozenset[str]:
    """The parameters ``setting`` does not read (``Method.unused_params``); none for an unknown method."""
    try:
        return get_method(method).unused_params(setting)
    except ConfigError:
        return frozenset()


def varying_params(method: str, settings: list[dict]) -> tuple[list[str], dict]:
    """(parameters that differ between ``settings``, values of the ones that do not and that some
    setting reads: options that apply to none, e.g. ``external``'s ``manifest`` when it reads a
    folder, are left out)."""
    keys = param_order(method, list(settings[0])) if settings else []
    varying = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    unread = frozenset.intersection(*(unused_params(method, s) for s in settings)) if settings else frozenset()
    return varying, {k: settings[0][k] for k in keys if k not in varying and k not in unread}


def setting_label(setting: dict, varying: list[str]) -> str:
    return ", ".join(f"{k}={setting[k]}" for k in varying) or "—"


def followers(settings: list[dict], varying: list[str]) -> dict[str, str]:
    """Swept parameters whose value another swept parameter determines (a ``zip``, e.g.
    ``inversion_w`` paired with ``inversion``), each mapped to the parameter it follows.

    ``b`` follows ``a`` when every value of ``a`` comes with one value of ``b``; when each
    determines the other (two zipped lists of distinct values), the later one follows. A
    follower adds no information to plots: it gets no panel and splits no legend."""

    def determines(a: str, b: str) -> bool:
        seen: dict[str, str] = {}
        pairs = [(json.dumps(s.get(a)), json.dumps(s.get(b))) for s in settings]
        return all(seen.setdefault(value_a, value_b) == value_b for value_a, value_b in pairs)

    out = {}
    for b in varying:
        for a in varying:
            if a != b and a not in out and determines(a, b):
                if not determines(b, a) or varying.index(a) < varying.index(b):
                    out[b] = a
                    break
    return out
