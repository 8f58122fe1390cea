"""Runs enrichment and rollups over pending messages (built in the enrichment issue)."""
