"""placeholder"""
from __future__ import annotations

import argparse


def register(subparsers, name: str, help_text: str) -> None:
    """`worldloom agent {train,eval,study}`: the agent room's verbs, and the study that uses every stage."""
    from worldloom.agent import cli as agent_cli

    parser = subparsers.add_parser(name, help=help_text, description=agent_cli.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="agent_command", metavar="COMMAND")
    agent_cli.add_verbs(sub)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
