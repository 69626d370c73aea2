"""Disk space and file copies: room for DVC to save an output (space.py), a full disk named in a tool's
failure (space.py), copies that share no data with their source (clone.py)."""
