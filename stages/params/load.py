"""Reading params.yaml: the working copy, and the committed one that `dvc exp run -S ...` starts from."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-05` (no dot) as a string, and that is how `dvc exp run -S train.learning_rate=3e-5`
    writes a small float into params.yaml; YAML 1.2 (and DVC's own parser) read it as a float, as here."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=ParamsLoader)


def committed_params(repo: Path) -> dict | None:
    """params.yaml as committed at git HEAD in `repo` (the baseline of `dvc exp run -S ...`), None outside a git
    repository."""
    try:
        text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    try:
        return yaml.load(text, Loader=ParamsLoader) or None
    except yaml.YAMLError:
        return None
