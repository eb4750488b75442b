"""search_spaces: the pure logic of a pruning search (no torch, Ray or MLflow).

- `config`: the search config (pydantic), presets, `--set` overrides, dumps and diffs.
- `allocation`: how many channels each layer loses at a rate (depth-aware, uniform, random,
  layer-wise).
- `selection`: which kept channels go (random, importance, mixed).
- `importance`: per-channel scores from an SSM layer's response (H-infinity, energy).
- `schedules`: named rate schedules.
- `errors`: the user-facing error types.
"""
