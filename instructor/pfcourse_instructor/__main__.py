"""Command line of the instructor's tool: ``python -m pfcourse_instructor --help`` (or ``pfcourse-instructor``)."""
from __future__ import annotations

import argparse
import sys
import time

from .common import SOLUTION_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pfcourse_instructor",
        description="Colab notebooks, student assignments and the autograder of the pfcourse book.")
    parser.add_argument("--root", default=None, help="repository root (default: the current directory)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("notebooks", help="write notebooks/ from book/*.md and coursework/*.md")
    chk = sub.add_parser("check", help="exit 1 if notebooks/ is out of sync with its sources")
    for command in (gen, chk):
        command.add_argument("--solutions", choices=list(SOLUTION_MODES), default=None,
                             help="which exercise solutions the chapter notebooks show: " + "; ".join(
                                 f"{k}: {v}" for k, v in SOLUTION_MODES.items())
                             + " (default: PFCOURSE_SOLUTIONS, else ungraded)")
        command.add_argument("--hide-solutions", dest="solutions", action="store_const", const="none",
                             help="the same as --solutions none")

    grade = sub.add_parser("grade", help="grade a folder of submitted notebooks into one CSV")
    grade.add_argument("submissions", help="folder of .ipynb files (searched recursively, links not "
                                            "followed; each row names its path in it)")
    grade.add_argument("--out", default="scores.csv", help="CSV to write, in an existing folder (default: scores.csv)")
    grade.add_argument("--assignment", action="append", default=None,
                       help="an assignment source NN_name.md, or a folder of them (a private copy with your own "
                            "hidden tests); repeatable (default: coursework/); each notebook is matched by content")
    grade.add_argument("--cell-timeout", type=float, default=120, help="seconds per cell, probe and check")
    grade.add_argument("--timeout", type=float, default=1800, help="seconds per submission in all")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    grade.add_argument("--memory-gb", type=float, default=8,
                       help="address space of a student's process (RLIMIT_AS; 0: no limit, needed with CUDA)")
    grade.add_argument("--processes", type=int, default=512,
                       help="processes and threads a student's process may have (RLIMIT_NPROC)")

    run = sub.add_parser("execute", help="run notebooks top to bottom in fresh kernels (as CI does)")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--cell-timeout", type=float, default=900)

    chapter = sub.add_parser("check-chapter", help="lint MyST chapters' directives, then execute each top to "
                                                   "bottom in a fresh kernel (no book build)")
    chapter.add_argument("chapters", nargs="+", help="book/NN_name.md ...")
    chapter.add_argument("--cell-timeout", type=float, default=1800)
    chapter.add_argument("--lint-only", action="store_true", help="lint, do not execute")

    args = parser.parse_args(argv)
    if args.command == "notebooks":
        from .notebooks import generate

        written = generate(args.root, solutions=args.solutions)
        print("\n".join(f"wrote {p}" for p in written) or "notebooks/ is up to date")
        return 0
    if args.command == "check":
        from .notebooks import check_sync

        problems = check_sync(args.root, solutions=args.solutions)
        if problems:
            print("notebooks/ is out of sync with its sources; run `python -m pfcourse_instructor "
                  "notebooks` (or `python3 dev.py notebooks`):\n  " + "\n  ".join(problems))
            return 1
        print("notebooks/ is in sync with book/ and coursework/")
        return 0
    if args.command == "grade":
        from .grading import grade_folder, summary_table
        from .sandbox import Limits

        start = time.monotonic()
        limits = Limits(memory_gb=args.memory_gb, processes=args.processes,
                        cpu_seconds=int(max(60, args.timeout) * 4))
        try:
            rows = grade_folder(args.submissions, args.out, root=args.root, assignment=args.assignment,
                                cell_timeout=args.cell_timeout, timeout=args.timeout, jobs=args.jobs,
                                limits=limits)
        except (OSError, ValueError) as err:     # a missing folder, an --out that cannot be written, ...
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(summary_table(rows))
        print(f"wrote {args.out} ({len(rows)} rows) in {time.monotonic() - start:.0f} s")
        failed = sorted({r.submission for r in rows if r.status == "not-graded"})
        renamed = sorted({r.submission for r in rows if r.named_as})
        if failed:
            print(f"{len(failed)} submission(s) could not be graded (see the reasons above and in the CSV)")
        if renamed:
            print(f"{len(renamed)} submission(s) graded as another assignment than their file name names "
                  "(marked *; see above)")
        return 1 if failed or renamed else 0
    if args.command == "execute":
        from .notebooks import execute

        failed = 0
        for path in args.notebooks:
            start = time.monotonic()
            problems = execute(path, cell_timeout=args.cell_timeout)
            status = "ok" if not problems else f"{len(problems)} problem(s)"
            print(f"{path}: {status} ({time.monotonic() - start:.0f} s)")
            for problem in problems:
                print("  " + problem)
            failed += bool(problems)
        return 1 if failed else 0
    if args.command == "check-chapter":
        from .chapter_check import check_chapter

        failed = 0
        for path in args.chapters:
            start = time.monotonic()
            problems = check_chapter(path, timeout=args.cell_timeout, lint_only=args.lint_only)
            done = "linted" if args.lint_only else "executed"
            print("\n".join(problems) if problems else
                  f"{path}: {done} without errors ({time.monotonic() - start:.0f} s)", flush=True)
            failed += bool(problems)
        return 1 if failed else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
