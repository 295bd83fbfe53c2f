"""Hand-run A/B benchmarks for fastapi-mysqlpool (not tests; see README.md)."""
