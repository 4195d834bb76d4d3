"""One module per DVC stage. Each `run(...)` takes typed config and paths and does the work;
the command line (cli.py) only reads params.yaml and calls it."""
