"""The cyclic collector paused around an allocation-heavy block (`chalicelib.collector`)."""

from __future__ import annotations

import gc
import threading

import pytest

from chalicelib import collector


@pytest.fixture(autouse=True)
def _collector_running():
    gc.enable()
    yield
    gc.enable()


def test_paused_stops_the_collector_for_the_block_only():
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_nested_pause_keeps_it_off_until_the_outer_one_ends():
    with collector.paused():
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_in_the_block_still_restarts_it():
    with pytest.raises(ValueError, match="boom"), collector.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_pauses_on_threads_restart_it_when_the_last_ends():
    # Given two threads that each hold a pause, the first ending before the second
    inside, first_done, second_done = threading.Barrier(2), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with collector.paused():
            inside.wait()
        first_done.set()

    def second() -> None:
        with collector.paused():
            inside.wait()
            first_done.wait()
            seen.append(gc.isenabled())  # the first one has ended: still paused
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    # Then it stayed off while the second one held its pause, and runs again now
    assert seen == [False]
    assert gc.isenabled()
