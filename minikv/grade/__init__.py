"""The course grader: every exercise reports PASS / FAIL / TODO (not started) / SKIP (needs a GPU).

In a notebook::

    from minikv.grade import check, learner_module
    check("1.2")                     # grades exercises/ch01_kv_cache.py's KVCache, read anew from disk
    check("1.3", my_attention)       # grades a function defined in the notebook instead
    KVCache = learner_module("ch01_kv_cache").KVCache   # your piece, to plug into LLM(...)

From a shell: ``minikv grade [ID ...] [--chapter N] [--impl exercises|solutions] [--json] [--timeout S]``
(also ``python -m minikv.grade``); ``minikv exercises [--check]`` regenerates the stubs
(:mod:`minikv.grade.stubs`). How to add an exercise: ``docs/grader.md``.
"""

from minikv.grade.cli import main
from minikv.grade.compare import CheckFailed
from minikv.grade.layout import learner_module, repo_root
from minikv.grade.registry import Check, Exercise, all_exercises, register
from minikv.grade.result import FAIL, PASS, SKIP, TODO, CheckResult, Result
from minikv.grade.runner import Learner, check, grade

__all__ = [
    "FAIL", "PASS", "SKIP", "TODO",
    "Check", "CheckFailed", "CheckResult", "Exercise", "Learner", "Result",
    "all_exercises", "check", "grade", "learner_module", "main", "register", "repo_root",
]
