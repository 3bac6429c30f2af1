"""The base class of the errors a user causes (a config, a flag, a file, a machine that cannot run
the request): the command lines (``python -m train.classify``, ``sj_ei.energy``, ``sj_ei.analyze``)
print such an error's message as one line ``error: ...`` and exit with status 2; any other
exception is a bug and keeps its traceback.  Imports nothing, so that every module can use it."""


class UserError(Exception):
    """A mistake of the user's, or a limit of the machine; its message says what was wrong and what to do."""
