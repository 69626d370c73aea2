"""The builtin base model of the `model` stage: a tiny Qwen3-VL (or Qwen2-VL) built offline, byte for byte the
same from one seed (build.py), with Qwen's tokenizer layout (tokenizer.py) and chat templates
(chat_templates.py), and a vision tower pretrained on generic blurred scenes (vision.py)."""
