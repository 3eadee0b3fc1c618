"""NOA observability plugin: logs, metrics and traces for every request.

Importing this package has no side effects; see :mod:`.plugin`.
"""
