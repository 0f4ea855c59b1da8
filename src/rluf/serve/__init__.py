"""`rluf serve`: an OpenAI-compatible chat service that stores every turn and reaction in the feedback store.

`create_app(db, arms, admin_token, config)` builds the FastAPI app; `rluf serve` runs it with uvicorn.
"""

from rluf.serve.arms import Arm, assign_arm, parse_arm, parse_arms
from rluf.serve.config import ServeConfig
from rluf.serve.store import create_user

__all__ = ["Arm", "ServeConfig", "assign_arm", "create_app", "create_user", "parse_arm", "parse_arms"]


def __getattr__(name: str):
    # FastAPI is imported only by those who build the app, not by `rluf users create`.
    if name == "create_app":
        from rluf.serve.app import create_app

        return create_app
    raise AttributeError(name)
