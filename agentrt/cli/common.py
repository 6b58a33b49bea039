"""What the commands share: exit statuses and the help line that names them (a leaf)."""

from __future__ import annotations

import argparse
from typing import TypeAlias

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_HELP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Subparsers",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_HELP = (
    "exit status: 0 all tasks ok (or a clean stop), 1 a task or agent failed, "
    "2 invalid config or command line, 130 interrupted"
)

#: what ``add_parser`` of each command module adds its subcommand to
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
