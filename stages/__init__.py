"""Pipeline stages: one module per stage in dvc.yaml, plus shared helpers in common.py."""
