"""One module or package per chapter (``ch01.py``, ``ch02/``...), each registering its exercises and checks.

Every ``chNN`` module or package here is imported on the registry's first use; see
:mod:`minikv.grade.registry` for how to write one and ``docs/grader.md``.
"""
