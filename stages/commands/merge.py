"""Command (not a DVC stage): `python -m stages.commands.merge` merges the LoRA adapter into the base model
(`swift export --merge_lora true`) -> models/merged, a plain model directory for deployment or
quantized export. Run it after `dvc repro`; it reads the same params as inference.
"""
from __future__ import annotations

import logging

from stages.common import ROOT, run, setup_logging, stage_params, swift_env, swift_exe
from stages.infer import adapter_trained, model_argv
from stages.storage.atomic import atomic_dir

OUT = ROOT / "models" / "merged"
log = logging.getLogger("merge")


def merge_argv(p: dict, output_dir: str) -> list[str]:
    return [swift_exe(), "export", *model_argv(p, "finetuned"), "--merge_lora", "true", "--output_dir", output_dir]


def main() -> None:
    setup_logging()
    if not adapter_trained():
        raise SystemExit("models/adapter holds no LoRA adapter: run `dvc repro` first "
                         "(after train.tuner_type: full, models/adapter already is the whole model)")
    p = stage_params("infer_finetuned")
    with atomic_dir(OUT, cached=False) as tmp:   # swift export refuses an existing output_dir: it writes a subfolder
        run(merge_argv(p, str((tmp / "model").relative_to(ROOT))), env=swift_env(p["model"]))
        for f in (tmp / "model").iterdir():
            f.rename(tmp / f.name)
        (tmp / "model").rmdir()
    log.info("merged model written to %s", OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()
