"""What operators see of a running server: Prometheus metrics (``metrics.py``), logs
(``logs.py``) and the context every log line carries (``context.py``). Imports nothing of the
domains; they import it."""
