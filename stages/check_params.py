"""Stage `check_params`: params.yaml against the schema (stages/params/), every problem listed at once.

It reruns on any change to params.yaml, so a typo in a key that no stage declares (`lora.rnak`) still fails
`dvc repro` instead of being silently ignored, and so does a knob changed where it has no effect (against the
committed params.yaml, the baseline of `dvc exp run -S ...`).
"""
from __future__ import annotations

import sys

from stages.common import PARAMS_FILE, ROOT, setup_logging
from stages.params import ParamsError, validate
from stages.params.load import committed_params, read_yaml


def main() -> None:
    setup_logging()
    try:
        validate(read_yaml(PARAMS_FILE) or {}, committed_params(ROOT))
    except ParamsError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
