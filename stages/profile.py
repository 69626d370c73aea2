"""A params profile (a YAML file shaped like params.yaml, holding only the keys it changes) -> the
`-S key=value` options of `dvc exp run`, after checking the merged result against the schema:

    dvc exp run $(python -m stages.profile params-gpu.yaml)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from stages.common import PARAMS_FILE, load_params, read_yaml
from stages.schema import ParamsError, validate


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'learning_rate': 1e-4}} -> {'train.learning_rate': 1e-4}; lists and {} are values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def set_dotted(tree: dict, key: str, value, strict: bool = False) -> None:
    """tree['train']['learning_rate'] = value for key 'train.learning_rate' (flatten's keys); `strict`: the key
    must already be there (a typo raises KeyError instead of adding a new key)."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node[part]
    if strict and leaf not in node:
        raise KeyError(f"{key}: no such key in params.yaml")
    node[leaf] = value


def merge(base: dict, overrides: dict) -> dict:
    """`base` with every key of `overrides` replaced (nested sections merged, not replaced)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def set_options(profile: dict, base: dict) -> list[str]:
    """The -S options for `profile` applied on `base`; raises ParamsError if the result is invalid."""
    validate(merge(base, profile))
    # DVC parses each value as YAML, so JSON (a YAML subset) keeps types: 1.0e-4, true, "", ["all-linear"].
    options = [f"-S{key}={json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
               for key, value in flatten(profile).items()]
    if spaced := [o for o in options if any(c.isspace() for c in o)]:
        raise ParamsError(f"{', '.join(spaced)}: a value with spaces does not survive $(...) word splitting; "
                          "set it in params.yaml or pass that -S option by hand, quoted")
    return options


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: dvc exp run $(python -m stages.profile PROFILE.yaml)")
    path = Path(sys.argv[1])
    profile = read_yaml(path) or {}
    try:
        print(" ".join(set_options(profile, load_params(PARAMS_FILE))))
    except ParamsError as e:
        raise SystemExit(f"{path} applied on params.yaml: {e}") from None


if __name__ == "__main__":
    main()
