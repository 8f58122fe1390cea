"""HTTP: the FastAPI app (api/ for JSON, web/ for pages), auth and request bodies."""
