"""Serving: the uvicorn server every ``tusserver serve`` runs, and ``--workers N``.

- ``server``: the uvicorn configuration and ``GracefulServer`` (one process);
- ``supervisor``: the parent of ``--workers N``: binds the socket once, starts N workers on
  it, restarts any that dies, stops them all on SIGTERM;
- ``worker``: what each worker process runs.

How the workers share one data dir: ``state.group`` (which worker a process is),
``state.process_locks`` and ``state.mailbox`` (upload locks and release requests across
processes), ``ops.metrics`` (counts summed over workers).
"""
