"""Validation: the shapes a request may have (pydantic) and the size bounds it must keep."""
