"""Activities: every piece of I/O an ActionWorkflow needs."""
