"""The ``edgesep`` command line: parse, call the library, print. One function per subcommand.

``app`` holds the group, the shared options and ``main`` (the console script ``edgesep.cli:main``); each
other module registers one family of subcommands on the group when imported here.
"""
from edgesep.cli import bench, compare, export, fleet  # noqa: F401  (registers the subcommands)
from edgesep.cli.app import cli, main

__all__ = ["cli", "main"]
