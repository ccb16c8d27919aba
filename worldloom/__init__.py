"""WorldLoom: game rendering turned into training data for world models.

    make demo     # install into .venv and run the main job
    make test     # install into .venv and run the tests

The floor: what every stage shares (errors, config, the action space, atomic writes and
checkpoints, the training plumbing, the Ray session). The stages live in `worldloom.envs`,
`worldloom.capture`, `worldloom.datasets`, `worldloom.idm`, `worldloom.pretrain`; the roof (the
command line, the main job, its report) in `worldloom.pipeline`.
"""

import os

# OpenMP threads that spin while waiting made a tiny training step 5-15x slower on a busy
# 2-core machine (measured: 15-50 s a step with spinning threads, 1.7-3 s with PASSIVE). It
# must be set before torch loads, so it is set here, where every stage's import passes first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
