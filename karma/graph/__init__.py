"""The component graph: components, runtime values, plans and deployments."""
