"""`python -m cdr_mediation.stack.regulator CONFIG`: the simulator process the stack component starts."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from cdr_mediation.stack.regulator.server import RegulatorServer


def main(argv: list[str]) -> int:
    # Plain lines into the daemon's log file: this process is a test double, not the system.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = json.loads(Path(argv[1]).read_text())
    asyncio.run(RegulatorServer(config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
