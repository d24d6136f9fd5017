"""Three releases of one small app, for ``conveyor compat`` CLI tests and the two-process test."""
