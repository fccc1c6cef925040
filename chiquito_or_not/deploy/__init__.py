"""Using a trained run: load it, evaluate, predict, export to ONNX and serve it; what differs per task
comes from the run's task (chiquito_or_not.tasks)."""
