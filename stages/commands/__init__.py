"""Commands beside the pipeline, run by hand on its outputs (none is a DVC stage):

    python -m stages.commands.predict A.png B.png     the fine-tuned model's answer for one set of images
    python -m stages.commands.merge                   the adapter merged into the base model -> models/merged
    dvc exp run $(python -m stages.commands.profile params-gpu.yaml)   a params profile as -S options
"""
