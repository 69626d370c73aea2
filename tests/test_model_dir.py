"""The model stage's checks of a model directory: complete, every JSON config parses, and nothing in it makes
transformers run code from the directory or another folder."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from stages.model import ModelDirError, check_model_dir, code_references, remote_code, safetensors_problem


def model_dir(tmp_path, **configs):
    for name, text in {"config.json": '{"model_type": "qwen3_vl"}', "tokenizer_config.json": "{}", **configs}.items():
        (tmp_path / name).write_text(text if isinstance(text, str) else json.dumps(text), encoding="utf-8")
    save_file({"w": np.zeros((4, 4), np.float32)}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_a_clean_directory_passes(tmp_path):
    d = model_dir(tmp_path, **{"generation_config.json": {"do_sample": False}})
    check_model_dir(d)
    assert remote_code(d) == []


@pytest.mark.parametrize("name", ["processor_config.json", "preprocessor_config.json", "tokenizer_config.json",
                                  "generation_config.json", "config.json"])
def test_auto_map_in_any_config_is_remote_code(tmp_path, name):
    d = model_dir(tmp_path, **{name: {"auto_map": {"AutoProcessor": "../other--proc.Evil"}}})
    assert remote_code(d) == [f"{name}: auto_map"]


def test_a_class_from_another_folder_is_remote_code(tmp_path):
    d = model_dir(tmp_path, **{"tokenizer_config.json": {"tokenizer_class": "../x--tok.Evil"},
                               "processor_config.json": {"processor_class": "Qwen3VLProcessor"}})
    assert remote_code(d) == ["tokenizer_config.json: tokenizer_class: ../x--tok.Evil"]
    assert code_references({"a": [{"image_processor_class": "r--m.C"}]}) == ["image_processor_class: r--m.C"]


def test_python_files_are_remote_code(tmp_path):
    d = model_dir(tmp_path)
    (d / "sub").mkdir()
    (d / "sub" / "modeling_x.py").write_text("", encoding="utf-8")
    assert remote_code(d) == ["sub/modeling_x.py"]


def test_a_truncated_config_is_named(tmp_path):
    d = model_dir(tmp_path, **{"config.json": '{"model_type": "qwen3_vl", "text_con'})
    with pytest.raises(ModelDirError, match=r"config.json is not valid JSON \(Unterminated string.*line 1"):
        check_model_dir(d)


def test_missing_files_are_listed(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelDirError, match=r"missing tokenizer_config.json, \*.safetensors"):
        check_model_dir(tmp_path)


def test_truncated_or_padded_weights_are_named(tmp_path):
    """check_model_dir only looked for the files: a truncated model.safetensors was accepted."""
    d = model_dir(tmp_path)
    whole = (d / "model.safetensors").read_bytes()
    assert safetensors_problem(d / "model.safetensors") is None
    (d / "model.safetensors").write_bytes(whole[:-10])
    with pytest.raises(ModelDirError, match=r"model.safetensors is truncated or damaged: its header describes "
                                            rf"{len(whole):,} bytes, the file holds {len(whole) - 10:,}"):
        check_model_dir(d)
    (d / "model.safetensors").write_bytes(whole + b"\0")
    assert "the file holds" in safetensors_problem(d / "model.safetensors")
    (d / "model.safetensors").write_bytes(whole[:5])
    assert "is truncated or not a safetensors file (5 bytes" in safetensors_problem(d / "model.safetensors")
    (d / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b"{not json" + b" " * 11)
    assert safetensors_problem(d / "model.safetensors").startswith("has a damaged header (JSONDecodeError")


def test_a_missing_shard_is_named(tmp_path):
    d = model_dir(tmp_path, **{"model.safetensors.index.json": {"weight_map": {
        "w": "model.safetensors", "v": "model-00002-of-00002.safetensors"}}})
    with pytest.raises(ModelDirError, match="is incomplete: missing model-00002-of-00002.safetensors"):
        check_model_dir(d)
