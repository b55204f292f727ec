"""Storage for DA-VAE Inspector: database records and files under the data directory.

Open everything with ``storage.db.open_storage()``, once per process. The
modules, one job each:

- ``db``: settings from the environment, engine, sessions, migrations;
- ``models``: the tables; ``files``: originals, heatmaps and model bundles;
- ``registry``: model versions; ``batches``: batches and their image files;
- ``scores``: chunked, resumable scoring; ``thresholds`` and ``labels``:
  auto and human labels; ``review``: the review table and label counts;
  ``export``: export rows;
- ``history``: score history for control charts; ``audit``: the audit log;
- ``jobs``: the queue of long work; ``retry``: retries on busy databases.

This package never imports torch, so pages can use it without loading a model.
"""
