"""Operations: what an operator runs, watches and tunes.

Owns the Prometheus metrics, log setup, the readiness probe, the expiry sweeper and the sweep
job (in process or as ``tusserver sweep``), and the ``tusserver config`` report.
"""
