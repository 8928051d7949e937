"""``bonedeploy listen``: a DICOM node that receives radiographs (C-STORE), analyses them as
``bonedeploy infer`` does, writes a structured report (TID 1500) per instance and forwards it to
PACS. Durable before acknowledged: spool + SQLite journal, resumed after a crash. Needs the
``[dicom]`` extra. See docs/pacs.md.
"""

from bonedeploy.dicomnode.config import Destination, ListenConfig
from bonedeploy.dicomnode.node import node_status, run_node

__all__ = ["Destination", "ListenConfig", "node_status", "run_node"]
