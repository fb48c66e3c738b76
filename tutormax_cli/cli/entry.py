"""The `tutormax` console script: the CLI with the garbage collector paused while it imports.

Importing Typer, pydantic (Typer's), rich, SQLAlchemy and polars allocates hundreds of
thousands of objects, and the collector would walk them again and again: pausing it saves about
0.1 s per invocation, a tenth of a 5,000-tutor snapshot. Commands that go on to do real work
call `context.imports_done()` once their imports are done, which turns it back on; short ones
end first. Library users and the tests never come through here, so their collector is as
Python sets it.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Console-script entry point."""
    gc.disable()
    from tutormax_cli.cli.app import main as run

    run()
