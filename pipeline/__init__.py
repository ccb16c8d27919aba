"""The roof: the `worldloom` command, the main job (`worldloom pipeline`) and its report.

    worldloom --help                                   # pipeline/cli.py: one subcommand per stage
    worldloom pipeline --preset tiny --out runs/demo   # pipeline/job.py: the whole loop, one report

The roof imports the stages (envs, capture, datasets, idm, pretrain) and the floor
(`worldloom/`); nothing imports the roof (tests/test_layers.py holds the rule).
"""
