"""Pascal VOC (labelImg) annotations: the box record and the writer, shared by the composite source (which
writes them) and the detection task's readers (tasks/detect/box_formats.py reads them back)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Box", "write_voc"]


@dataclass
class Box:
    label: str
    x0: float
    y0: float
    x1: float
    y1: float


def write_voc(path: Path, filename: str, width: int, height: int, boxes: list[Box], group: str = "") -> bytes:
    """labelImg's XML for one image (what `read_voc` reads); returns the bytes (written when `path`)."""
    from xml.sax.saxutils import escape

    objs = "".join(
        f"  <object>\n    <name>{escape(b.label)}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
        f"    <difficult>0</difficult>\n    <bndbox>\n      <xmin>{b.x0:g}</xmin>\n      <ymin>{b.y0:g}</ymin>\n"
        f"      <xmax>{b.x1:g}</xmax>\n      <ymax>{b.y1:g}</ymax>\n    </bndbox>\n  </object>\n"
        for b in boxes
    )
    text = (
        f"<annotation>\n  <filename>{escape(filename)}</filename>\n"
        + (f"  <group>{escape(group)}</group>\n" if group else "")
        + f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n    <depth>3</depth>\n  </size>\n"
        f"{objs}</annotation>\n"
    )
    data = text.encode()
    if path is not None:
        Path(path).write_bytes(data)
    return data
