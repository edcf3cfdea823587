"""Data formats of snapshot parts (see docs/REPOSITORY_FORMAT.md)."""
