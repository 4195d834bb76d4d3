"""cnn-pipeline: DVC stages, Hydra configs, Keras 3 models, MLflow tracking."""
