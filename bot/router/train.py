"""`python -m bot.router.train`: the local router trained in a process of its own, for `supportbot serve`.

The server writes (config, corrections) to its stdin, pickled, and reads the trained router from its stdout.
Training allocates many small temporary objects among the model's own, so the process that trains keeps
some 4 MB it no longer uses (freed, but on memory pages the model still holds): the server does not train.
"""

from __future__ import annotations

import pickle
import sys

from bot.router.local import LocalRouter


def main() -> None:
    config, corrections = pickle.load(sys.stdin.buffer)
    router = LocalRouter.from_config(config, corrections)
    sys.stdout.buffer.write(pickle.dumps(router, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main()
