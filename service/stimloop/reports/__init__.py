"""What the service shows people: the session report and its figures (matplotlib)."""
