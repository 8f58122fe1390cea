"""LangChain ContextCallbackHandler on top of the SDK (built in the SDK issue)."""
