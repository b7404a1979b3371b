"""Dataset capture tests (a package, so its names do not clash with other folders)."""
