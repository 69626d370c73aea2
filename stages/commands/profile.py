"""A params profile (a YAML file shaped like params.yaml, holding only the keys it changes) -> the
`-S key=value` options of `dvc exp run`, after checking the merged result against the schema:

    dvc exp run $(python -m stages.commands.profile params-gpu.yaml)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from stages.common import PARAMS_FILE, load_params
from stages.params import ParamsError, validate
from stages.params.load import read_yaml
from stages.params.tree import flatten, merge


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
        raise SystemExit("usage: dvc exp run $(python -m stages.commands.profile PROFILE.yaml)")
    path = Path(sys.argv[1])
    profile = read_yaml(path) or {}
    try:
        print(" ".join(set_options(profile, load_params(PARAMS_FILE))))
    except ParamsError as e:
        raise SystemExit(f"{path} applied on params.yaml: {e}") from None


if __name__ == "__main__":
    main()
