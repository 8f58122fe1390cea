"""convolens: self-hosted user analytics for LLM-powered products."""

__version__ = "0.1.0"
