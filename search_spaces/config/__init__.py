"""The search config: one pydantic model per YAML section, presets, overrides, dumps and diffs.

- `fields`: the section base, strict numbers and fixed facts (paper seeds, task names, preset folder);
- `sections`: task, model, baseline, latency and resources; `search`: the search section;
- `schema`: `SearchConfig`, the whole config, checked across sections;
- `loading`: presets, YAML files, `--set key.path=value` overrides, dumps and diffs;
- `messages`: pydantic errors -> one line naming the key, the value and what was expected.

Everything a caller needs is importable from `search_spaces.config`.
"""

from search_spaces.config.fields import (GENERATE_OPTIONS, MAX_SEED, MAX_SEED_COUNT, OWN_TASK_NAMES, PAPER_SEEDS,
                                         PRESET_DIR, TASK_NAMES)
from search_spaces.config.loading import (apply_override, config_diff, config_from_yaml, dump_config,
                                          load_search_config, preset_names)
from search_spaces.config.schema import SearchConfig
from search_spaces.config.search import (AlgorithmSection, AllocationSection, FinetuneSection, SearchSection,
                                         SelectionSection, seed_list)
from search_spaces.config.sections import (BaselineSection, GenerateSection, LatencySection, ModelSection,
                                           ResourcesSection, TaskSection, TrainSection)

__all__ = [
    "GENERATE_OPTIONS", "MAX_SEED", "MAX_SEED_COUNT", "PAPER_SEEDS", "PRESET_DIR", "TASK_NAMES", "OWN_TASK_NAMES",
    "apply_override", "config_diff", "config_from_yaml", "dump_config", "load_search_config", "preset_names",
    "SearchConfig", "AlgorithmSection", "AllocationSection", "FinetuneSection", "SearchSection",
    "SelectionSection", "seed_list", "BaselineSection", "GenerateSection", "LatencySection", "ModelSection",
    "ResourcesSection", "TaskSection", "TrainSection",
]
