"""A tiny package the example's train.py imports: it travels with the working directory."""

from wordstats.counting import top_words

__all__ = ["top_words"]
