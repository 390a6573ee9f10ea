"""What an operator watches: Prometheus metrics (``metrics``) and logs."""
