"""The application layer: one job per use case, called alike by the CLI, the pipeline stages and Airflow.

Each job is a small frozen dataclass of typed settings with a ``run()`` that does the flow once and returns a typed
outcome; it reads and writes files, the library below it stays pure. The CLI commands only parse options, call a
job and print; the pipeline stages (:mod:`ser.pipeline.stages`) only read upstream records, call a job and write
their record; the Airflow tasks run those stages.

========================  ==========================================================================
module                    jobs
========================  ==========================================================================
:mod:`ser.jobs.data`      ingest (corpora, feedback) → validate → split (speaker-independent, gate set held out)
:mod:`ser.jobs.train`     members → cross-validation → fusion → the shipped model; cross-corpus
:mod:`ser.jobs.tune`      an Optuna study on one training fold's validation speakers
:mod:`ser.jobs.evaluate`  fold predictions → the cross-validation report; a model folder → its report on a manifest
:mod:`ser.jobs.release`   ONNX export with parity check, model card, registry with the promotion gate (gate set)
:mod:`ser.jobs.monitor`   the reference profile at export; monitoring report, retention, deletion, feedback import
:mod:`ser.jobs.adapt`     a model folder adapted to a deployment from its unlabelled audio (``ser model adapt``)
:mod:`ser.jobs.batch`     every recording of an archive → emotion timelines as Parquet (local pool or Ray)
:mod:`ser.jobs.loop`      the closed loop's pass: monitor → retrain (the pipeline, given by the caller) when due
========================  ==========================================================================
"""
