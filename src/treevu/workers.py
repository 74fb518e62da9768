"""``treevu serve --workers N`` runs uvicorn's process manager from here
(``python -m treevu.workers HOST PORT N``).

uvicorn starts each worker with ``multiprocessing``'s spawn, which begins by importing the
parent's main module: started from the ``treevu`` command that is the whole CLI (Typer, rich,
~30 MB a worker). This module is all a worker imports before ``treevu.asgi``. The settings come
from the environment, as for a single process (the CLI puts ``--role`` there).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import uvicorn

    from treevu.app import ws_options
    from treevu.config import Settings

    host, port, workers = argv
    uvicorn.run(
        "treevu.asgi:app",
        host=host,
        port=int(port),
        workers=int(workers),
        log_level="info",
        **ws_options(Settings()),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
