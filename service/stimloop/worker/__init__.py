"""The worker: its resources (``resources``), one module per use case, and the RQ jobs."""
