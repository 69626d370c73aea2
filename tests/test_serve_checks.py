"""The serve command's pure parts: where it may listen, the shape of a request, images that cannot be decoded,
and the `swift deploy` arguments it derives from the infer stage's params."""
import base64
import io
import socket

import numpy as np
from PIL import Image

from stages.commands.serve import deploy_argv, port_problem
from stages.common import stage_params
from stages.infer import generation_argv, infer_argv
from stages.serving.checks import (bind_problem, image_count_problem, image_problems, image_values, inline_bytes,
                                   dataset_shape, validation_message)
from stages.serving.client import row_messages


def png(size=(64, 64)) -> bytes:
    b = io.BytesIO()
    n = size[0] * size[1]
    Image.frombytes("L", size, (bytes(range(256)) * (n // 256 + 1))[:n]).save(b, "PNG")
    return b.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_other_addresses_need_a_key():
    assert bind_problem("127.0.0.1", None) is None and bind_problem("localhost", None) is None
    assert bind_problem("::1", None) is None
    refusal = bind_problem("0.0.0.0", None)
    assert "SERVE_API_KEY" in refusal and "127.0.0.1" in refusal
    assert bind_problem("127.0.0.2", None)           # only the names of this machine count as local
    assert bind_problem("0.0.0.0", "k" * 16) is None
    short = bind_problem("0.0.0.0", "k3y45")                   # a 5-character key was accepted
    assert short.startswith("SERVE_API_KEY is 5 characters long; use at least 16 random ones")
    assert bind_problem("127.0.0.1", "k3y45") == short


def test_an_image_too_large_to_decode_is_refused_from_its_header():
    """A 150 KB PNG of 179 megapixels cost the server ~0.8 GB to decode; now its header is enough to refuse it."""
    from stages.dataset.checks import pixel_budget
    from stages.serving.checks import max_pixels

    budget = pixel_budget({"image_max_token_num": 4, "model_type": "qwen3_vl"})
    assert budget == 4096 and max_pixels(budget) == 1 << 22                 # the tiny default: a phone photo's 4 MP
    assert max_pixels(pixel_budget({"image_max_token_num": 1280, "model_type": "qwen3_vl"})) == 16 * 1280 * 1024
    big = png((4096, 1025))                                                 # 4.2 MP, cheap to encode: one colour
    problems = image_problems([data_url(png()), data_url(big)], "qwen3_vl", max_pixels(budget))
    assert problems == ["image 2 of 2: 4096x1025 px (4.2 MP); this server decodes at most 4.2 MP (16 times what the "
                        "model sees, which it would downscale to): send it smaller"]


def test_a_taken_port_is_refused_not_moved():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert f"127.0.0.1:{port}" in port_problem("127.0.0.1", port)
    assert port_problem("127.0.0.1", port) is None


def test_the_test_set_gives_the_system_prompt_and_image_counts():
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "<image><image>q"}],
           "images": ["a", "b"]}
    assert dataset_shape([row, row]) == ("S", {2})
    other = {"messages": [{"role": "user", "content": "<image>q"}], "images": ["a"]}
    assert dataset_shape([row, other]) == (None, {1, 2})    # systems differ: no default, requests bring theirs


def test_images_of_a_request_in_order():
    messages = [{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "A"}},
                                             {"type": "text", "text": "t"}, {"type": "image", "image": "B"}]}]
    assert image_values(messages, ["C"]) == ["A", "B", "C"]
    assert image_values([{"role": "user", "content": "just text"}]) == []


def test_image_count_problem_names_what_is_valid():
    assert image_count_problem(2, {2}) is None
    assert "1 image;" in image_count_problem(1, {2}) and "2 per request" in image_count_problem(1, {2})
    assert "1 or 2" in image_count_problem(3, {1, 2})


def test_every_undecodable_image_is_named_by_its_place():
    good = png()
    truncated = good[:len(good) // 2]                 # opens (the header is whole) and fails on its pixels
    problems = image_problems([data_url(good), data_url(truncated), data_url(b"plain text"),
                               base64.b64encode(good).decode(), "https://example.com/x.png", "not base64 at all!"],
                              "qwen3_vl")
    assert problems[0].startswith("image 2 of 6: a broken image")
    assert problems[1].startswith("image 3 of 6: not an image")
    assert problems[2].startswith("image 6 of 6: not an image") and len(problems) == 3
    assert inline_bytes("http://host/x.png") is None and inline_bytes(data_url(b"ab")) == b"ab"


def test_images_the_model_cannot_use_faithfully_are_refused():
    b = io.BytesIO()
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(b, "PNG")   # a 16-bit camera frame
    problems = image_problems([data_url(b.getvalue()), data_url(png((3, 3))), data_url(png((16, 3400)))], "qwen3_vl")
    assert problems[0].startswith("image 1 of 3: is 16-bit (Pillow mode I;16): ms-swift would clip it to 8 bits")
    assert problems[1].startswith("image 2 of 3: is 3x3 px, too small to be read as an image")
    assert problems[2].startswith("image 3 of 3: has an aspect ratio of 212.5 (16x3400 px)")


def test_a_validation_error_is_short_and_echoes_no_image():
    errors = [{"loc": ("body",), "msg": "Value error, value: /no/such.png", "input": {"images": ["x" * 10000]}}]
    message = validation_message(errors)
    assert message.startswith("image '/no/such.png': not a file on the server") and "xxxx" not in message
    assert validation_message([{"loc": ("body", "model"), "msg": "Field required"}]) == "model: Field required"


def test_deploy_argv_is_the_infer_stages_model_and_generation():
    p = stage_params("infer_finetuned")
    argv = deploy_argv(p, "finetuned", False, "127.0.0.1", 8123, "Be brief.", 1024)
    infer = infer_argv(p, "finetuned", "out.jsonl")
    shared = infer[2:infer.index("--val_dataset")] + generation_argv(p)
    assert infer[infer.index("--infer_backend"):][:len(generation_argv(p))] == generation_argv(p)
    assert argv[:len(shared)] == shared                      # model, adapter, template, greedy, token limit
    o = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert o["--host"] == "127.0.0.1" and o["--port"] == "8123" and o["--served_model_name"] == "finetuned"
    assert o["--system"] == "Be brief." and o["--max_length"] == "1024" and o["--temperature"] == "0"
    assert "--system" not in deploy_argv(p, "base", False, "127.0.0.1", 8123, None, 1024)
    merged = deploy_argv(p, "merged", False, "127.0.0.1", 8123, None, 1024)
    assert merged[merged.index("--model") + 1] == "models/merged" and "--adapters" not in merged


def test_a_row_becomes_the_request_that_asks_the_same(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(png())
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "<image>then<image>q"},
                        {"role": "assistant", "content": "answer"}], "images": ["a.png", "b.png"]}
    system, user = row_messages(row, tmp_path)
    assert system == {"role": "system", "content": "S"} and len(row_messages(row, tmp_path)) == 2
    assert [p["type"] for p in user["content"]] == ["image_url", "text", "image_url", "text"]
    assert [p["text"] for p in user["content"] if p["type"] == "text"] == ["then", "q"]
    assert inline_bytes(user["content"][0]["image_url"]["url"]) == png()
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
