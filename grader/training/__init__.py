"""Training: data, trusted evaluation, the training job (trusted side), and the recipe (shared by both sides).

This package marker is shared by both sides: the training child imports ``grader.training.recipe`` through it,
so it stays empty.
"""
