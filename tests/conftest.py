"""Shared test set-up. Fixtures live in plugin modules beside this file, one per area."""

pytest_plugins = ["fixtures_web", "fixtures_cluster"]
