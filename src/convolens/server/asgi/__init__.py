"""The ASGI front of the API process, ahead of FastAPI, outermost first (``server/app.py`` stacks them):

- ``observability.py``   request ids, the JSON access log line and Prometheus metrics of every response
- ``write_admission.py`` a write's size, token, scope, rate limit and load shedding, from its headers alone
- ``load_shedding.py``   the bound on write requests in flight per process (503 + Retry-After past it)
- ``body_limits.py``     the body read under its size cap, gzip inflated in bounded steps (413)
- ``fast_path.py``       the declared ingest routes called past FastAPI's routing and dependency solving
- ``orjson_route.py``    the write routes' class when FastAPI does take them: bodies parsed by orjson
"""
