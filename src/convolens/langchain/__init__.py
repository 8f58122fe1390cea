"""LangChain integration: ``from convolens.langchain import ContextCallbackHandler``."""

from convolens.langchain.handler import ContextCallbackHandler

__all__ = ["ContextCallbackHandler"]
