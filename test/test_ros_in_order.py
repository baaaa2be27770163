"""Publishing in the order frames were taken (mgcda_ros.in_order), with threads that finish out of order."""

from __future__ import annotations

import threading
import time

import pytest

from mgcda_ros.in_order import InOrder


def take_turn_in_thread(turns: InOrder, ticket: int) -> tuple[threading.Thread, threading.Event]:
    """A started thread that takes ``ticket``'s turn, and the event it sets inside it."""
    entered = threading.Event()

    def body() -> None:
        with turns.turn(ticket):
            entered.set()

    thread = threading.Thread(target=body)
    thread.start()
    return thread, entered


def test_turns_run_in_ticket_order_whatever_order_the_threads_arrive_in() -> None:
    turns = InOrder()
    tickets = [turns.ticket() for _ in range(6)]
    assert tickets == list(range(6))
    done: list[int] = []

    def worker(ticket: int) -> None:
        time.sleep(0.01 * (6 - ticket))  # the later the ticket, the sooner its thread is ready
        with turns.turn(ticket):
            done.append(ticket)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert done == tickets


def test_a_failing_turn_still_lets_the_next_ticket_go() -> None:
    turns = InOrder()
    first, second = turns.ticket(), turns.ticket()
    with pytest.raises(RuntimeError, match="bad frame"):
        with turns.turn(first):
            raise RuntimeError("bad frame")
    thread, finished = take_turn_in_thread(turns, second)
    thread.join(timeout=10)
    assert finished.is_set()


def test_a_later_ticket_waits_while_an_earlier_one_is_out() -> None:
    turns = InOrder()
    first, second = turns.ticket(), turns.ticket()
    thread, entered = take_turn_in_thread(turns, second)
    assert not entered.wait(0.2)  # ticket 0 has not taken its turn yet
    with turns.turn(first):
        pass
    assert entered.wait(10)
    thread.join(timeout=10)


def test_tickets_never_issued_or_already_used_are_refused() -> None:
    turns = InOrder()
    with pytest.raises(ValueError, match="never issued"):
        with turns.turn(0):
            pass
    ticket = turns.ticket()
    with turns.turn(ticket):
        pass
    with pytest.raises(ValueError, match="already taken its turn"):
        with turns.turn(ticket):
            pass
