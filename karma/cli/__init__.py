"""The `karma` command line."""
