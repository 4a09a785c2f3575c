"""ncaer: build leak-free static emotion datasets from videos, and train context-aware models on them."""

__version__ = "0.1.0"
