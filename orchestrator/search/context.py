"""What the stage loop carries from stage to stage of one running search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.search.folder import SearchFolder

if TYPE_CHECKING:  # types only: importing these costs nothing at run time
    from orchestrator.search.ray_runtime import RayHandle
    from orchestrator.search.view import SearchView
    from orchestrator.storage.work_copy import SearchStore
    from orchestrator.tracking.client import Tracker
    from search_spaces.config import SearchConfig
    from workers.data import TaskSplits


@dataclass
class SearchContext:
    folder: SearchFolder
    cfg: "SearchConfig"
    name: str
    tracking_uri: str
    tracker: "Tracker"
    experiment_id: str
    search_run_id: str | None
    view: "SearchView"
    address: str | None = "local"
    splits: "TaskSplits | None" = None
    fingerprint: str = ""
    facts: dict = field(default_factory=dict)  # search.json facts (data fingerprint, latency protocol)
    ray: "RayHandle | None" = None
    store: "SearchStore | None" = None  # when the search lives on an object store
    stage_seconds: list = field(default_factory=list)

    @property
    def search_dir(self):
        return self.folder.root

    @property
    def config_dict(self) -> dict:
        return self.cfg.model_dump(mode="json")

    def mirror(self) -> None:
        """After a ledger write: mirror the working copy to the object store (no-op for a folder)."""
        if self.store is not None:
            self.store.push()

    def latency_of(self, models: dict[str, str]) -> dict[str, dict]:
        """{id: latency dict at the first batch size} measured with exclusive use of the device."""
        from orchestrator.search.interrupt import moment
        from orchestrator.search.stage_latency import latency_examples, measure_stage

        moment("latency")  # a test hook (S4OP_HOLD_AT)
        lat = self.cfg.latency
        examples = latency_examples(self.splits.test.x, self.splits.test.lengths, list(lat.batch_sizes))
        embedded = self.ray is None or (self.ray.started_here and self.ray.embedded)
        measured = measure_stage(models, examples, lat.model_dump(mode="json"),
                                 in_process=embedded and lat.device == "cpu")
        first = int(lat.batch_sizes[0])
        return {key: by_batch[first] | {"all": by_batch} for key, by_batch in measured.items()}
