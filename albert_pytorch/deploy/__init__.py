"""The inference half: preprocess -> export -> optimize -> runtime -> postprocess."""
