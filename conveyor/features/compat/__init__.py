"""Keeping jobs compatible across deploys: the lock file (``lock``), the rules of
``conveyor compat check`` (``rules``) and deploy maintenance (``maintenance``)."""
