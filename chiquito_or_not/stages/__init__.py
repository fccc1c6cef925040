"""The stages: one module per command, the only floor that composes the shared parts (data, train, core)
with the recipe's or the model's task; the CLI calls them and prints what they return."""
