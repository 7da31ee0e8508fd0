"""The pipelines: CURE training rounds (unrolled at compile time) and evaluation-only."""
