"""Pure checks of the serve command: where it may listen, what the test set says a request looks like,
and what in a request the model cannot answer."""
from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from stages.dataset.images import EXIF_ORIENTATION, pixel_problem

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
KEY_ENV = "SERVE_API_KEY"
MIN_KEY_LENGTH = 16   # characters: a short key is guessed by trying
IMAGE_PARTS = frozenset({"image", "image_url"})


def bind_problem(host: str, key: str | None) -> str | None:
    """A server reachable from other machines answers anyone who can route to it (and ms-swift fetches
    the image URLs a request names), so it needs a key there; on this machine alone it may run without."""
    if key is not None and len(key) < MIN_KEY_LENGTH:
        return (f"{KEY_ENV} is {len(key)} characters long; use at least {MIN_KEY_LENGTH} random ones, e.g. "
                f"export {KEY_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if host in LOCAL_HOSTS or key:
        return None
    return (f"--host {host} makes the server reachable from other machines: set an API key in the environment "
            f"first (export {KEY_ENV}=...; clients send it as their api_key), or keep the default --host 127.0.0.1")


def dataset_shape(rows: list[dict]) -> tuple[str | None, set[int]]:
    """(the system prompt every test row has, or None when there is none or they differ; the image counts of
    the rows): a request without a system message gets the test set's, and the number of images must be one
    the model was evaluated on."""
    systems = {next((m["content"] for m in r["messages"] if m["role"] == "system"), None) for r in rows}
    system = systems.pop() if len(systems) == 1 else None
    return system, {len(r.get("images") or []) for r in rows}


def image_values(messages: list[dict], images: list | None = None) -> list:
    """The images of an OpenAI chat request, in order: the image parts of every message (a data: URL, an
    http(s) URL, or base64 once ms-swift has inlined a file), then ms-swift's own `images` list."""
    values = []
    for m in messages:
        for part in m.get("content") if isinstance(m.get("content"), list) else []:
            if isinstance(part, dict) and part.get("type") in IMAGE_PARTS:
                value = part.get(part["type"])
                values.append(value.get("url") if isinstance(value, dict) else value)
    return values + list(images or [])


def inline_bytes(value) -> bytes | None:
    """The bytes of a data: URL or bare base64 image; None for what ms-swift fetches itself (an http(s) URL)."""
    if not isinstance(value, str) or value.strip().lower().startswith(("http://", "https://")):
        return None
    data = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        return b""   # not base64: no image decodes from it


def max_pixels(budget: int) -> int:
    """The largest image the server decodes: 16 times the pixels the model sees (`budget`; ms-swift downscales
    anything larger to it), and at least 4 MP, a phone photo. A 150 KB PNG can hold 179 MP (0.8 GB decoded)."""
    return max(16 * budget, 1 << 22)


def image_problems(values: list, model_type: str, most_pixels: int = 1 << 22) -> list[str]:
    """Every image that does not decode, by its place in the request, decoded in full (a truncated PNG opens
    and only fails on reading its pixels), or that the model cannot use faithfully (the build stage's limits).
    An image over `most_pixels` is refused from its header, before its pixels are decoded."""
    problems = []
    for i, value in enumerate(values, 1):
        data = inline_bytes(value)
        if data is None:
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode, (w, h) = im.mode, im.size
                if w * h > most_pixels:
                    problems.append(f"image {i} of {len(values)}: {w}x{h} px ({w * h / 1e6:.1f} MP); this server "
                                    f"decodes at most {most_pixels / 1e6:.1f} MP (16 times what the model sees, which "
                                    "it would downscale to): send it smaller")
                    continue
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
                im.load()
            if problem := pixel_problem(mode, w, h, model_type, orientation):
                problems.append(f"image {i} of {len(values)}: {problem.replace(' (README: Your own data)', '')}")
        except UnidentifiedImageError:
            problems.append(f"image {i} of {len(values)}: not an image (no format Pillow reads: PNG, JPEG, TIFF, ...)")
        except Exception as e:   # Pillow raises OSError, SyntaxError, ValueError... for broken files
            problems.append(f"image {i} of {len(values)}: a broken image ({e})")
    return problems


def validation_message(errors: list[dict]) -> str:
    """FastAPI's 422 detail without the request echoed back (it would return every image as base64). A file
    name that is not a file on the server reaches ms-swift's request parsing as `value: <name>`."""
    lines = []
    for e in errors:
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if msg.startswith("value: "):
            msg = (f"image {msg[7:]!r}: not a file on the server, a data: URL (data:image/png;base64,...) "
                   "or an http(s) URL")
        lines.append(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {msg}" if e.get("loc", ())[1:]
                     else msg)
    return "; ".join(lines)


def image_count_problem(n: int, counts: set[int]) -> str | None:
    if n in counts:
        return None
    valid = " or ".join(str(c) for c in sorted(counts))
    return (f"the request has {n} image{'' if n == 1 else 's'}; this model was trained and evaluated on "
            f"{valid} per request (in the order of the test set's rows)")
