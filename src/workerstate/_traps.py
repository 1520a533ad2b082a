"""The known pickling traps: what each kind of unpicklable part is, and what to do about it.

In: nothing. Out: :data:`TRAPS`, keyed by the identifiers :func:`workerstate._pickling.classify`
returns, and the advice for a part that is no known trap.
"""

from __future__ import annotations

__all__ = ["GENERIC_ADVICE", "TRAPS"]

#: The known traps: identifier -> (what the part is, what to do about it).
TRAPS: dict[str, tuple[str, str]] = {
    "local_class": (
        "an instance of a class defined inside a function",
        "Standard pickle finds a class by its import path, and a class made inside a function "
        "has none: the multiprocessing backend fails, and cloudpickle (loky, dask) sends a "
        "copy of the class by value, so isinstance checks against the real class fail in the "
        "worker. Define the class at module level in an importable module.",
    ),
    "main_module": (
        "a function or class that exists only in __main__ (the script being run)",
        "Worker processes do not run your script as __main__. cloudpickle (loky, dask) sends "
        "such functions and classes by value, with copies of the globals they use, so what a "
        "task or setter changes in those globals stays in its copy; standard pickle needs the "
        'script to be importable in the worker, with its work under `if __name__ == "__main__":`. '
        "Move them into a module and import that module in the script.",
    ),
    "lambda": (
        "a lambda or a function defined inside another function",
        "Standard pickle (the multiprocessing backend) can only send functions that can be "
        "imported by name; cloudpickle (loky, dask) sends this one by value, with copies of the "
        "variables and globals it uses. Define the function at module level, and bind its "
        "arguments with functools.partial instead of a closure.",
    ),
    "replaced_global": (
        "a function or class whose import path now points to another object",
        "Something replaced or monkey-patched this name in its module at run time (a decorator "
        "applied by assignment, a mock, a reload), so the object cannot be found under its "
        "name: standard pickle fails, and cloudpickle sends a by-value copy (a copied class "
        "breaks isinstance checks in the worker). Send the object the name points to now, "
        "keep the original under a name of its own, or apply the patch in the worker (for "
        "example in a registered setter).",
    ),
    "patched_wrapper": (
        "a wrapper installed over a module attribute at run time",
        "A wrapper made at run time (a decorator applied by assignment, a monkey-patch) took "
        "the name of the function it wraps. Pickle sends functions by name, so a worker "
        "imports the module and gets the original, unpatched function. Apply the decorator "
        "in the module's source, or apply the patch in the worker with a registered callback.",
    ),
    "lock": (
        "a lock or other synchronisation object",
        "Locks and other synchronisation objects belong to one process; create a new one in "
        "the setter (or in the task) instead of sending it.",
    ),
    "open_file": (
        "an open file",
        "Open files cannot cross process boundaries (cloudpickle sends a file opened for "
        "reading as an in-memory copy of its contents, and fails on any other); send the "
        "path and open it in the setter (or in the task).",
    ),
    "socket": (
        "a socket",
        "Sockets cannot cross process boundaries; send the address and connect in the setter "
        "(or in the task).",
    ),
    "db_connection": (
        "a database connection",
        "Database connections cannot cross process boundaries; send the connection "
        "parameters and connect in the setter (or in the task).",
    ),
    "generator": (
        "a generator",
        "Generators cannot be pickled; send a list, or the arguments to rebuild it.",
    ),
    "reduce_raises": (
        "an object whose __reduce__ (or __getstate__) raises",
        "Its class refuses to be pickled, on purpose or by a bug in its pickling methods: read "
        "the error above. Send what is needed to rebuild the object (its configuration) and "
        "rebuild it in the setter or the task, or fix its __reduce__/__getstate__.",
    ),
    "module": (
        "a module object",
        "Standard pickle cannot send modules (cloudpickle sends them by name); send the "
        "module's name and import it in the setter (or in the task).",
    ),
}

GENERIC_ADVICE = (
    "Make the callback return plain data (numbers, strings, dicts, importable objects) and "
    "rebuild anything else in the setter."
)
