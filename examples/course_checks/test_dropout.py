"""A course's own check: at most three dropout layers (run with `grade SUB --checks examples/course_checks`)."""

from grader.checks_api import rule

DROPOUT_OPS = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout"}


@rule("dropout_layers", points=10)
def test_at_most_three_dropout_layers(facts, check):
    """At most three dropout layers"""
    graph = facts.need("graph")  # gated on the model analysis, like the assignment's own rules
    limit = int(check.rule.get("at_most", 3))
    layers = [node.module or node.name for node in graph.nodes if node.aten in DROPOUT_OPS]
    if len(layers) > limit:
        check.fail(
            f"{len(layers)} dropout layers ({', '.join(layers[:6])}), at most {limit} allowed",
            hint="keep dropout in a few places, e.g. once per block",
        )
    check.passed(f"{len(layers)} dropout layer(s), at most {limit} allowed")
