"""params.yaml: its schema (schema.py), the rules between keys (rules.py), dotted keys (tree.py), reading (load.py).

    validate(params, reference) -> params, or ParamsError listing every problem at once
"""
from stages.params.schema import ParamsError, validate

__all__ = ["ParamsError", "validate"]
