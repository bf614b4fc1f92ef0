"""The executor (:mod:`ser.executor`): local and Ray maps give the same results in item order, report each result
as it finishes, share values once, and raise a task's own exception; bad settings are one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ser.errors import ConfigError
from ser.executor import Executor


def scaled(item: int, *, table: np.ndarray, factor: int = 1) -> tuple[int, int, int]:
    """A task: ``(item, table[item] * factor, pid)``."""
    return item, int(table[item]) * factor, os.getpid()


def refuse(item: int) -> int:
    if item == 2:
        raise ConfigError(f"item {item} is refused")
    return item


def die_once(marker: str) -> str:
    """Kill this worker process the first time (a lost worker: out of memory, node gone), succeed after."""
    from pathlib import Path

    if not Path(marker).exists():
        Path(marker).write_text("died")
        os._exit(1)
    return "done"


def torch_threads(item: int) -> int:
    from ser.train.cv import pin_threads

    pin_threads(item)
    import torch

    return torch.get_num_threads()


def test_local_map_runs_in_order_here_and_reports_each_result():
    seen = []
    table = np.arange(10) * 10
    shared = {"table": table, "factor": 2}
    out = Executor().map_tasks(scaled, [3, 1, 2], shared=shared, on_result=lambda i, r: seen.append(i))
    assert [(i, v) for i, v, _ in out] == [(3, 60), (1, 20), (2, 40)]
    assert {pid for *_, pid in out} == {os.getpid()} and seen == [0, 1, 2]
    assert Executor().map_tasks(scaled, [], shared={"table": table}) == []
    assert Executor().task_threads is None and Executor().describe() == "local"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "spark"}, "executor must be one of local, ray"),
        ({"kind": "ray", "address": " "}, "Ray address is empty"),
        ({"kind": "ray", "cpus_per_task": 0}, "CPUs per task"),
        ({"max_retries": -1}, "retries"),
    ],
)
def test_bad_settings_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        Executor(**kw)


@pytest.mark.slow
def test_ray_map_runs_in_workers_with_shared_values_and_local_results(ray_cluster):
    ex = Executor("ray", ray_cluster, cpus_per_task=1)
    assert ex.task_threads == 1 and ex.describe().startswith("ray (")
    table = np.arange(10) * 10
    seen = []
    shared = {"table": table, "factor": 2}
    out = ex.map_tasks(scaled, [3, 1, 2, 7], shared=shared, on_result=lambda i, r: seen.append(i))
    assert [(i, v) for i, v, _ in out] == [(3, 60), (1, 20), (2, 40), (7, 140)]  # item order, whatever finished first
    assert os.getpid() not in {pid for *_, pid in out}  # ran in Ray workers
    assert sorted(seen) == [0, 1, 2, 3]
    assert ex.map_tasks(torch_threads, [1]) == [1]  # a task pins torch to its CPUs


@pytest.mark.slow
def test_ray_task_error_is_raised_as_itself(ray_cluster):
    with pytest.raises(ConfigError, match=r"^item 2 is refused$"):
        Executor("ray", ray_cluster).map_tasks(refuse, [0, 1, 2, 3])


@pytest.mark.slow
def test_a_task_whose_worker_dies_is_retried_and_without_retries_fails_in_one_line(ray_cluster, tmp_path):
    from ser.errors import SerError

    marker = tmp_path / "died"
    assert Executor("ray", ray_cluster, max_retries=1).map_tasks(die_once, [str(marker)]) == ["done"]
    assert marker.read_text() == "died"  # the first attempt's worker was lost
    with pytest.raises(SerError, match=r"^a Ray task failed: ") as err:
        Executor("ray", ray_cluster, max_retries=0).map_tasks(die_once, [str(tmp_path / "again")])
    assert "\n" not in str(err.value)
