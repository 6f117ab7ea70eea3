"""Moved to controller/fields/xmlutil.py (the field registry reads and writes XML too)."""

from controller.fields.xmlutil import child, parse, remove, set_text, to_bytes, tostring

__all__ = ["child", "parse", "remove", "set_text", "to_bytes", "tostring"]
