"""How long the autograder takes per submission: a class of correct submissions, graded as the README says.

Writes ``--submissions`` copies of an assignment's solved student notebook (``studentNN/NAME.ipynb``, as
an LMS delivers them) into a temporary folder, grades them with ``grade_folder(..., jobs=--jobs)``
(each in its own worker and bubblewrap sandbox; the grader first grades the reference solution once,
which fills the class's JAX compilation cache), and prints one table: wall seconds in all and per
submission, CPU seconds (every process of the grading: zygote, workers, sandboxes, students) of the
reference's warm-up and per submission after it, and two estimates for a class of 100: the wall time
scaled linearly (warm-up included in each share: an over-estimate), and the warm-up's plus 100
submissions' CPU time shared by ``--jobs`` idle cores (what a 2-core machine with nothing else running
would take; on a shared machine CPU seconds are inflated by contention too). Every submission must
score full marks, or the script exits 1.

    .venv/bin/python benchmarks/grading_benchmark.py                      # 10 of assignment 6, --jobs 2
    .venv/bin/python benchmarks/grading_benchmark.py --submissions 100    # the class of issue 25
    .venv/bin/python benchmarks/grading_benchmark.py --quick              # 2 of assignment 1 (a smoke test)
    .venv/bin/python benchmarks/grading_benchmark.py --split              # the student's CPU per step

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def solved_notebook(name: str) -> nbformat.NotebookNode:
    """The student notebook of assignment ``name`` with the instructor's answers filled in."""
    from pfcourse_instructor import myst
    from pfcourse_instructor.assignments import load_assignment

    assignment = load_assignment(ROOT / "coursework" / f"{name}.md", root=ROOT)
    return assignment.student_notebook(myst.build_index(ROOT), solutions=True)


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process of this one, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, submissions: int, jobs: int) -> dict:
    """Grade ``submissions`` solved copies of ``name``; the timings and the rows."""
    from pfcourse_instructor import grading

    notebook = solved_notebook(name)
    with tempfile.TemporaryDirectory(prefix="pfcourse-grading-benchmark-") as tmp:
        for number in range(submissions):
            folder = Path(tmp, "subs", f"student{number:02d}")
            folder.mkdir(parents=True)
            nbformat.write(notebook, folder / f"{name}.ipynb")
        cpu, start = children_cpu(), time.monotonic()
        rows = grading.grade_folder(Path(tmp, "subs"), Path(tmp, "scores.csv"), root=ROOT,
                                    assignment=ROOT / "coursework" / f"{name}.md", jobs=jobs)
        wall, cpu = time.monotonic() - start, children_cpu() - cpu
    return {"wall": wall, "cpu": cpu, "rows": rows, "warm_up": grading.WARM_UP_CPU.get(name, 0.0)}


CPU_NOW = "import resource as _r\n_u = _r.getrusage(_r.RUSAGE_SELF)\nprobe = _u.ru_utime + _u.ru_stime"


def student_cpu_split(name: str) -> list[tuple[str, float, float]]:
    """CPU seconds of the student's process per step of grading ``name``'s reference solution: (step,
    with an empty compilation cache that the run fills, then with that cache read-only)."""
    from pfcourse_instructor.assignments import load_assignment
    from pfcourse_instructor.sandbox import Sandbox

    assignment = load_assignment(ROOT / "coursework" / f"{name}.md", root=ROOT)
    columns = []
    with tempfile.TemporaryDirectory(prefix="pfcourse-jit-") as cache:
        Path(cache).chmod(0o777)                   # the sandbox's user id writes it
        for writable in (True, False):
            steps = []
            with Sandbox(cell_timeout=600, jit_cache=(cache, writable)) as box:
                steps.append(("Python and IPython start", box.probe(CPU_NOW)[1]))
                for source in assignment.setup:
                    box.run(source)
                steps.append(("setup cells (imports)", box.probe(CPU_NOW)[1]))
                for q in assignment.questions:
                    box.run("\n".join(q.answers))
                    for test in q.hidden_tests:
                        box.probe(test.probe)
                    steps.append((f"answer and probes of {q.label}", box.probe(CPU_NOW)[1]))
            totals = [float(json.loads(text)) for _, text in steps]
            columns.append([b - a for a, b in zip([0.0] + totals, totals)])
    return [(step, cold, warm) for (step, _), cold, warm in zip(steps, *columns)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignment", default="06_edge_of_stability",
                        help="coursework/NAME.md (default: 6, the heaviest)")
    parser.add_argument("--submissions", type=int, default=10, help="copies of the solved notebook (default 10)")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded in parallel (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 submissions of assignment 1: a smoke test")
    parser.add_argument("--split", action="store_true",
                        help="instead: the student's CPU seconds per step, without and with the warm cache")
    args = parser.parse_args(argv)
    if args.split:
        print("| step | CPU s, empty cache | CPU s, reference's cache (read-only) |\n| --- | --- | --- |")
        for step, cold, warm in student_cpu_split(args.assignment):
            print(f"| {step} | {cold:.2f} | {warm:.2f} |")
        return 0
    if args.quick:
        args.assignment, args.submissions = "01_gradient_descent", 2
    if args.submissions < 1 or args.jobs < 1:
        parser.error("--submissions and --jobs must be at least 1")
    run = measure(args.assignment, args.submissions, args.jobs)
    n, wall, cpu, warm = args.submissions, run["wall"], run["cpu"], run["warm_up"]
    each = (cpu - warm) / n            # CPU per submission once the class's cache is warm
    print(f"| assignment | submissions | --jobs | wall s | wall s / submission | CPU s: reference (warm-up) "
          f"| CPU s / submission after it | 100 submissions, wall scaled | 100 submissions, CPU / {args.jobs} cores |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.assignment} | {n} | {args.jobs} | {wall:.0f} | {wall / n:.1f} | {warm:.1f} | {each:.1f} "
          f"| {wall / n * 100 / 60:.1f} min | {(warm + 100 * each) / args.jobs / 60:.1f} min |")
    wrong = [r for r in run["rows"] if r.score != r.max_score]
    for row in wrong:
        print(f"not full marks: {row.submission} {row.question}: {row.status} {row.reason[:200]}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
