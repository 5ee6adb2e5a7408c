"""Fixtures for the cluster job: filled in with the cluster work (see issue 3)."""
