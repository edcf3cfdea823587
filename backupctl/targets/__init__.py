"""Targets: prepare a destination, load one part (a task), finish."""
