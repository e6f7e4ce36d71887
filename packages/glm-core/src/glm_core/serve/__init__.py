"""``glm serve``: an OpenAI-compatible HTTP server over one ChatGLM model, with a chat page.

Needs the ``serve`` extra: ``pip install glm-core[serve]`` (FastAPI and uvicorn). :func:`create_app` builds
the application for a loaded model and tokenizer; :func:`serve` loads a model folder or name and runs it.
"""

from glm_core.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
