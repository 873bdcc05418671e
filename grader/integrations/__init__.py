"""Where classes already work (trusted side): Markdown for GitHub, a GitHub Actions workflow, a
Gradescope autograder, and the notebook entry point. Each module turns the results of one grading
into another place's format; none of them runs student code itself."""
