"""Language-model weight memory in the profile's dtype, 8-bit and 4-bit (bitsandbytes), measured.

8-bit and 4-bit quantize the decoder's linear layers only; the embedding (tied to the LM head) stays in the
unquantized dtype (DESIGN.md §7), so the savings are smaller than 2x / 4x.
"""

import logging

from tqdm.auto import tqdm

from .flops import lm_weight_bytes_per_token
from .profiles import QUANTIZATIONS, Profile
from .train import release_memory


logger = logging.getLogger(__name__)


def footprint(model, quantization: str) -> dict:
    """Measured weight memory of a loaded model's language model (and of the whole model)."""
    language_model = model.language_model
    embedding = language_model.get_input_embeddings().weight
    result = {
        "quantization": quantization,
        "lm_memory_gib": round(language_model.get_memory_footprint() / 2**30, 4),
        "lm_embedding_gib": round(embedding.numel() * embedding.element_size() / 2**30, 4),
        "model_memory_gib": round(model.get_memory_footprint() / 2**30, 4),
        "lm_weight_bytes_read_per_token": lm_weight_bytes_per_token(language_model, model.lm_head),
    }
    return result


def measure(profile: Profile, quantization: str) -> dict:
    model, _ = profile.base_model(quantization)
    result = footprint(model, quantization)
    del model
    release_memory()
    return result


def run(profile: Profile, quantizations: tuple[str, ...] = QUANTIZATIONS) -> dict:
    results = [measure(profile, q) for q in tqdm(quantizations, desc=f"memory ({profile.name})", unit="variant")]
    base = results[0]["lm_memory_gib"]
    for result in results:
        result["vs_unquantized"] = round(result["lm_memory_gib"] / base, 4)
    return {"unquantized_dtype": str(profile.weight_dtype).removeprefix("torch."), "variants": results}
