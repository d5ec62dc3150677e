"""Pipelines: DAGs of actions, checked and planned before they run."""
