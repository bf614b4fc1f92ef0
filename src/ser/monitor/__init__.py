"""Monitoring of the served model: what it was asked (input statistics), what it answered, how often it was right.

The service writes through this package and the CLI and the DAGs read through it; it never imports PyTorch or
training code (an import-linter contract), so the service image can hold it. Pure cores with thin I/O around them:

=================================  ==================================================================================
module                             what
=================================  ==================================================================================
:mod:`ser.monitor.ids`             prediction ids: UUIDv7 (RFC 9562), sortable, with their time (``ts_of``)
:mod:`ser.monitor.stats`           input statistics of one clip (levels, clipping, speech share, SNR, band energy)
:mod:`ser.monitor.store`           hour-partitioned Parquet tables, the background writer, retention and deletion
:mod:`ser.monitor.log`             the prediction log: schema, record builder, ``PredictionLog``, readers
:mod:`ser.monitor.feedback`        feedback records, validation for the service, CSV import, the join
:mod:`ser.monitor.reference`       the training reference profile (``reference.parquet`` in the model folder)
:mod:`ser.monitor.drift`           PSI, KS, category mixes, quality shares; ``DriftConfig`` thresholds
:mod:`ser.monitor.report`          the monitoring report (JSON + HTML, plots from :mod:`ser.monitor.plots`)
:mod:`ser.monitor.compare`         the served model against its shadow (paired) or its canary
:mod:`ser.monitor.canary`          canary assignment (sticky / random), the rollback rule and its events
=================================  ==================================================================================

How the service is meant to use it (the wiring itself lives in ``ser.serve``)::

    from ser.audio import pcm_hash
    from ser.monitor.feedback import FeedbackError, FeedbackLog, validate_feedback
    from ser.monitor.log import PredictionLog, build_record
    from ser.monitor.stats import input_stats, seen_logmel

    # lifespan start / stop (one per worker process; the files are per process, nothing is shared)
    plog = PredictionLog(log_root, flush_s=2.0, max_queue=10_000)      # log_root: folder or fsspec URI
    flog = FeedbackLog(log_root)
    ...
    plog.close(); flog.close()                                        # writes what is queued, merges per hour

    # per answered request, in the worker thread, after inference on ``audio`` (16 kHz mono float32)
    feats = predictor.pre.features(audio)                             # the model's input, computed once
    stats = input_stats(audio, predictor.sample_rate,
                        logmel=seen_logmel(feats, predictor.pre.kind, n_mels),   # None for non-log-mel inputs
                        native_sr=info.sample_rate, channels=info.channels,      # from ser.audio.probe
                        container=info.format, codec=info.subtype)
    record = build_record(route="/v1/predict", model_name=predictor.name, model_version=predictor.version,
                          probabilities=prediction.probabilities, duration_s=..., processing_ms=...,
                          stats=stats, pcm_sha256=pcm_hash(audio),
                          client_name=upload.filename, salt=settings.log_salt)  # hashed only with a salt
    plog.log(record)                                                  # never blocks, never raises
    body["prediction_id"] = record.prediction_id

    # POST /v1/feedback {prediction_id, label, source?, group?}
    try:
        fb = validate_feedback(pid, label, predictor.labels, recent=plog.recent, root=log_root,
                               source=source, group=group)            # may read the disk: run in a thread
    except FeedbackError as exc:                                      # exc.status: 422 or 404, exc.code
        ...
    flog.log(fb)

    # Prometheus: plog.counters() → logged / written / dropped / errors / pending / files
"""
