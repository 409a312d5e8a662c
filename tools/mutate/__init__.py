"""Mutation testing of the decision core: which small changes to the code still pass its tests.

Each mutant is one deliberate change to one module (a flipped comparison, `and` for `or`, a changed
constant, a removed `not`, a deleted statement, `return None`; `operators.py`), never made in the
working tree. Of the tests mapped to that module (`modules.py`), those that run the mutant's lines
(coverage, recorded per test in one run of them all; `coverage_map.py`) run against it (`-x`, a
timeout): a failing run kills the mutant; a passing one means no test pins that behaviour (a
survivor), unless the mutant is equivalent (it changes nothing observable; see docs/testing.md). A
mutant no test runs is a survivor without a run ("uncovered").

A mutant is judged on the fast path when it can be (`fast.py`: the tests collected once, a fork
per mutant with the module's functions given their mutated code), else on the slow path
(`slow.py`: the mutant written into a copy of the tree and a fresh pytest run).
"""
