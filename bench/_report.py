"""What every bench script shares: the facts about the machine, and printing (and saving) one JSON result."""

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_name() -> str:
    """A short name for result files: the GPU's model (`h200` for an NVIDIA H200), else `cpu<N>` for N cores
    (`cpu2` on the project's 2-core machines)."""
    import torch

    if torch.cuda.is_available():
        words = torch.cuda.get_device_name(0).lower().replace("nvidia", "").split()
        return next((word for word in words if any(ch.isdigit() for ch in word)), words[0] if words else "gpu")
    return f"cpu{os.cpu_count()}"


def machine_info() -> dict[str, Any]:
    """The machine a number was measured on, recorded beside it."""
    import torch

    info = {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def emit(result: dict[str, Any], output: str | os.PathLike | None = None) -> None:
    """Prints `result` as JSON and, with `output`, writes the same text there."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
