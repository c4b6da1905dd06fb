"""The benchmark suite: `python -m bench all --profile tiny|demo|gemma3-4b` (or one of train, generate, data,
metrics, memory). Results go to `bench/results/<profile>-<machine>.json` and a markdown table beside it.

`bench/data_loading.py` and `bench/labeler_speed.py` also still run as scripts (`python bench/<name>.py`).
"""
