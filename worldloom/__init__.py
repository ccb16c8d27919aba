"""WorldLoom: game rendering turned into training data for world models.

    make demo     # install into .venv and run the main job
    make test     # install into .venv and run the tests

Stages live in subpackages, each importable on its own: `worldloom.envs`, `worldloom.capture`,
`worldloom.datasets`, `worldloom.idm`, `worldloom.pretrain`.
"""

__version__ = "0.1.0"
