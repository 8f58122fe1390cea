"""JSON API routes: ingest (native), context (Context.ai-compatible), health."""
