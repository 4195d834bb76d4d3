"""`cnn-pipeline tune`: a hyperparameter search whose every trial is a DVC experiment and an
MLflow run (docs/search.md).

- space.py: the search file (conf/search/NAME.yaml), checked before anything trains;
- ticket.py: what a queued trial's train stage needs to find its trial (no Optuna import);
- storage.py: the study's database and pruner, opened alike by the search and its trials;
- pruning.py: the Keras callback that reports each epoch to the trial and stops it early;
- tune.py: the search itself: asks Optuna, queues DVC experiments, tells the results.
"""
