"""`python tools/mutation.py`: choose the mutants, judge them, print the scores.

python tools/mutation.py                             # every module in MODULES
python tools/mutation.py --module middleware/_keys.py --max-mutants 40
python tools/mutation.py --module middleware/_engine.py --function Cache.plan
python tools/mutation.py --tree ../wt-other --module router/_breaker.py --slow
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from . import __doc__ as overview
from .coverage_map import coverage_maps
from .fast import Deferred, judge_fast
from .modules import MODULES, tests_of
from .operators import Mutant, apply, diff, in_functions, mutants
from .report import Result, report
from .slow import judge_slowly

TOOL_TREE = Path(__file__).resolve().parents[2]


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(overview or "").split("\n\n")[0])
    parser.add_argument("--module", action="append", help="mutate only this module (repeatable)")
    parser.add_argument("--tests", nargs="+", help="the tests for --module, in place of MODULES' (or for another)")
    parser.add_argument("--function", action="append", help="only mutants in this function (`plan`, `Cache.plan`)")
    parser.add_argument("--max-mutants", type=int, help="at most this many per module, spread over the module")
    parser.add_argument("--line", type=int, action="append", help="only mutants on this line (repeatable)")
    parser.add_argument("--workers", type=int, default=1, help="mutants judged at once (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0, help="least seconds a mutant's tests may take")
    parser.add_argument("--tree", type=Path, default=TOOL_TREE, help="the source tree to mutate (default: the tool's)")
    parser.add_argument("--slow", action="store_true", help="judge every mutant on the slow path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the mutants without running them")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _arguments()
    args = parser.parse_args(argv)
    tree: Path = args.tree.resolve()
    if args.tests and not args.module:
        parser.error("--tests needs --module")
    unknown = set(args.module or ()) - set(MODULES) if not args.tests else set()
    if unknown:
        parser.error(f"no tests are mapped to {', '.join(sorted(unknown))}: name them with --tests")
    chosen: list[Mutant] = []
    tests: dict[str, tuple[str, ...]] = {}
    for module in args.module or list(MODULES):
        found = mutants(module, (tree / module).read_text())
        if args.function:
            found = [m for m in found if in_functions(m, args.function)]
        if args.line:
            found = [m for m in found if m.line in args.line]
        if args.max_mutants is not None and len(found) > args.max_mutants:
            step = len(found) / args.max_mutants
            found = [found[int(i * step)] for i in range(args.max_mutants)]
        chosen.extend(found)
        if found:
            tests[module] = tests_of(tree, tuple(args.tests or MODULES[module]))
    if args.function and not chosen:
        parser.error(f"no mutant is in a function named {', '.join(args.function)}")
    if args.list:
        for mutant in chosen:
            print(f"{mutant.where}  {mutant.function or '-'}  {mutant.description}  ->  {mutant.replacement}")
        return 0

    started = time.monotonic()
    results = _judge(chosen, tree, tests, args)
    seconds = {path: sum(r.seconds for r in results if r.path == path) for path in ("fast", "slow")}
    paths = Counter(r.path or "not run" for r in results)
    reasons = Counter(r.reason for r in results if r.reason)
    print(f"\n{report(results)}\n\n{len(results)} mutants in {time.monotonic() - started:.0f} s")
    print(
        ", ".join(
            f"{count} {path}" + (f" ({seconds[path]:.0f} s)" if path in seconds else "")
            for path, count in paths.items()
        )
    )
    for reason, count in reasons.most_common():
        print(f"  slow, {reason}: {count}")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r.mutant), **asdict(r)} for r in results], indent=1, default=str))
    return 0


def _judge(
    chosen: list[Mutant], tree: Path, tests: dict[str, tuple[str, ...]], args: argparse.Namespace
) -> list[Result]:
    """Every chosen mutant's result: uncovered ones without a run, then the fast path's, then the slow one's."""
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        mutant = result.mutant
        where = f"{result.path or '-':4} {mutant.where} {mutant.description}"
        print(f"[{len(results)}/{len(chosen)}] {result.status:9} {where}", flush=True)

    with tempfile.TemporaryDirectory(prefix="llm-cache-mutation-") as trees:
        mapping = time.monotonic()
        maps = coverage_maps(tree, tests, Path(trees))
        print(f"coverage maps ready in {time.monotonic() - mapping:.0f} s", flush=True)
        covered: list[Mutant] = []
        for mutant in chosen:
            if maps[mutant.module].tests_for(mutant):
                covered.append(mutant)
            else:
                source = (tree / mutant.module).read_text()
                record(Result(mutant, "uncovered", 0.0, diff(source, apply(source, mutant))))
        slow: list[Mutant] = covered if args.slow else []
        reasons: dict[Mutant, str] = {}
        for module in {} if args.slow else dict.fromkeys(m.module for m in covered):
            ours = [m for m in covered if m.module == module]
            for judged in judge_fast(ours, tree, Path(trees), args.workers, args.timeout, maps[module]):
                if isinstance(judged, Deferred):
                    slow.append(judged.mutant)
                    reasons[judged.mutant] = judged.reason
                else:
                    record(judged)
        for result in judge_slowly(slow, tree, Path(trees), args.workers, args.timeout, maps) if slow else ():
            result.reason = reasons.get(result.mutant, "")
            record(result)
    return results
