"""Object detection: boxes with labels in, an SSD detector out (task = "detect").

box_task.TASK is what the shared stages use (core.task_registry.Task); the modules beside it hold the parts:
box_recipe (the recipe's own section: `[detect]`), box_formats (VOC/CSV/COCO/YOLO readers and box checks),
box_dataset (records, boxes and COCO files for the dataset stage), box_splits (reading a split back), box_data
(DataLoaders, box-aware augmentation), ssd and box_head (SSDLite head on the body, loss, decoding),
box_postprocess (NMS shared by every runtime), box_metrics (mAP and figures), box_inference (a model.pkl as a
runtime model, batched boxes, drawing), box_export (ONNX graph and parity) and box_runtime (the ONNX and
LiteRT files). This file imports nothing, so the recipe's schema can read box_recipe alone.
"""
