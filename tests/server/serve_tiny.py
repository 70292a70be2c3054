"""Entry point for transport tests: the real server CLI, serving a tiny run built in code.

Usage: python -m tests.server.serve_tiny [lm|toy] <spd-mcp-server args...>
With SPD_TEST_SLEEP_TOOL=1 the test-only long tool ``sleep_job`` is added.
"""

import os
import sys

from spd_mcp.server.__main__ import parse_args, serve, setup_logging

if __name__ == "__main__":
    kind, argv = sys.argv[1], sys.argv[2:]
    config = parse_args(["--run", kind, *argv])
    setup_logging(config)
    from tests.server.helpers import SLEEP_TOOL
    from tests.server.runs import lm_run, toy_run

    extra = [SLEEP_TOOL] if os.environ.get("SPD_TEST_SLEEP_TOOL") == "1" else []
    serve(config, lm_run() if kind == "lm" else toy_run(), extra)
