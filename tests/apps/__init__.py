"""Application modules the CLI and supervisor tests load with ``conveyor worker -r apps.<name>``."""
