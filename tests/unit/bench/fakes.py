"""A hand-made profile with round numbers, for checking the cost formulas by hand."""

from __future__ import annotations

from layerpar.bench.profile import AuxTimes, BlockTimes, Profile


def hand_profile(**changes) -> Profile:
    """4 blocks at batch 8: forward 1 s, backward 2 s each; 100 parameter bytes, 80 output bytes
    each; SGD 1 ms/byte; AuxNet for K=2: forward 0.5 s, backward 0.25 s, 40 bytes; K=3 too, K=4 not."""
    values: dict = {
        "model": "hand", "dataset": "none", "input_shape": (1, 2, 2), "batch_size": 8, "balance": "time",
        "device": "cpu: hand", "threads": 1, "dtype": "float32", "block_names": ("A", "B", "C", "D"),
        "param_bytes": (100,) * 4, "param_counts": (25,) * 4, "activation_bytes": (80,) * 4,
        "timings": (BlockTimes(8, (1.0,) * 4, (2.0,) * 4),),
        "aux": (AuxTimes(2, 8, (0, 2, 4), (0.5,), (0.25,), 40),
                AuxTimes(3, 8, (0, 1, 2, 4), (0.5, 0.6), (0.25, 0.3), 60)),
        "sgd_s_per_byte": 0.001, "adam_s_per_byte": 0.01, "boundary_s_per_byte": 0.01, "batch_s": 0.1,
    }
    values.update(changes)
    return Profile(**values)
