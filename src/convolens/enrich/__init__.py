"""Enrichment: PII scrubbing, sentiment, language, embeddings, topics (built in the enrichment issue)."""
