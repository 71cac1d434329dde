"""The use cases: what happens to a session (created, receives a phase, fits again, asks for
maps, is exported). Raises the domain errors of ``sessions.errors``; the API maps them to
problem+json answers and stays HTTP only."""
