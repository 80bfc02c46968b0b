"""LocalComm: the in-process transport that makes the reference trainer exact."""

from __future__ import annotations

import pytest
import torch

from layerpar.errors import LaunchError
from layerpar.parallel.comm import LocalHub, TorchDistComm

CPU = torch.device("cpu")


def test_send_recv_is_first_in_first_out_per_pair():
    a, b, c = LocalHub(3).comms()
    for value in (1.0, 2.0, 3.0):
        a.isend(torch.full((2,), value), 1).wait()
    c.isend(torch.full((2,), 9.0), 1)
    assert float(b.recv((2,), 2, torch.float32, CPU)[0]) == 9.0
    got = [float(b.recv((2,), 0, torch.float32, CPU)[0]) for _ in range(3)]
    assert got == [1.0, 2.0, 3.0]


def test_sent_tensor_is_a_snapshot():
    a, b = LocalHub(2).comms()
    x = torch.zeros(3)
    a.isend(x, 1)
    x += 5
    assert torch.equal(b.recv((3,), 0, torch.float32, CPU), torch.zeros(3))


def test_recv_casts_dtype_and_counts_bytes():
    a, b = LocalHub(2).comms()
    a.isend(torch.ones(4, 2, dtype=torch.float32), 1)
    out = b.recv((4, 2), 0, torch.float64, CPU)
    assert out.dtype == torch.float64
    assert a.bytes_sent == 4 * 2 * 4 and b.bytes_sent == 0


def test_recv_before_send_is_a_clear_error():
    _, b = LocalHub(2).comms()
    with pytest.raises(RuntimeError, match="nothing sent yet from rank 0"):
        b.recv((1,), 0, torch.float32, CPU)


def test_recv_wrong_shape_is_an_error():
    a, b = LocalHub(2).comms()
    a.isend(torch.ones(2, 3), 1)
    with pytest.raises(RuntimeError, match=r"expected \(3, 2\) from 0, got \(2, 3\)"):
        b.recv((3, 2), 0, torch.float32, CPU)


def test_all_reduce_sums_in_rank_order_whatever_the_call_order():
    """1 + 1e8 − 1e8 in float32: rank order gives 0, any order adding 1 last gives 1."""
    comms = LocalHub(3).comms()
    values = {0: 1.0, 1: 1e8, 2: -1e8}
    tensors = {r: torch.tensor([values[r]], dtype=torch.float32) for r in range(3)}
    handles = {r: comms[r].all_reduce(tensors[r], (0, 1, 2)) for r in (2, 1, 0)}
    for r in (1, 2, 0):
        handles[r].wait()
    expected = (torch.tensor([1.0]) + torch.tensor([1e8])) + torch.tensor([-1e8])
    assert float(expected) == 0.0
    for r in range(3):
        assert torch.equal(tensors[r], expected), r


def test_all_reduce_in_place_and_repeatable():
    comms = LocalHub(2).comms()
    for round_ in range(3):
        tensors = [torch.tensor([float(r + 1), float(round_)]) for r in range(2)]
        handles = [c.all_reduce(t, (0, 1)) for c, t in zip(comms, tensors)]
        for h in handles:
            h.wait()
        for t in tensors:
            assert t.tolist() == [3.0, 2.0 * round_]


def test_all_reduce_over_a_sub_group():
    comms = LocalHub(4).comms()
    tensors = [torch.tensor([float(10 ** r)]) for r in range(4)]
    h0 = comms[0].all_reduce(tensors[0], (0, 2))
    h1 = comms[1].all_reduce(tensors[1], (1, 3))
    h2 = comms[2].all_reduce(tensors[2], (0, 2))
    h3 = comms[3].all_reduce(tensors[3], (1, 3))
    for h in (h0, h1, h2, h3):
        h.wait()
    assert [float(t) for t in tensors] == [101.0, 1010.0, 101.0, 1010.0]


def test_all_reduce_of_one_rank_is_a_no_op():
    comm = LocalHub(2).comms()[1]
    x = torch.tensor([3.0])
    comm.all_reduce(x, (1,)).wait()
    assert float(x) == 3.0 and comm.bytes_sent == 0


def test_all_reduce_waited_too_early_names_the_missing_ranks():
    comms = LocalHub(3).comms()
    handle = comms[0].all_reduce(torch.ones(1), (0, 1, 2))
    comms[2].all_reduce(torch.ones(1), (0, 1, 2))
    with pytest.raises(RuntimeError) as info:
        handle.wait()
    message = str(info.value)
    assert "ranks [1]" in message and "before any rank's wait" in message


def test_local_objects():
    comms = LocalHub(1).comms()
    assert comms[0].gather_object({"a": 1}) == [{"a": 1}]
    assert comms[0].broadcast_object(5) == 5
    comms[0].barrier()


def test_torch_dist_comm_needs_a_process_group():
    with pytest.raises(LaunchError, match="init_process_group"):
        TorchDistComm()
