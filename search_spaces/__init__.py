"""search_spaces: the pure logic of a pruning search (no torch, Ray or MLflow).

- `config/`: the search config (pydantic), presets, `--set` overrides, dumps and diffs.
- `policies`: name -> function registries (allocation, selection, importance); the config's
  policy choices are their names.
- `allocation`: how many channels each layer loses at a rate (depth-aware, uniform, random,
  layer-wise).
- `selection`: which kept channels go (random, importance, mixed).
- `importance`: per-channel scores from an SSM layer's response (H-infinity, energy).
- `tune_space`: what a stage's trials vary (seed grid, or the Optuna ranges), as plain data.
- `best_trial`: which trial of a stage wins; speed-up and parameter reduction vs the dense model.
- `errors`: the user-facing error types.
"""
