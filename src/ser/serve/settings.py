"""Server settings: :class:`Settings`, read from ``SER_<FIELD>`` environment variables by :meth:`Settings.from_env`
(pydantic-settings' environment source; lists comma-separated, empty values unset)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from ser.monitor.canary import RollbackRule
from ser.serve import platform

ENV_PREFIX = "SER_"
DEFAULT_RELOAD_POLL_S = 10.0
"""Seconds between polls of the registry's alias when serving a workdir and ``reload_poll_s`` is unset."""


STREAMS_PER_PROCESS = 50
"""The default stream budget per worker process. Measured (benchmarks/serve.py, 2 cores, 20 ms frames, hop 0.5 s,
window 2 s, the cnn recipe): one process held 80 streams, two processes 100 in both ramps and 120 in one, at update
p95 <= 150 ms. 50 per process leaves room for the HTTP requests the same processes answer."""


class Settings(BaseSettings):
    """Server settings. :meth:`from_env` reads ``SER_<FIELD>`` environment variables (lists comma-separated).

    Constructed directly (``Settings(model_dir=...)``), it takes its arguments only, never the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", protected_namespaces=()
    )

    model_dir: Path | None = Field(None, description="an exported model folder (model.onnx + metadata.json)")
    workdir: Path | None = Field(None, description="a workdir with a registry (default $SER_WORKDIR or ./runs)")
    model_ref: str | None = Field(None, description="registry reference NAME[@ALIAS|/VERSION]; default champion")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="accepted API keys, NAME:KEY or KEY (auto-named key1, key2, ...); empty: see auth",
    )
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="keys of /v1/admin/* (NAME:KEY or KEY); empty: the API keys, and admin off without them",
    )
    auth: Literal["key", "none"] | None = Field(
        None,
        description="key: API keys required (start-up fails without one); none: no key check (a platform in front "
        "authenticates); unset: keys if configured, else open (a warning)",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics on this port only (no key there), not on the API port"
    )
    docs: bool = Field(True, description="serve /docs (Swagger UI, local assets) and /openapi.json")
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest upload (one file), bytes")
    max_batch_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest batch request body, bytes")
    max_batch_files: int = Field(16, ge=1)
    max_audio_s: float = Field(60.0, gt=0, description="longest clip for /v1/predict, seconds")
    max_timeline_audio_s: float = Field(1800.0, gt=0, description="longest recording for /v1/timeline, seconds")
    request_timeout_s: float = Field(30.0, gt=0, description="decoding + inference time limit per request")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    reload_poll_s: float | None = Field(
        None,
        ge=0,
        description=f"poll the model source every N s and reload when it changed; 0: off; unset: "
        f"{DEFAULT_RELOAD_POLL_S:g} s when serving a workdir's registry (follow the champion), off for a model folder",
    )
    inference_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    threads: int = Field(1, ge=1, description="onnxruntime threads per request")
    max_streams: int = Field(
        STREAMS_PER_PROCESS,
        ge=1,
        description="concurrent WebSocket streams of the host; more are refused (close 1013). With several "
        f"processes each takes an equal share (ser.serve.processes.per_process). Default: {STREAMS_PER_PROCESS} "
        "per worker process",
    )
    # processes (issue 16): worker processes behind one port (ser serve only; ser.serve.processes)
    processes: int = Field(
        1, ge=1, le=64, description="worker processes serving the port (ser serve --processes; one per core)"
    )
    max_stream_s: float = Field(3600.0, gt=0, description="longest stream (audio seconds) on /v1/stream")
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="close a stream silent for this long, seconds")
    # resource bounds (issue 15): what one request may make the server decode, wait for, read and answer
    max_sample_rate: int = Field(192_000, ge=8000, description="highest sample rate an upload may declare, Hz")
    max_channels: int = Field(8, ge=1, description="most channels an upload may declare")
    max_decode_samples_per_s: int = Field(
        192_000,
        ge=16_000,
        description="decoded samples (frames × channels) allowed per second of the duration limit; default: the "
        "longest allowed clip at 96 kHz stereo, 48 kHz × 4 channels or 192 kHz mono",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="the whole request body must arrive within this (408)")
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="largest request line + headers (ser serve: uvicorn's h11 limit)"
    )
    min_timeline_step_s: float = Field(0.1, gt=0, description="smallest step_s on /v1/timeline, seconds")
    max_timeline_points: int = Field(20_000, ge=1, description="most grid points a /v1/timeline answer may hold")
    abstain_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="abstention: an answer of /v1/predict (and each batch item) whose top probability is below this "
        "gets the label 'uncertain' (probabilities still returned); unset: always a class",
    )
    # monitoring (issue 13): the prediction log, feedback, live drift and the second model
    prediction_log: str | None = Field(
        None,
        description="where the prediction log goes: a folder or fsspec URI ending in /predictions (the predictions "
        "table; feedback goes beside it), or any other folder / URI taken as the log root; 'off' disables it. "
        "Default: <workdir>/monitor/predictions when serving a workdir, off when serving a model folder",
    )
    prediction_log_flush_s: float = Field(
        2.0, gt=0, le=300, description="seconds between writes of the prediction log (what a kill -9 can lose)"
    )
    prediction_log_salt: str | None = Field(
        None,
        repr=False,
        description="secret salt of the client file-name hash in the log; unset: random per process (names then "
        "match only within one process)",
    )
    drift_window: int = Field(1000, ge=10, le=1_000_000, description="answers in the live drift window (PSI)")
    drift_interval_s: float = Field(5.0, gt=0, description="recompute the live drift / accuracy gauges this often")
    live_ids: int = Field(
        100_000, ge=100, description="recent answers whose predicted label is kept in memory for live accuracy"
    )
    shadow_ref: str | None = Field(
        None,
        description="the second model: a registry reference (e.g. challenger) in the served workdir, or a model "
        "folder; its answers are logged, never returned",
    )
    shadow_share: float = Field(1.0, ge=0, le=1, description="share of /v1/predict answers the second model also runs")
    shadow_mode: Literal["shadow", "canary"] = Field(
        "shadow",
        description="what the second model does: shadow (runs beside the served model, logged, never returned) or "
        "canary (answers canary_share of /v1/predict and /v1/predict/batch requests itself)",
    )
    canary_share: float = Field(
        0.1, ge=0, le=1, description="canary: share of requests it answers (sticky per X-Client-Id, else random)"
    )
    canary_min_requests: int = Field(200, ge=1, description="canary: requests per side before error rates count")
    canary_max_error_increase: float = Field(
        0.02, ge=0, le=1, description="canary: roll back when its error rate exceeds the champion's by more than this"
    )
    canary_min_feedback: int = Field(100, ge=1, description="canary: labelled answers per side before UARs count")
    canary_uar_margin: float = Field(
        0.05, ge=0, le=1, description="canary: roll back when its live UAR is below the champion's by more than this"
    )
    # hosting platforms (issue 16): Vertex AI's custom-container contract (ser.serve.platform)
    vertex_predict_route: str | None = Field(
        None,
        description='also answer Vertex AI predictions ({"instances": [{"b64": ...}]}) at this path; '
        "default $AIP_PREDICT_ROUTE",
    )
    vertex_health_route: str | None = Field(
        None, description="also answer readiness (as /readyz) at this path; default $AIP_HEALTH_ROUTE"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments only: the environment is read by :meth:`from_env`, which decides what overrides what."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SER_*`` variables (``SER_API_KEY`` adds one key), then ``overrides`` (None skipped)."""
        env = os.environ if env is None else env
        values = _EnvSource(cls, env)()
        for field, variable in (
            ("vertex_predict_route", platform.VERTEX_PREDICT_ROUTE),
            ("vertex_health_route", platform.VERTEX_HEALTH_ROUTE),
        ):
            if env.get(variable) and field not in values:  # the platform's variable, unless SER_* names one
                values[field] = env[variable]
        if env.get(ENV_PREFIX + "API_KEY"):
            values["api_keys"] = [*_split_commas(values.get("api_keys", [])), env[ENV_PREFIX + "API_KEY"]]
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "model_dir" in overrides or "workdir" in overrides:  # an explicit source replaces the environment's
            values.pop("model_dir", None)
            values.pop("workdir", None)
        values.update(overrides)
        return cls(**values)

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("vertex_predict_route", "vertex_health_route")
    @classmethod
    def _route(cls, value: str | None) -> str | None:
        return None if value is None else platform.check_route(value, "route")

    @model_validator(mode="before")
    @classmethod
    def _stream_budget(cls, data: Any) -> Any:
        """``max_streams`` not given: :data:`STREAMS_PER_PROCESS` per worker process."""
        if isinstance(data, dict) and data.get("max_streams") is None:
            try:
                n = max(1, int(data.get("processes") or 1))
            except (TypeError, ValueError):
                return data  # the processes field reports its own error
            data = {**data, "max_streams": STREAMS_PER_PROCESS * n}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Settings:
        if self.model_dir is not None and (self.workdir is not None or self.model_ref is not None):
            raise ValueError("give model_dir or workdir (+ model_ref), not both")
        from ser.serve.security import parse_keys  # the key lists' form (NAME:KEY or KEY, no duplicates)

        parse_keys(self.api_keys, "API")
        parse_keys(self.admin_keys, "admin")
        if self.auth == "none" and self.api_keys:
            raise ValueError("auth none (no key check) contradicts the API keys given: drop one")
        if self.auth == "key" and not self.api_keys:
            raise ValueError("auth key needs at least one API key (api_keys / SER_API_KEYS)")
        return self

    @property
    def poll_s(self) -> float:
        """Seconds between polls of the model source (0: no polling): ``reload_poll_s``, else the default of the
        source (:data:`DEFAULT_RELOAD_POLL_S` for a workdir's registry, off for a fixed model folder)."""
        if self.reload_poll_s is not None:
            return self.reload_poll_s
        return 0.0 if self.model_dir is not None else DEFAULT_RELOAD_POLL_S

    @property
    def log_off(self) -> bool:
        return (self.prediction_log or "").strip().lower() in {"off", "none", "0", "false", "no"}

    def second_model(self) -> SecondModel | None:
        """The second model's settings block (None without ``shadow_ref``)."""
        if not self.shadow_ref:
            return None
        canary = self.shadow_mode == "canary"
        return SecondModel(
            ref=self.shadow_ref,
            share=self.canary_share if canary else self.shadow_share,
            mode=self.shadow_mode,
            rollback=RollbackRule(
                min_requests=self.canary_min_requests,
                max_error_increase=self.canary_max_error_increase,
                min_feedback=self.canary_min_feedback,
                uar_margin=self.canary_uar_margin,
            )
            if canary
            else None,
        )


class SecondModel(BaseModel):
    """The second model a server runs beside the served one: a registry reference or a model folder (``ref``),
    its ``mode`` and ``share``. ``shadow``: it also runs on ``share`` of the answers, logged under its own version
    with the same prediction id, never returned. ``canary``: it answers ``share`` of the requests itself (logged
    with ``role = canary``, its version in the answer) until ``rollback`` (:class:`ser.monitor.canary.
    RollbackRule`) says it is worse than the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str
    share: float = Field(1.0, ge=0, le=1)
    mode: Literal["shadow", "canary"] = "shadow"
    rollback: RollbackRule | None = None


def _split_commas(value: Any) -> Any:
    """``"a, b,"`` → ``["a", "b"]`` (blank items dropped; ``""`` → ``[]``); anything else as is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._env = env  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._env.items()
            if not (self.env_ignore_empty and v == "")
        }
