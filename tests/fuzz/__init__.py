"""Fuzzing: short runs of the fuzz/ harnesses and replays of what they found."""
