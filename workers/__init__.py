"""Worker assembly: task queues, data converter, interceptors, `karma worker`."""
