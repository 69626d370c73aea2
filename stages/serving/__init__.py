"""Serving the pipeline's model: ms-swift's OpenAI-compatible server (`swift deploy`) with the infer stage's
settings, bound to this machine unless asked, and request checks that answer a client's mistake with a 4xx."""
