"""params as a tree of sections and as dotted keys (`train.learning_rate`), the way dvc.yaml and `-S` name them."""
from __future__ import annotations


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


def project(params: dict, keys: list[str]) -> dict:
    """Only the dotted `keys` of `params`, nested as in params.yaml."""
    out: dict = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = params, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        dst[leaf] = src[leaf]
    return out
