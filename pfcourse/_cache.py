"""JAX's persistent compilation cache for pfcourse: one folder, one call, safe to repeat.

XLA compiles every new program shape once per process; a chapter, a CLI run or a test session pays
that again at every start (6 of the 12 s of ``python -m pfcourse eos --dataset digits --steps
100``). JAX can keep compiled programs on disk and load them in later processes. Its cache key
hashes the program (the lowered HLO), the compile options, the backend and device kind, the
jax/jaxlib versions and the ``XLA_FLAGS``, so a program compiled for another machine, backend,
version or set of flags is never loaded: a stale entry is a miss, not a wrong answer. JAX treats
the cache as trusted code (whoever can write to it can make a process run what they put there), so
the folder is created private to the user (mode 0700) and should not be shared.

**A copied or restored cache hits.** By default JAX also points XLA's GPU autotuning cache at
``<folder>/xla_gpu_per_fusion_autotune_cache_dir`` (option ``jax_persistent_cache_enable_xla_caches``),
and that path is part of the hashed compile options: a cache copied to another folder (restored by
CI, moved to another checkout) then never hits, on any backend. Both ways of turning the cache on
here set the option to ``"none"`` (:data:`XLA_CACHES`; the environment variable
``JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES=none`` for child processes, read by jax >= 0.5.0 like the
other ``JAX_*`` options), so the key no longer depends on where the folder lies
(``tests/test_benchmarks.py`` copies a filled cache and counts zero compilations). What this gives
up: on a GPU, a program that misses the cache is autotuned afresh instead of reading per-fusion
results a previous compilation left; a hit needs no autotuning at all.

The folder is ``$PFCOURSE_JAX_CACHE`` if set, else ``<pfcourse cache>/jax``, where the pfcourse cache
is ``$PFCOURSE_CACHE``, ``$XDG_CACHE_HOME/pfcourse`` or ``~/.cache/pfcourse`` (the folder
:func:`pfcourse.data.cache_dir` also uses for CIFAR-10). Delete it at any time to free space.

Presentation layer helper: the command line calls :func:`enable_compilation_cache`; the book and
the tests may call it too. Library functions never change JAX's configuration themselves.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["XLA_CACHES", "compilation_cache", "compilation_cache_dir", "enable_compilation_cache"]

# The value of ``jax_persistent_cache_enable_xla_caches`` (env: JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES):
# no XLA-side caches, whose folder path would enter the cache key (module docstring).
XLA_CACHES = "none"


def compilation_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of the persistent compilation cache (not created here): ``path`` if given, else
    ``$PFCOURSE_JAX_CACHE``, else ``jax/`` in the pfcourse cache (``$PFCOURSE_CACHE``,
    ``$XDG_CACHE_HOME/pfcourse`` or ``~/.cache/pfcourse``)."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get("PFCOURSE_JAX_CACHE"):
        return Path(os.environ["PFCOURSE_JAX_CACHE"]).expanduser()
    if os.environ.get("PFCOURSE_CACHE"):
        return Path(os.environ["PFCOURSE_CACHE"]).expanduser() / "jax"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pfcourse" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_time_s: float = 0.0) -> Path | None:
    """Turn on JAX's persistent compilation cache in :func:`compilation_cache_dir` (``path``).

    Every program that took at least ``min_compile_time_s`` to compile is written there and loaded,
    instead of compiled, by later processes with the same program, backend, versions and flags.
    Idempotent; programs compiled before the call are not written (JAX decides at its first
    compilation whether a cache is used, so a new folder resets that decision). Returns the folder, or ``None`` (with a warning) if it cannot be created or written, in which
    case nothing changes: a cache is an optimisation, never a reason to fail.
    """
    import warnings

    import jax

    from jax.experimental.compilation_cache import compilation_cache as cc

    folder = compilation_cache_dir(path)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        warnings.warn(f"pfcourse: JAX compilation cache disabled, {folder} is not a writable folder ({err}).",
                      stacklevel=2)
        return None
    if jax.config.jax_compilation_cache_dir != str(folder):
        cc.set_cache_dir(str(folder))
        cc.reset_cache()  # takes effect even if this process has compiled before
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_persistent_cache_enable_xla_caches", XLA_CACHES)  # a copied cache hits
    return folder


@contextlib.contextmanager
def compilation_cache(path: str | os.PathLike | None = None, enabled: bool = True):
    """``with compilation_cache(path): ...`` runs the block with :func:`enable_compilation_cache`
    and puts JAX's previous cache settings back afterwards (for callers inside a larger program,
    such as the command line's ``main`` called from Python or a test). Yields the folder or ``None``."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes", "jax_persistent_cache_enable_xla_caches")
    saved = {name: getattr(jax.config, name) for name in names}
    folder = enable_compilation_cache(path) if enabled else None
    try:
        yield folder
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        if folder is not None and saved["jax_compilation_cache_dir"] != str(folder):
            cc.reset_cache()
