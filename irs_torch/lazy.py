"""Lazy public names of a package (PEP 562), so that importing it (the command line does) imports
neither torch nor numpy until a name is used. Imports nothing at module level."""
from __future__ import annotations


def lazy_attribute(namespace: dict, table: dict, name: str, package: str):
    """The value of ``name`` for a package's ``__getattr__``: imported from module ``table[name]`` on first
    use and cached in the package's ``namespace``; AttributeError naming the package otherwise."""
    if name in table:
        import importlib

        value = getattr(importlib.import_module(table[name]), name)
        namespace[name] = value
        return value
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
