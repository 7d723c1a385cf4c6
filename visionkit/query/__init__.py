"""Asking a vision model about every row: ``ask`` and what it is made of.

Modules: ``ask`` (the entry points), ``options`` (``AskOptions``, shared with batch jobs),
``client`` (``connect`` and ``Client``), ``plan`` and ``body`` (a row to a checked request),
``run`` (sending, retries, claims, the result frame), ``cache`` (the answer cache), ``replay``
(record and replay), and the small helpers they use.
"""
