"""Helpers of the train stage. resume.py: which interrupted `swift sft` run may be resumed, and from where."""
