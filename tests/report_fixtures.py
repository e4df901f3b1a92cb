"""Load the contrib tools (scripts without a .py name) as modules, to test their functions."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def load_contrib_module(name: str) -> ModuleType:
    """Import contrib/<name> as a module named after it."""
    path = CONTRIB / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while the class is made
    loader.exec_module(module)
    return module


def load_report_module() -> ModuleType:
    """contrib/qs-report."""
    return load_contrib_module("qs-report")
