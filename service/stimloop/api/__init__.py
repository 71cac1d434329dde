"""The HTTP API (FastAPI), all under ``/v1``; schemas in ``schemas.py`` are torch-free."""
