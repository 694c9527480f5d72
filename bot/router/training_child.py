"""Training the local tiers in a child process: `python -m bot.router.training_child` reads the arguments of
`LocalClassifier.train` pickled on stdin and writes the trained classifier pickled to stdout.

Training allocates and frees tens of megabytes of small temporaries; in a long-running server the allocator
would keep most of those pages resident for good. A child process takes them away with it. The pipe is
between this package and itself: nothing else is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.router.local import LocalClassifier

# Generous: training takes seconds; a child stuck this long is killed and the parent trains itself.
CHILD_TIMEOUT_S = 600.0


class ChildTrainingFailed(RuntimeError):
    """The child process could not train (no interpreter to start, killed, or it failed)."""


def train_in_child(arguments: tuple[Any, ...]) -> LocalClassifier:
    """`LocalClassifier._train(*arguments)` run in a fresh interpreter; raises ChildTrainingFailed."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, "-m", "bot.router.training_child"], input=pickle.dumps(arguments),
                              capture_output=True, env=env, timeout=CHILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ChildTrainingFailed(str(exc)) from exc
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ChildTrainingFailed(f"exit {done.returncode}: {tail[0][:300]}")
    classifier = pickle.loads(done.stdout)  # noqa: S301 - our own child's answer on our own pipe
    return classifier  # type: ignore[no-any-return]


def main() -> None:
    from bot.router.local import LocalClassifier

    arguments = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by train_in_child
    sys.stdout.buffer.write(pickle.dumps(LocalClassifier._train(*arguments), protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main()
