"""Warn, in one line, when `dvc exp run` is about to throw away a hand edit of params.yaml.

DVC imports every module under hydra_plugins/ at the repository root (its `hydra.plugins_path`,
documented for custom OmegaConf resolvers) right before it composes conf/ into params.yaml,
while params.yaml still holds the user's version: for workspace, --temp and --queue runs alike.
This module only compares and prints (cnn_pipeline.hand_edits.dvc_exp_run_warning): it never
changes what DVC does. The check runs in a process of its own because composing with Hydra
inside Hydra's plugin scan would recurse into the scan.
"""

import subprocess
import sys

CHECK = """import sys
try:
    from cnn_pipeline.hand_edits import print_dvc_exp_run_warning
except ImportError as error:
    print(f"cnn-pipeline: cannot check params.yaml for hand edits: {error}", file=sys.stderr)
else:
    print_dvc_exp_run_warning(sys.argv[1:])
"""

if sys.argv and sys.argv[0].endswith("dvc"):  # only the `dvc` command, not DVC's Python API
    try:  # -P: the current folder's files must not shadow the installed package
        subprocess.run([sys.executable, "-P", "-c", CHECK, *sys.argv], check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"cnn-pipeline: cannot check params.yaml for hand edits: {error}", file=sys.stderr)
