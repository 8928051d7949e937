"""Test kits (``trainkit``, ``exportkit``, ``onnxkit``) live beside this file and import by name
from every test folder; they are fixtures, not part of the installed package."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
