"""Grading a whole class (``grade batch``), on the trusted side: each submission in a grading process of its own."""
