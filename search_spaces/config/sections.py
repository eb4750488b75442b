"""The config sections around the search: task (data), model (the dense backbone), baseline
(how the dense model is obtained), latency (the timing protocol) and resources (per trial)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from search_spaces.config.fields import (GENERATE_OPTIONS, MAX_SEED, OWN_TASK_NAMES, TASK_NAMES, Float, Int, Precision,
                                         _Section)
from search_spaces.config.messages import suggest


# --- task -------------------------------------------------------------------------------------

DATA_URI = re.compile(r"^(s3|gs|gcs)://[^/?]+", re.IGNORECASE)  # as `workers.objectstore.is_uri` reads them


class GenerateSection(_Section):
    """Synthetic data to generate when `task.data_dir` holds none (sizes per split)."""

    train: Int = Field(2000, ge=1)
    val: Int = Field(400, ge=1)
    test: Int = Field(400, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)


class TaskSection(_Section):
    """The data: a paper task (listops, pathfinder, imdb, ecg) or one's own (parquet, python).

    parquet: `data_dir` holds train.parquet, test.parquet (and val.parquet); python: `loader` is
    "package.module:function" (see `workers.data.python_loader`). `metric` overrides the default
    (accuracy single-label, macro_f1 multi-label) for one's own data.
    `data_dir`: a folder (made absolute against the current directory at load time, so every trial
    is told the same explicit path) or an object-store URI (`s3://bucket/prefix`, `gs://...`), kept
    as given and fetched once per node (`workers.data.node_cache`).
    """

    name: Literal[TASK_NAMES + OWN_TASK_NAMES]
    data_dir: Path | str
    max_len: Optional[Int] = Field(None, ge=1)
    val_fraction: Float = Field(0.2, gt=0.0, lt=1.0)
    generate: Optional[GenerateSection] = None
    loader: Optional[str] = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    metric: Optional[Literal["accuracy", "macro_f1"]] = None

    @field_validator("data_dir", mode="before")
    @classmethod
    def _path_or_uri(cls, v: Any) -> Any:
        if not isinstance(v, (str, os.PathLike)):
            raise ValueError("{key}=%r must be a path" % (v,))
        return v if isinstance(v, str) and DATA_URI.match(v) else Path(v)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path | str) -> Path | str:
        if str(v).strip() == "" or "\0" in str(v):
            raise ValueError("{key}=%r must be a folder path" % str(v))
        if isinstance(v, str) and DATA_URI.match(v):
            return v.rstrip("/")
        return Path(os.path.abspath(os.path.expanduser(v)))

    @model_validator(mode="after")
    def _own_data(self) -> "TaskSection":
        if self.name == "python" and self.loader is None:
            raise ValueError("task.loader=None must name the loader as \"package.module:function\" for task python")
        if self.name != "python" and self.loader is not None:
            raise ValueError(f"task.loader={self.loader!r} only applies to task python, not {self.name}")
        if self.name not in OWN_TASK_NAMES and self.metric is not None:
            raise ValueError(f"task.metric={self.metric!r} only applies to tasks parquet and python; "
                             f"task {self.name} has its own metric")
        if self.name in OWN_TASK_NAMES and self.generate is not None:
            raise ValueError(f"task.generate: task {self.name} reads one's own data and has no generator; "
                             "remove task.generate")
        return self

    @model_validator(mode="after")
    def _generate_options(self) -> "TaskSection":
        if self.generate is not None and self.name in GENERATE_OPTIONS:
            known = GENERATE_OPTIONS[self.name]
            for key in self.generate.options:
                if key not in known:
                    raise ValueError(
                        f"unknown key 'task.generate.options.{key}' for task {self.name}"
                        f"{suggest(str(key), known)}"
                    )
        return self


# --- model ------------------------------------------------------------------------------------


class ModelSection(_Section):
    """The dense backbone: H = d_model channels per layer, N = d_state, n_layers blocks."""

    kind: Literal["s4d", "s4"] = "s4d"
    d_model: Int = Field(64, ge=1)
    n_layers: Int = Field(4, ge=1)
    d_state: Int = Field(64, ge=2)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["batch", "layer"] = "batch"
    prenorm: bool = False
    bidirectional: bool = False
    pool: Literal["mean", "last"] = "mean"
    init: Literal["lin", "inv", "legs"] = "lin"
    disc: Literal["zoh", "bilinear"] = "zoh"
    trainable_B: bool = False
    dt_min: Float = Field(0.001, gt=0.0)
    dt_max: Float = Field(0.1, gt=0.0)
    # lr of the SSM's dt, A, B, P in every run, as given; null: the S4 authors' default, min(0.001, run lr)
    ssm_lr: Optional[Float] = Field(None, gt=0.0)

    @field_validator("d_state", mode="after")
    @classmethod
    def _even_state(cls, v: int) -> int:
        if v % 2:
            raise ValueError("{key}=%d must be even (N/2 conjugate pairs)" % v)
        return v

    @model_validator(mode="after")
    def _s4_is_bilinear(self) -> "ModelSection":
        """S4's DPLR kernel is bilinear only: an unset disc becomes bilinear, an explicit zoh is refused."""
        if self.kind == "s4" and self.disc == "zoh":
            if "disc" in self.model_fields_set:
                raise ValueError("model.disc='zoh' with model.kind='s4': expected bilinear "
                                 "(the S4 DPLR kernel is bilinear only; use kind s4d for zoh)")
            self.disc = "bilinear"
        return self

    @model_validator(mode="after")
    def _dt_range(self) -> "ModelSection":
        if self.dt_min > self.dt_max:
            raise ValueError(f"model.dt_min={self.dt_min} must not exceed model.dt_max={self.dt_max}")
        return self

    def to_spec_dict(self, d_input: int, d_output: int, input_kind: str) -> dict[str, Any]:
        """Plain dict for `workers.models.spec.ModelSpec.from_dict`."""
        d = self.model_dump(mode="python")
        return {"kind": d["kind"], "d_input": int(d_input), "d_output": int(d_output),
                "input_kind": input_kind, **{k: d[k] for k in (
                    "d_model", "n_layers", "d_state", "dropout", "norm", "prenorm",
                    "bidirectional", "pool", "init", "disc", "trainable_B", "dt_min", "dt_max",
                    "ssm_lr")}}


