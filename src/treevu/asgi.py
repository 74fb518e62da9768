"""Entry point for ``uvicorn --workers N``: each worker process builds its own app."""

from treevu.app import create_app, tune_collector
from treevu.config import Settings

app = create_app(Settings())
tune_collector()
