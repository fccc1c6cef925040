"""Tasks: what differs between kinds of model. Each sub-package (classify, detect) exposes a `TASK` object
with the members of core.task_registry.Task; the registry there reaches it by name."""
