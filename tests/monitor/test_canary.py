"""The canary's pure core (:mod:`ser.monitor.canary`): the share and stickiness of the assignment, the rollback rule
(errors, live UAR, nothing under the minimum counts), the guard's counts and labelled answers, the rollback events;
and ``ser monitor compare`` judging a canary against the champion on the prediction log."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ser.monitor.canary import (
    CANARY,
    CHAMPION,
    CanaryGuard,
    RollbackRule,
    Side,
    assigned,
    read_rollbacks,
    record_rollback,
    rollback_reason,
)

RULE = RollbackRule(min_requests=100, max_error_increase=0.02, min_feedback=50, uar_margin=0.05)


def test_random_assignment_takes_the_share():
    rng = random.Random(0)
    drawn = sum(assigned(0.2, "7", None, rng) for _ in range(20_000))
    assert abs(drawn / 20_000 - 0.2) < 0.01
    assert not any(assigned(0.0, "7", None, rng) for _ in range(100))
    assert all(assigned(1.0, "7", None, rng) for _ in range(100))


def test_sticky_assignment_keeps_a_client_on_one_side_and_takes_the_share():
    clients = [f"client-{i}" for i in range(20_000)]
    first = [assigned(0.3, "7", c) for c in clients]
    assert first == [assigned(0.3, "7", c) for c in clients]  # the same client, the same side
    assert abs(np.mean(first) - 0.3) < 0.01
    other = [assigned(0.3, "8", c) for c in clients]  # a new canary version draws other clients
    assert abs(np.mean(other) - 0.3) < 0.01 and 0.15 < np.mean(np.array(first) != np.array(other)) < 0.6
    smaller = [assigned(0.1, "7", c) for c in clients]
    assert all(a for a, s in zip(first, smaller, strict=True) if s)  # a smaller share is a subset


def test_rollback_on_errors_only_over_the_minimum_count():
    ok = Side(requests=1000, errors=0)
    assert rollback_reason(ok, Side(requests=99, errors=99), RULE) is None  # under min_requests
    assert rollback_reason(Side(requests=99), Side(requests=200, errors=100), RULE) is None  # champion under it
    assert rollback_reason(ok, Side(requests=100, errors=2), RULE) is None  # 2 % is not more than 2 points worse
    why = rollback_reason(ok, Side(requests=100, errors=3), RULE)
    assert why and why.startswith("error rate 3.0 % (3 of 100 requests)")
    assert rollback_reason(Side(1000, 100), Side(100, 11), RULE) is None  # 11 % vs 10 %: within the margin


def test_rollback_on_low_live_uar_only_over_the_minimum_count():
    champ = Side(requests=1000, labelled=50, uar=0.70)
    assert rollback_reason(champ, Side(requests=10, labelled=49, uar=0.10), RULE) is None  # under min_feedback
    assert rollback_reason(Side(1000, labelled=49, uar=0.7), Side(10, labelled=50, uar=0.1), RULE) is None
    assert rollback_reason(champ, Side(requests=10, labelled=50, uar=0.66), RULE) is None  # within the margin
    why = rollback_reason(champ, Side(requests=10, labelled=50, uar=0.60), RULE)
    assert why and why.startswith("live UAR 60.0 % on 50 labelled answers")
    assert rollback_reason(champ, Side(requests=10, labelled=50, uar=0.80), RULE) is None  # better is fine


def test_guard_counts_and_joins_feedback_by_side():
    g = CanaryGuard(RULE)
    for i in range(60):
        g.predicted(f"c{i}", CHAMPION, "happy")
        g.predicted(f"k{i}", CANARY, "sad")
    for i in range(60):
        assert g.feedback(f"c{i}", "happy") and g.feedback(f"k{i}", "happy" if i % 2 else "sad")
    assert not g.feedback("unknown", "sad")
    for _ in range(100):
        g.served(CHAMPION, True)
    g.served(CANARY, False)
    sides = g.sides()
    assert sides[CHAMPION] == Side(100, 0, 60, 1.0)
    assert sides[CANARY].requests == 1 and sides[CANARY].errors == 1 and sides[CANARY].labelled == 60
    assert sides[CANARY].uar == pytest.approx(0.5)  # sad right 30/30, happy right 0/30
    assert g.check(uar=False) is None  # errors: the canary is under min_requests
    why = g.check()
    assert why and why.startswith("live UAR 50.0 %") and g.check(uar=False) == why  # it stays rolled back


def test_rollback_events_round_trip(tmp_path):
    assert read_rollbacks(tmp_path / "log") == []
    a = {"time": "2026-12-02T10:00:00.000+00:00", "version": "7", "reason": "error rate", "cause": "error_rate"}
    b = {"time": "2026-12-02T11:00:00.000+00:00", "version": "8/x", "reason": "live UAR", "cause": "live_uar"}
    path = record_rollback(tmp_path / "log", b)
    record_rollback(tmp_path / "log", a)
    assert path.endswith(".json") and "8_x" in path
    assert read_rollbacks(tmp_path / "log") == [a, b]
    assert read_rollbacks("memory://ser-canary-test") == []
    record_rollback("memory://ser-canary-test", a)
    assert read_rollbacks("memory://ser-canary-test") == [a]


def test_compare_judges_canary_against_champion(tmp_path, run_cli):
    from datetime import UTC, datetime, timedelta

    from ser.jobs.monitor import CompareJob
    from ser.monitor.feedback import FeedbackRecord, append_feedback
    from ser.monitor.log import append_records
    from tests.monitor.conftest import LABELS, fake_record

    rng = np.random.default_rng(0)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    recs = [fake_record(rng, ts=t0 + timedelta(seconds=i), version="1") for i in range(300)]
    recs += [fake_record(rng, ts=t0 + timedelta(seconds=i), version="2", role="canary") for i in range(100)]
    append_records(tmp_path / "log", recs)
    # the champion is always right; the canary right on every other answer
    fb = [FeedbackRecord(r.prediction_id, r.label) for r in recs[:300]]
    wrong = {lab: LABELS[(i + 1) % len(LABELS)] for i, lab in enumerate(LABELS)}
    fb += [FeedbackRecord(r.prediction_id, r.label if i % 2 else wrong[r.label]) for i, r in enumerate(recs[300:])]
    append_feedback(tmp_path / "log", fb)
    record_rollback(tmp_path / "log", {"time": "2026-12-02T10:00:00+00:00", "version": "2", "reason": "live UAR"})
    res = CompareJob(str(tmp_path / "log"), n_boot=200).run()
    assert res.paired == 0  # a canary answers other requests: nothing to pair
    c = res.canary
    assert c["champion"]["answers"] == 300 and c["canary"]["answers"] == 100 and c["share"] == pytest.approx(0.25)
    assert c["champion_version"] == "1" and c["canary_version"] == "2"
    assert c["champion"]["uar"] == pytest.approx(1.0) and c["canary"]["labelled"] == 100
    assert 0.3 < c["canary"]["uar"] < 0.7
    lo, hi = c["uar_difference_ci"]
    assert lo < hi < 0  # the canary is clearly worse
    assert [e["version"] for e in c["rollbacks"]] == ["2"]
    code, out, _ = run_cli("monitor", "compare", "--log", tmp_path / "log")
    assert code == 0
    assert "canary v2 vs champion v1: 100 vs 300 answers (canary share 25.0 %)" in out
    assert "live UAR: champion 100.0 % on 300 labelled" in out and "rolled back v2" in out
