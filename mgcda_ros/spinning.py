"""An rclpy executor spun in a background thread, and stopped so that the thread has ended before anything it uses
is destroyed.

Why not ``executor.spin()`` in a daemon thread: rclpy's ``Executor.shutdown()`` does not wait for a thread that
is spinning (it destroys the executor's wake-up guard condition at once), so that thread can stay in ``rcl_wait``
for good, or still be inside rclpy when the interpreter exits; CPython 3.11 and older end such a thread with
``pthread_exit`` when it re-enters Python during finalization, and the unwinding through rclpy's C++ frames aborts
the process ("terminate called without an active exception"). Here the thread spins in bounded waits and checks
a stop flag, and :meth:`Spinner.stop` waits for it to have left its loop.

Whether it has left is an event the thread sets on its way out, not ``Thread.is_alive``: on CPython before 3.13 a
KeyboardInterrupt (Ctrl-C, or launch's SIGINT/SIGTERM through Python's handler) that lands while the main thread
is inside ``Thread.join`` can leave the thread marked as stopped while it still runs (CPython issue 90882), and
then every later join returns at once. A node stopped while it waited in ``join`` went on to tear down rclpy under
a spinning thread and aborted at exit in about half of its stops on a 2-core VM.
"""

from __future__ import annotations

import threading

from rclpy.executors import Executor, ExternalShutdownException

WAKE_S = 0.1  # longest wait in rcl_wait between checks of the stop flag; work that is ready is taken at once


class Spinner:
    """Spins ``executor`` in a background thread from :meth:`start` until :meth:`stop` or the context's shutdown."""

    def __init__(self, executor: Executor, name: str = "executor") -> None:
        self._executor = executor
        self._stop = threading.Event()
        self._finished = threading.Event()  # set by the thread as it leaves _run (see the module docstring)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._error: Exception | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        context = self._executor.context
        try:
            while not self._stop.is_set() and context.ok():
                self._executor.spin_once(timeout_sec=WAKE_S)
        except ExternalShutdownException:  # the context was shut down by someone else
            pass
        except Exception as err:  # a callback raised: the waiting thread re-raises it (the node must not live on deaf)
            self._error = err
        finally:
            self._finished.set()

    def wait(self) -> None:
        """Block until the spinning ends; re-raise what a callback raised, if that ended it. Timed waits: a signal
        can be delivered to any thread (Fast DDS's own threads do not block SIGINT), and then an untimed wait never
        wakes up to run the handler."""
        if self._thread.ident is None:
            raise RuntimeError("Spinner.wait() before start()")
        while not self._finished.wait(timeout=0.5):
            pass
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float) -> bool:
        """Stop after the callback in progress; False if the thread is still in its loop ``timeout`` s later."""
        self._stop.set()
        if self._thread.ident is None:  # never started
            return True
        if not self._finished.wait(timeout=timeout):
            return False
        self._thread.join(timeout=timeout)  # past _run: only Python's own thread teardown is left
        return True
