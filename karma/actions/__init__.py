"""Built-in actions, registered through the `karma.actions` entry-point group."""
