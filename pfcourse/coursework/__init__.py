"""Coursework and Colab: chapter notebooks, assignments with hidden tests, and an autograder.

Sources of truth are the chapters (``book/NN_name.md``) and the instructor assignments
(``coursework/NN_name.md``); everything in ``notebooks/`` is generated from them and checked in CI
to be in sync. Command line (from the repository root)::

    python -m pfcourse.coursework notebooks                 # write notebooks/ (chapters + student versions)
    python -m pfcourse.coursework check                     # notebooks/ in sync? (exit 1 if not)
    python -m pfcourse.coursework grade SUBMISSIONS/ --out scores.csv [--jobs 2] [--cell-timeout 120]
    python -m pfcourse.coursework execute notebooks/03_principal_flow.ipynb   # run one, top to bottom

Modules: :mod:`~pfcourse.coursework.myst` (MyST -> Jupyter Markdown),
:mod:`~pfcourse.coursework.notebooks` (chapter notebooks, generation, sync check),
:mod:`~pfcourse.coursework.assignments` (instructor sources, student versions),
:mod:`~pfcourse.coursework.runner` (a kernel with time limits and crash recovery),
:mod:`~pfcourse.coursework.grading` (the autograder), :mod:`~pfcourse.coursework.sphinx_ext` (the
book's Colab buttons and hidden solutions).

Tooling: needs the book's environment (jupytext, nbformat, nbclient), not JAX; nothing in the
student notebooks imports it.
"""
from .assignments import Assignment, AssignmentError, Question, load_assignment, stub_solution
from .grading import QuestionResult, grade_folder, grade_notebook
from .notebooks import check_sync, chapter_notebook, generate
from .runner import KernelSession, Outcome, run_notebook

__all__ = [
    "Assignment", "AssignmentError", "Question", "load_assignment", "stub_solution",
    "QuestionResult", "grade_folder", "grade_notebook",
    "check_sync", "chapter_notebook", "generate",
    "KernelSession", "Outcome", "run_notebook",
]
