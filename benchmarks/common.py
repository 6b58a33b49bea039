"""What every benchmark script shares: the machine description and the output."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def machine() -> dict[str, Any]:
    """Printed beside every figure: cores, Python, kernel, architecture."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def emit(
    report: dict[str, Any], render: Callable[[dict[str, Any]], str], json_to: str | None
) -> None:
    """Print the table (to stderr when the JSON goes to stdout) and write the JSON."""
    table_out: TextIO = sys.stderr if json_to == "-" else sys.stdout
    print(render(report), file=table_out)
    if json_to:
        text = json.dumps(report, indent=2, sort_keys=False)
        if json_to == "-":
            print(text)
        else:
            Path(json_to).parent.mkdir(parents=True, exist_ok=True)
            Path(json_to).write_text(text + "\n")
