"""A module with two App instances: ``-r apps.two_apps`` must say which one to use."""

from __future__ import annotations

from conveyor import App

first = App()
second = App()
