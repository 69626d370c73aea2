"""The model stage's download from ModelScope (or a mirror, or a private hub)."""
