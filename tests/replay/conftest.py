"""``sample.ipynb`` is run by tests/test_replay_notebook.py (recorded, then replayed under
nbval), not collected as it is: outside that test it has no recording to replay."""

collect_ignore = ["sample.ipynb"]
