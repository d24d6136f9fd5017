"""Step functions and node processes for the workflow engine's multi-process tests."""
