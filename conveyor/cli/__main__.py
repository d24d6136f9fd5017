"""``python -m conveyor.cli``: the same as the ``conveyor`` command (used for child processes)."""

from conveyor.cli import main

main(prog_name="conveyor")
