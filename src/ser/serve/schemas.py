"""The API's response models (pydantic), and the OpenAPI request bodies of the upload routes (parsed by hand in
:mod:`ser.serve.uploads`, so declared here for the docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ser.monitor.ids import UUID7_PATTERN


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. undecodable_audio")
    message: str
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


PREDICTION_ID = (
    "id of this answer (UUIDv7, sortable by time): send it to POST /v1/feedback with the true label; the "
    "prediction log holds the answer under it"
)


class PredictionOut(BaseModel):
    prediction_id: str = Field(description=PREDICTION_ID)
    label: str | None = Field(
        description="the most probable emotion, or `uncertain` when the service abstains (its top probability is "
        "below the service's threshold, SER_ABSTAIN_BELOW; see `abstained`); null when there is no speech to classify"
    )
    confidence: float | None = Field(
        description="the top probability (calibrated: temperature-scaled when the model folder has a temperature); "
        "null without speech"
    )
    probabilities: dict[str, float] | None = Field(
        description="emotion → probability, summing to 1; null without speech"
    )
    speech: bool = Field(
        True,
        description="false when the clip holds no speech to classify (then label, confidence and probabilities are "
        "null and `reason` says why); voice is found by the timeline's VAD (webrtcvad + a -60 dBFS energy gate)",
    )
    reason: Literal["no_speech", "clipped"] | None = Field(
        None,
        description="why there is no label: `no_speech` (less than 0.25 s of voice) or `clipped` (more than half "
        "of the samples at full scale); null when `speech` is true",
    )
    abstained: bool = Field(
        False,
        description="true when the top probability is below the service's abstention threshold (SER_ABSTAIN_BELOW): "
        "`label` is then `uncertain`, `confidence` and `probabilities` are still given; always false when no "
        "threshold is set or there is no speech",
    )
    duration_s: float = Field(description="clip duration, seconds")
    processing_ms: float = Field(description="decoding + inference time, milliseconds")
    model_name: str
    model_version: str
    filename: str | None = None


class BatchItem(BaseModel):
    filename: str | None
    ok: bool
    result: PredictionOut | None = None
    error: ErrorBody | None = None
    status: int = Field(200, description="the status this file would have had on /v1/predict")


class BatchOut(BaseModel):
    model_version: str
    n_ok: int
    n_failed: int
    results: list[BatchItem]


class SegmentOut(BaseModel):
    prediction_id: str = Field(description=PREDICTION_ID)
    start_s: float
    end_s: float
    label: str
    confidence: float
    probabilities: dict[str, float]


class TimelineGrid(BaseModel):
    step_s: float
    smoothing: str
    times_s: list[float] = Field(description="bin centres, seconds")
    voiced: list[bool]
    label: list[str | None] = Field(description="argmax of the smoothed probabilities; null where unvoiced")
    probabilities: dict[str, list[float | None]] = Field(description="emotion → smoothed p per bin; null unvoiced")


class PeakOut(BaseModel):
    start_s: float
    end_s: float
    max_p: float
    t_max_s: float


class SummaryOut(BaseModel):
    duration_s: float
    voiced_s: float
    voiced_fraction: float
    shares: dict[str, float] = Field(description="fraction of voiced time per emotion (argmax); sums to 1")
    dominant: str | None
    mean_probabilities: dict[str, float]
    peak_label: str
    peak_threshold: float
    peaks: list[PeakOut]


class TimelineOut(BaseModel):
    model_name: str
    model_version: str
    labels: list[str]
    duration_s: float
    processing_ms: float
    segments: list[SegmentOut]
    timeline: TimelineGrid
    summary: SummaryOut


class ChannelTimelineOut(BaseModel):
    """One channel's timeline of a recording timed per channel (``channels=split``)."""

    channel: str = Field(description="the channel's name (channel_names, else ch0, ch1, ...)")
    segments: list[SegmentOut]
    timeline: TimelineGrid
    summary: SummaryOut


class TimelineSplitOut(BaseModel):
    """``channels=split``: one timeline per channel of a multi-channel recording (a stereo call: agent and
    customer), in channel order."""

    model_name: str
    model_version: str
    labels: list[str]
    duration_s: float
    processing_ms: float
    channels: list[ChannelTimelineOut]


class ModelInfo(BaseModel):
    """The served model, for clients: no file-system path, no code revision (those stay in the server's logs)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    labels: list[str]
    sample_rate: int
    metrics: dict[str, Any] = Field(default_factory=dict, description="metadata.json 'metrics'")
    evaluation: dict[str, Any] | None = None
    model: dict[str, Any] | None = Field(None, description="architecture and parameter count")
    created: str | None = None
    registered: str | None = None
    loaded_at: str | None = None


class FeedbackIn(BaseModel):
    """The true label of an answer."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        pattern=UUID7_PATTERN, description="the answer's prediction_id (a UUIDv7 in canonical lower-case form)"
    )
    label: str = Field(min_length=1, max_length=64, description="the true emotion: one of the served model's labels")
    source: str | None = Field(None, max_length=200, description="who says so: user, annotator, ...")
    group: str | None = Field(
        None, max_length=200, description="a group to break live accuracy down by (channel, region; never a person)"
    )


class FeedbackOut(BaseModel):
    """The feedback record as accepted (it is written to the feedback log in the background)."""

    prediction_id: str
    label: str
    source: str | None
    group: str | None
    ts: str = Field(description="when the feedback arrived (UTC, ISO 8601)")
    stored: bool = Field(description="queued for the feedback log (false when the prediction log is off)")


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    model_name: str
    model_version: str


class ReloadOut(BaseModel):
    ok: bool
    changed: bool
    version: str | None
    previous_version: str | None
    seconds: float


# ----------------------------------------------------------------------------------------------------------------
# request bodies (OpenAPI only)

_BINARY = {"type": "string", "format": "binary"}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]}
            },
            "audio/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                    "required": ["files"],
                }
            }
        },
    }
}
