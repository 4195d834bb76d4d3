"""Stop `dvc exp run` before it throws away a value of params.yaml that conf/ does not hold.

DVC imports every module under hydra_plugins/ at the repository root (its `hydra.plugins_path`,
documented for custom OmegaConf resolvers) right before it composes conf/ into params.yaml,
while params.yaml still holds the user's version: for workspace, --temp and --queue runs alike,
before anything is written or queued. Where the composition would drop a value nobody asked to
change, or the stages would refuse it, this module raises DVC's own error: DVC prints it as one
`ERROR:` line and exits, leaving the workspace as it was (cnn_pipeline.hand_edits says which
`-S` keep the values). The check runs in a process of its own because composing with Hydra
inside Hydra's plugin scan would recurse into the scan.
"""

import subprocess
import sys

CHECK = """import sys
try:
    from cnn_pipeline.hand_edits import refuse_dvc_exp_run
except ImportError as error:
    print(f"cnn-pipeline: cannot check params.yaml for edits: {error}", file=sys.stderr)
else:
    sys.exit(refuse_dvc_exp_run(sys.argv[1:]))
"""
REFUSED = 3  # cnn_pipeline.hand_edits.REFUSED, read there only once the package is importable

if sys.argv and sys.argv[0].endswith("dvc"):  # only the `dvc` command, not DVC's Python API
    try:  # -P: the current folder's files must not shadow the installed package
        check = subprocess.run(
            [sys.executable, "-P", "-c", CHECK, *sys.argv],
            check=False,
            timeout=120,
            stderr=subprocess.PIPE,
            text=True,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"cnn-pipeline: cannot check params.yaml for edits: {error}", file=sys.stderr)
    else:
        if check.returncode == REFUSED:
            from dvc.exceptions import DvcException

            raise DvcException(check.stderr.strip())
        sys.stderr.write(check.stderr)