# --- baseline ---------------------------------------------------------------------------------


class TrainSection(_Section):
    """How the dense baseline is trained when no checkpoint is given."""

    epochs: Int = Field(10, ge=1)
    batch_size: Int = Field(50, ge=1)
    lr: Float = Field(0.001, gt=0.0)
    weight_decay: Float = Field(0.05, ge=0.0)
    warmup_epochs: Int = Field(1, ge=0)
    grad_clip: Optional[Float] = Field(1.0, gt=0.0)
    patience: Int = Field(5, ge=1)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    precision: Precision = "fp32"


class BaselineSection(_Section):
    checkpoint: Optional[Path] = None
    train: TrainSection = Field(default_factory=TrainSection)

    @field_validator("checkpoint", mode="after")
    @classmethod
    def _absolute(cls, v: Optional[Path]) -> Optional[Path]:
        if v is None:
            return None
        if str(v).strip() == "" or "\0" in str(v):
            raise ValueError("{key}=%r must be a checkpoint folder or null" % str(v))
        return Path(os.path.abspath(os.path.expanduser(v)))


# --- latency and resources --------------------------------------------------------------------


class LatencySection(_Section):
    """Latency protocol: p50/p90 over `repeats` timed runs after `warmup`, per batch size.

    runtime: `torch` (eager PyTorch) or `onnxruntime` (the model exported as `s4op export` does,
    timed in an ONNX Runtime session, CPU only). mode: `sequence` (one forward over the whole
    sequence) or `step` (also the streaming form, one sample at a time, per-step figures;
    unidirectional S4D only). node_resources: Ray custom resources of the node that measures
    (e.g. {edge-rpi4: 1}: a device joined as a latency node, see cluster/README.md).
    """

    batch_sizes: list[Annotated[Int, Field(ge=1)]] = Field(default_factory=lambda: [1], min_length=1)
    threads: Int = Field(1, ge=1)
    repeats: Int = Field(30, ge=30)
    warmup: Int = Field(5, ge=0)
    device: Literal["cpu", "cuda"] = "cpu"
    runtime: Literal["torch", "onnxruntime"] = "torch"
    mode: Literal["sequence", "step"] = "sequence"
    node_resources: dict[str, Annotated[Float, Field(gt=0.0)]] = Field(default_factory=dict)

    @field_validator("node_resources", mode="after")
    @classmethod
    def _resource_names(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if not name.strip() or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError("{key} has resource name %r; expected a custom resource a node offers, "
                                 "e.g. {edge-rpi4: 1}" % name)
        return v

    @model_validator(mode="after")
    def _runtime_on_cpu(self) -> "LatencySection":
        for key, value in (("runtime", "onnxruntime"), ("mode", "step")):
            if getattr(self, key) == value and self.device != "cpu":
                raise ValueError(f"latency.{key}={value} is measured on the CPU; expected latency.device=cpu, "
                                 f"got {self.device!r}")
        return self


class ResourcesSection(_Section):
    """Per-trial Ray resources; `max_concurrent` null lets Ray pack trials."""

    cpu: Float = Field(1.0, gt=0.0)
    gpu: Float = Field(0.0, ge=0.0)
    max_concurrent: Optional[Int] = Field(None, ge=1)
