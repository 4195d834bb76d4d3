"""MLflow tracking, through MLflow's public API only.

- store.py: where runs are stored, and opening the store (or a server) before training;
- runs.py: the train stage's run and what evaluate and report add to it;
- registry.py: the logged model, its registered versions and the champion alias.
"""
