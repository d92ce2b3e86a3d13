"""An in-memory sandbox of the OrderMesh API, for local development and tests.

``create_app()`` returns a Starlette app with every operation the handlers call under
``/v1``, and control endpoints under ``/_sandbox`` that load order snapshots, list the
effects made through the API and inject faults. ``run()`` serves it with uvicorn, and
``ordermesh.sandbox.testing.running_sandbox()`` serves it in a test.
"""

from .app import create_app, run
from .state import OPERATIONS, SandboxState

__all__ = ["OPERATIONS", "SandboxState", "create_app", "run"]
