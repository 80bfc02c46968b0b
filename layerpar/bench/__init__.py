"""``layerpar bench``: speedup of layer-parallel training against serial backprop, DDP and
pipeline parallelism, measured and predicted.

Modules, each importing only those listed before it (no cycles):

- ``registry``: the arms (``ArmSpec``, ``ARMS``): the only list of them; imports no torch.
- ``config``: ``BenchConfig``, one invocation's settings, typed.
- ``common``: shared helpers (byte counting, batches, cut points, timing loop, devices, results).
- ``arms``, ``minimal_arm``, ``deepspeed_arm``: the arms' per-rank functions.
- ``profile``: a measured per-block ``Profile`` and its cut points.
- ``profile_timing``, ``profile_contention``, ``profile_measure``: measuring a ``Profile`` (the
  timing helpers, the contention factor, ``measure_profile``).
- ``costmodel``: links and the step-time formulas.
- ``predict``: per-arm predictions (through the registry) and their table.
- ``validate``: predictions against a ``layerpar bench`` summary.json.
- ``predict_report``: predictions.json, profile.json, the plots and the printed tables.
- ``predict_run``: ``--predict`` (profile, predict, validate, write).
- ``accuracy``: ``--train``: accuracy against wall-clock.
- ``harness``: the multi-process arms on the CPU (gloo); ``one_device``: ``--one-device``
  (the GPU path).
- ``cli``: the ``bench`` parser and entry.
"""
