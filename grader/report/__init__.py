"""The reports of one grading (HTML, terminal, what was graded), written on the trusted side."""
