"""The options that ``grade`` and ``grade batch`` share, spelled once.

Trusted side.
"""

from __future__ import annotations

import argparse

from grader.sandbox.layers import LAYERS

ISOLATION_CHOICES = ("auto", *LAYERS)  # auto: the strongest layer that works on this machine


def add_train_switch(parser: argparse.ArgumentParser, *, train_help: str, no_train_help: str) -> None:
    """--train / --no-train, one or the other; neither leaves ``args.train`` None (the caller's default)."""
    train = parser.add_mutually_exclusive_group()
    train.add_argument("--train", dest="train", action="store_true", default=None, help=train_help)
    train.add_argument("--no-train", dest="train", action="store_false", help=no_train_help)
