"""Targets a scenario runs on: ``sim`` (the model) and ``live`` (this machine's kernel)."""
