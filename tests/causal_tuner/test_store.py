"""One conformance suite for every trial store, plus the kill -9 durability check."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from causal_tuner.store import FrozenTrial, InMemoryStore, SQLiteStore, TrialState


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryStore()
    else:
        s = SQLiteStore(tmp_path / "state" / "tuner.sqlite")
        yield s
        s.close()


def test_create_and_finish_round_trip(store):
    t0 = store.create_trial({"max_num_seqs": 64, "enable_chunked_prefill": True})
    t1 = store.create_trial({"max_num_seqs": 128, "enable_chunked_prefill": False})
    assert (t0.trial_id, t1.trial_id) == (0, 1)
    assert store.get_trial(1).state is TrialState.RUNNING
    done = store.finish_trial(0, TrialState.COMPLETE, {"goodput_tok_s": 1234.5, "ttft_ms": 80})
    assert done.observation["ttft_ms"] == 80.0
    again = store.get_trial(0)
    assert again == done
    assert dict(again.config) == {"max_num_seqs": 64, "enable_chunked_prefill": True}
    assert [t.trial_id for t in store.trials([TrialState.RUNNING])] == [1]
    assert [t.trial_id for t in store.trials()] == [0, 1]


def test_finished_trial_cannot_change(store):
    t = store.create_trial({"max_num_seqs": 8})
    store.finish_trial(t.trial_id, TrialState.FAILED, note="engine did not start")
    with pytest.raises(ValueError, match="already failed"):
        store.finish_trial(t.trial_id, TrialState.COMPLETE, {"goodput_tok_s": 1.0})
    assert store.get_trial(t.trial_id).note == "engine did not start"


def test_complete_needs_observation_and_values_are_checked(store):
    t = store.create_trial({"max_num_seqs": 8})
    with pytest.raises(ValueError, match="no observation"):
        store.finish_trial(t.trial_id, TrialState.COMPLETE, {})
    with pytest.raises(ValueError, match="ttft_ms"):
        store.finish_trial(t.trial_id, TrialState.COMPLETE, {"ttft_ms": float("nan")})
    with pytest.raises(ValueError, match="source"):
        store.create_trial({"a": 1}, source="guess")
    with pytest.raises(ValueError, match="config"):
        store.create_trial({"a": [1, 2]})
    # the failed attempts left the running trial untouched
    assert store.get_trial(t.trial_id).state is TrialState.RUNNING


def test_unknown_trial_is_a_key_error(store):
    with pytest.raises(KeyError, match="no trial with id 7"):
        store.get_trial(7)


def test_meta_and_add_completed(store):
    store.set_meta("space", {"knobs": ["max_num_seqs"], "seed": 3})
    assert store.get_meta("space") == {"knobs": ["max_num_seqs"], "seed": 3}
    assert store.get_meta("missing", 5) == 5
    t = store.add_completed({"max_num_seqs": 32}, {"goodput_tok_s": 10.0}, source="history")
    assert t.source == "history" and t.state is TrialState.COMPLETE


def test_frozen_trial_is_immutable():
    t = FrozenTrial(trial_id=0, config={"a": 1})
    with pytest.raises(TypeError):
        t.config["a"] = 2  # type: ignore[index]


def test_sqlite_reopen_keeps_everything(tmp_path):
    path = tmp_path / "t.sqlite"
    with SQLiteStore(path) as s:
        s.add_completed({"max_num_seqs": 16}, {"goodput_tok_s": 5.0}, source="prior")
        s.create_trial({"max_num_seqs": 32})
        s.set_meta("k", [1, 2])
    with SQLiteStore(path) as s:
        trials = s.trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
        assert trials[0].source == "prior" and s.get_meta("k") == [1, 2]


def test_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a causal-tuner store"):
        SQLiteStore(bad)


def test_sqlite_survives_kill_9(tmp_path):
    """A writer killed mid-stream leaves a readable store whose rows are all whole."""
    path = tmp_path / "kill.sqlite"
    writer = textwrap.dedent(
        f"""
        import sys
        from causal_tuner.store import SQLiteStore, TrialState
        s = SQLiteStore({str(path)!r})
        i = 0
        while True:
            t = s.create_trial({{"max_num_seqs": i % 256}})
            s.finish_trial(t.trial_id, TrialState.COMPLETE, {{"goodput_tok_s": float(i)}})
            i += 1
            if i == 50:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with SQLiteStore(path) as s:
        trials = s.trials()
    assert len(trials) >= 50
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    # at most the last trial can be caught between create and finish
    assert len(trials) - len(complete) <= 1
    for t in complete:
        assert t.observation["goodput_tok_s"] == float(t.trial_id)
        assert t.config["max_num_seqs"] == t.trial_id % 256
