"""Side-by-side CPU-per-request comparison of the data plane against HAProxy."""
