"""OpenAI chat messages for the served model: a file as an image part, and a data set row as the request that
asks what that row asks (the same system prompt, text and images, in the same order)."""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path


def image_part(path: str | Path) -> dict:
    """The image inside the request, so that the server needs no access to the client's files."""
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def row_messages(row: dict, root: Path = Path(".")) -> list[dict]:
    """An ms-swift row's messages before its answer (the last assistant turn) as OpenAI messages, its
    `<image>` tags standing for `images`, in order."""
    messages, images, n = [], list(row.get("images") or []), 0
    turns = row["messages"][:-1] if row["messages"][-1]["role"] == "assistant" else row["messages"]
    for m in turns:
        if m["role"] != "user":
            messages.append({"role": m["role"], "content": m["content"]})
        else:
            parts = []
            for i, text in enumerate(m["content"].split("<image>")):
                if i:
                    parts.append(image_part(root / images[n]))
                    n += 1
                if text:
                    parts.append({"type": "text", "text": text})
            messages.append({"role": "user", "content": parts})
    return messages
