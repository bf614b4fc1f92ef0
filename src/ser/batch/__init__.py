"""``ser batch``: the emotion timeline of every recording of an archive (thousands of calls, any length) → Parquet.

The flow, one module per step (the job :class:`ser.jobs.batch.BatchJob` strings them together)::

    archive (folder or fsspec URI)  →  files to do (resume)  →  per-file timelines in workers  →  Parquet parts
    :mod:`ser.batch.archive`           :mod:`ser.batch.store`    :mod:`ser.batch.worker` on       :mod:`ser.batch.store`
                                                                 :mod:`ser.batch.executors`
                                                                 (process pool or Ray)

- :mod:`ser.batch.core`: pure: a file's timelines → segment rows and summary rows, the Arrow schemas, channel
  names;
- :mod:`ser.batch.archive`: list the recordings under a folder or URI (``file://``, ``gs://``, ``s3://``,
  ``memory://``: any fsspec protocol);
- :mod:`ser.batch.worker`: one file → its rows (decode, optionally per channel, then :func:`ser.timeline.analyze`
  with an onnxruntime :class:`ser.inference.Predictor`); every failure becomes a ``failed`` row with its reason;
- :mod:`ser.batch.executors`: where the workers run: in-process, a local process pool, or Ray actors;
- :mod:`ser.batch.store`: the output folder: partitioned Parquet, written atomically part by part, and the resume
  state read back from it.

Inference is onnxruntime only: nothing here imports PyTorch, training or the service.
"""
