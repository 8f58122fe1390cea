"""The OpenTelemetry door's translation, without HTTP: OTLP requests (protobuf or JSON) → spans
(``wire.py``), a span's GenAI attributes → one LLM call's messages (``genai.py``), a trace's spans →
one conversation turn → the native ``IngestBatch`` (``turns.py``). The route (server/api/otlp.py)
then runs the same token → bounds → scrub → write sequence as ``POST /api/v1/ingest``."""
