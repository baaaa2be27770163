"""Publishing in the order frames were taken, when several workers run the model at once.

Frames are taken one after another but may finish out of order (two frames on two lanes of the CPU: the later one
can end first); a planner must never see an older stamp after a newer one. Each taken frame gets a ticket; its
publishing runs in ``turn(ticket)``, which waits until every earlier ticket's turn has ended. A frame that is
dropped or fails still takes its (empty) turn, so the frames behind it never wait for nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InOrder:
    """Tickets in the order they are issued; ``turn(ticket)`` runs its body after every earlier ticket's body."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._next = 0

    def ticket(self) -> int:
        """The next ticket (0, 1, 2, ...); call it where the frames are taken, in their order."""
        with self._cond:
            ticket = self._issued
            self._issued += 1
            return ticket

    @contextmanager
    def turn(self, ticket: int) -> Iterator[None]:
        """Wait for every earlier ticket's turn to end, run the body, then let the next ticket go (also when the
        body raises). Each issued ticket must take its turn exactly once."""
        with self._cond:
            if not 0 <= ticket < self._issued:
                raise ValueError(f"ticket {ticket} was never issued (issued so far: {self._issued})")
            if ticket < self._next:
                raise ValueError(f"ticket {ticket} has already taken its turn")
            self._cond.wait_for(lambda: self._next == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._next = ticket + 1
                self._cond.notify_all()
