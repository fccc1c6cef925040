"""Classification: a label is a folder; a model answers with class probabilities.

class_task.TASK is what the shared stages use (core.task_registry.Task); the modules beside it hold the parts:
class_recipe (the recipe's own section: classes, class folders), class_dataset (records and the split unit
for the dataset stage), class_data (classes, DataLoaders, class weights), class_head (head, loss, metric),
class_metrics and class_figures, class_inference (a model.pkl as a runtime model, batched predictions),
class_export (ONNX graph and parity), class_runtime (the ONNX and LiteRT files, no torch) and class_suspects
(review's ranking). This file imports nothing, so the recipe's schema can read class_recipe alone.
"""
