"""Evaluations: test sets run against responses, each judged by evaluators (one module per family).

base.py (verdicts and the evaluator interface), registry.py (names → evaluators, the entry point group
``convolens.evaluators``), golden.py, phrase.py, semantic.py, checks.py, attempts.py, judge.py (the
evaluators), responses.py (where a test case's response comes from), run.py (one work item: respond,
evaluate). The store keeps test sets and runs (store/evaluations.py); workers run them
(worker/evaluating.py).
"""
