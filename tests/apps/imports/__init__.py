"""Fixture data and apps for the import toolkit tests."""
