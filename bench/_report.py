"""What every bench script shares: the facts about the machine, and printing (and saving) one JSON result."""

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """The machine a number was measured on, recorded beside it."""
    import torch

    return {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def emit(result: dict[str, Any], output: str | os.PathLike | None = None) -> None:
    """Prints `result` as JSON and, with `output`, writes the same text there."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
