#!/usr/bin/env bash
# One GPU check for issue 8: the gemma3-4b profile (R2GenConfig() defaults: Gemma-3-4b-it text geometry +
# Swin-B/224, random weights — nothing is downloaded) in bf16, 8-bit and 4-bit: LM weight memory, peak
# training memory and samples/s at batch 8 (LLM LoRA, activation checkpointing), generation tokens/s at
# batch 1 and reports/s at batch 16 with 3 beams (100 new tokens, no early stop), and the bandwidth bound.
# Prints one JSON object on stdout; logs go to stderr. Sized to finish within 8 minutes on one H200.
#
#   bench/gpu_check.sh                       # gemma3-4b on the GPU
#   PROFILE=tiny bench/gpu_check.sh          # or: bench/gpu_check.sh tiny — the tiny profile, runs on CPU
#   PYTHON=/path/to/python NEW_TOKENS=20 bench/gpu_check.sh
#
# Needs: a Python with torch (CUDA build for gemma3-4b), transformers 5.x, peft, bitsandbytes, tqdm, and this
# repository importable (run from anywhere; the script puts the repository on PYTHONPATH). PYTHON= picks the
# interpreter; otherwise the repository's .venv if it exists, else python3. The `tiny` profile also needs the
# Gemma 3 tokenizer cached by r2gen_hf.gemma3_270m (~/.cache/r2gen_hf); gemma3-4b needs no tokenizer.
# Offline: HF_HUB_OFFLINE=1 is set, so nothing is fetched from the Hugging Face Hub.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${1:-${PROFILE:-gemma3-4b}}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, transformers, peft, bitsandbytes, tqdm" >&2; then
  echo "gpu_check.sh: $PYTHON lacks torch / transformers / peft / bitsandbytes / tqdm; set PYTHON= to one that has them." >&2
  exit 2
fi

cd "$ROOT"
exec "$PYTHON" -m bench.gpu_check --profile "$PROFILE" \
  --new_tokens "${NEW_TOKENS:-100}" --train_batch_size "${TRAIN_BATCH_SIZE:-8}" --timed_steps "${TIMED_STEPS:-3}"
