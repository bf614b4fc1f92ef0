"""Monitoring of the served model: what it was asked (input statistics), what it answered, how often it was right.

The service writes through this package and the CLI and the DAGs read through it; it never imports PyTorch or
training code, so the service image can hold it. Pure cores with thin I/O around them:

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
:mod:`ser.monitor.report`          the monitoring report (JSON + HTML with plots) over a time window
=================================  ==================================================================================
"""
