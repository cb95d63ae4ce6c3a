#!/usr/bin/env python3
"""Benchmark: how long the symbolic backward error analysis takes, order by order.

Times :func:`pfcourse.symbolic.modified_field_terms` for orders 1 to ``--max-order`` from cold
caches (the jet rings, the recursion and the SymPy jets are memoised; all three are cleared before
every order, so each time includes the work for all lower orders), and
:func:`pfcourse.symbolic.principal_coefficients` at the highest order. Chapter 2 uses order 5;
the target is a couple of seconds for order 5 and seconds, not minutes, for order 7. Wall-clock
numbers depend on the machine and its load: this replaces the unit test that asserted them.

    .venv/bin/python benchmarks/symbolic_benchmark.py                # orders 1..7
    .venv/bin/python benchmarks/symbolic_benchmark.py --max-order 5
"""
from __future__ import annotations

import argparse
import time

from pfcourse import symbolic as S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-order", type=int, default=7, help="highest BEA order timed (default 7)")
    args = parser.parse_args()

    print(f"{'order':>5} {'terms':>5} {'seconds (cold cache)':>21}")
    for order in range(1, args.max_order + 1):
        for cached in (S._jet_ring, S._modified_field_polys, S._jet_exprs):
            cached.cache_clear()
        start = time.perf_counter()
        terms = S.modified_field_terms(order)
        elapsed = time.perf_counter() - start
        print(f"{order:>5} {len(terms):>5} {elapsed:>21.3f}")
    start = time.perf_counter()
    coeffs = S.principal_coefficients(args.max_order)
    elapsed = time.perf_counter() - start
    print(f"principal_coefficients({args.max_order}) = {coeffs} in {elapsed:.3f} s (warm cache)")


if __name__ == "__main__":
    main()
