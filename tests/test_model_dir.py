"""The model stage's checks of a model directory: complete, every JSON config parses, and nothing in it makes
transformers run code from the directory or another folder."""
import json

import pytest

from stages.model import ModelDirError, check_model_dir, code_references, remote_code


def model_dir(tmp_path, **configs):
    for name, text in {"config.json": '{"model_type": "qwen3_vl"}', "tokenizer_config.json": "{}", **configs}.items():
        (tmp_path / name).write_text(text if isinstance(text, str) else json.dumps(text), encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"\0")
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
