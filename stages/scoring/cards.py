"""Test items as pictures: the input images beside the expected, base and fine-tuned answers, each field marked right
or wrong. The compare stage draws the fine-tuned model's worst items and a fixed sample (the first items of the test
split, the same in every experiment on that split), so `dvc plots diff <a> <b>` shows two experiments side by side."""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from stages.scoring.answers import label, value
from stages.scoring.measures import correct

THUMB = 160          # px: the height each input image is drawn at (the embedded default's 64 px: x2.5, unsmoothed)
TEXT = 15            # px: font size
WIDTH = 380          # px: the text column (a card is ~730 px wide: two revisions side by side fit a screen)
RIGHT, WRONG, INK, GREY = (18, 130, 60), (200, 40, 40), (20, 20, 20), (110, 110, 110)
# Fonts with CJK glyphs where systems keep them (Debian/Ubuntu fonts-noto-cjk, fonts-wqy-zenhei, macOS, Windows);
# without one, Chinese answers are drawn as empty boxes (the log says so once)
CJK_FONTS = ["/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
             "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", "/System/Library/Fonts/PingFang.ttc",
             "C:/Windows/Fonts/msyh.ttc"]
log = logging.getLogger("cards")


@lru_cache(maxsize=1)
def font() -> ImageFont.ImageFont:
    for path in CJK_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, TEXT)
    log.info("no font with Chinese glyphs found (e.g. apt install fonts-noto-cjk): Chinese text in the example "
             "pictures is drawn as boxes")
    return ImageFont.load_default(TEXT)


def wrap(text: str, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """`text` in lines no wider than `width` px, broken at any character (Chinese has no spaces)."""
    lines, line = [], ""
    for c in text:
        if draw.textlength(line + c, font=font()) > width and line:
            lines.append(line)
            line = ""
        line += c
    return lines + [line]


def answer_lines(name: str, pred: dict | None, ref: dict, specs: dict, status: str) -> list[tuple[str, tuple]]:
    """One model's answer as (text, colour) lines: each field's value, green where right, red where wrong."""
    if pred is None:
        return [(f"{name}: no answer ({status})", WRONG)]
    head = f"{name}:" if status == "ok" else f"{name} ({status}):"
    return [(head, INK)] + [(f"  {f}: {label(value(pred, f))}", RIGHT if correct(s, ref[f], value(pred, f)) else WRONG)
                            for f, s in specs.items()]


def card(images: list[Path], title: str, ref: dict, answers: dict[str, tuple[dict | None, str]],
         specs: dict) -> Image.Image:
    """One test item: its images in a row (scaled to THUMB px high, pixels kept sharp), then the text column."""
    thumbs = []
    for path in images:
        with Image.open(path) as im:
            im = im.convert("RGB")   # as ms-swift reads it (no EXIF rotation: the build stage refuses one)
            thumbs.append(im.resize((max(1, round(im.width * THUMB / im.height)), THUMB), Image.NEAREST))
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [(title, GREY), ("expected:", INK)] + [(f"  {f}: {label(ref[f])}", INK) for f in specs]
    for name, (pred, status) in answers.items():
        lines += answer_lines(name, pred, ref, specs, status)
    drawn = [(part, colour) for text, colour in lines for part in wrap(text, WIDTH, scratch)]
    step = TEXT + 5
    left = sum(t.width for t in thumbs) + 8 * (len(thumbs) + 1)
    out = Image.new("RGB", (left + WIDTH + 8, max(THUMB + 16, step * len(drawn) + 16)), "white")
    x = 8
    for t in thumbs:
        out.paste(t, (x, 8))
        x += t.width + 8
    draw = ImageDraw.Draw(out)
    for i, (text, colour) in enumerate(drawn):
        draw.text((left, 8 + i * step), text, fill=colour, font=font())
    return out


def picked(worst: list[int], n_items: int, k: int) -> dict[str, int]:
    """File name -> test item: the `k` worst (worst_01 ...) and the first `k` items of the split (sample_01 ...)."""
    return {**{f"worst_{j:02d}.png": i for j, i in enumerate(worst[:k], 1)},
            **{f"sample_{j:02d}.png": i for j, i in enumerate(range(min(k, n_items)), 1)}}
