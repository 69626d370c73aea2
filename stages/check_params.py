"""Stage `check_params`: params.yaml against the schema (stages/params/), every problem listed at once.

It reruns on any change to params.yaml, so a typo in a key that no stage declares (`lora.rnak`) still fails
`dvc repro` instead of being silently ignored, and so does a knob changed where it has no effect (against the
committed params.yaml, the baseline of `dvc exp run -S ...`). It also refuses a data/raw holding a user's
files, which the generate stage would replace (that stage checks it again itself, since it may run first).
"""
from __future__ import annotations

import sys

from stages.common import PARAMS_FILE, ROOT, setup_logging
from stages.params import ParamsError, validate
from stages.params.load import committed_params, read_yaml
from stages.params.paths import synth_folder_problem


def main() -> None:
    setup_logging()
    try:
        validate(read_yaml(PARAMS_FILE) or {}, committed_params(ROOT))
    except ParamsError as e:
        sys.exit(str(e))
    if problem := synth_folder_problem(ROOT):
        sys.exit(problem)


if __name__ == "__main__":
    main()
