"""Helpers of the train stage. resume.py: which interrupted `swift sft` run may be resumed, and from where.
plugins.py: which ms-swift plugins a run takes; used_rows.py: the plugin that computes the builtin model's loss
over the output rows it uses."""
