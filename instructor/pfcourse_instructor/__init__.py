"""The instructor's tool of pfcourse: Colab notebooks, assignments with hidden tests, an autograder.

A second distribution of the repository (``instructor/``, ``pip install -e instructor/``; ``python3
dev.py env`` installs it): the library students install, ``pfcourse``, ships the science only and
imports nothing of this. It needs a checkout of the repository: the sources of truth are the chapters
(``book/NN_name.md``) and the instructor assignments (``coursework/NN_name.md``); everything in
``notebooks/`` is generated from them and checked in CI to be in sync. Command line (from the
repository root; ``pfcourse-instructor`` is the same)::

    python -m pfcourse_instructor notebooks                 # write notebooks/ (chapters + student versions)
    python -m pfcourse_instructor check                     # notebooks/ in sync? (exit 1 if not)
    python -m pfcourse_instructor grade SUBMISSIONS/ --out scores.csv [--jobs 2] [--assignment PRIVATE/]
    python -m pfcourse_instructor execute notebooks/03_principal_flow.ipynb   # run one, top to bottom
    python -m pfcourse_instructor check-chapter book/03_principal_flow.md    # lint + execute a chapter

Modules, each importing only those before it: :mod:`.myst` (MyST -> Jupyter Markdown),
:mod:`.common` (repository layout, install cell, empty notebook), :mod:`.runner` (a kernel with time
limits and crash recovery), :mod:`.chapter_check` (lint and execute one chapter),
:mod:`.assignments` (instructor sources, student versions), :mod:`.notebooks` (chapter notebooks,
generation, sync check), :mod:`.wire` (probe values as JSON), :mod:`.student` (the student's process),
:mod:`.sandbox` (namespaces, limits, process cleanup), :mod:`.grading` (the autograder),
:mod:`.sphinx_ext` (the book's Colab buttons and hidden solutions).

Needs the book's environment (jupytext, nbformat, nbclient, Sphinx); nothing in the student
notebooks imports it.
"""
from .assignments import Assignment, AssignmentError, Question, load_assignment, stub_solution
from .chapter_check import check_chapter, lint_chapter
from .grading import QuestionResult, grade_folder, grade_notebook
from .notebooks import check_sync, chapter_notebook, generate
from .runner import KernelSession, Outcome, run_notebook

__all__ = [
    "Assignment", "AssignmentError", "Question", "load_assignment", "stub_solution",
    "QuestionResult", "grade_folder", "grade_notebook",
    "check_chapter", "lint_chapter", "check_sync", "chapter_notebook", "generate",
    "KernelSession", "Outcome", "run_notebook",
]
