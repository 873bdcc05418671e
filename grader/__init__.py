"""s6-grader: the autograder for the Session 6 CIFAR-10 CNN assignment."""

__version__ = "0.1.0"
