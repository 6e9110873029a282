"""Command-line entry points: meshd and meshctl."""
