"""Entry point: `run_agent(config)` blocks until SIGTERM/SIGINT and returns the exit code.

Exit codes: 0 stopped by a signal; 1 the server turned the node away (join token or node
token rejected); 2 a bad setting.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading

from corral.agent.config import AgentConfig, AgentConfigError, check_config
from corral.agent.daemon import Agent

log = logging.getLogger("corral.agent")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_agent(config: AgentConfig) -> int:
    _setup_logging()
    try:
        check_config(config)
    except AgentConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(_main(config))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


async def _main(config: AgentConfig) -> int:
    agent = Agent(config)
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _on_signal, agent, signum)
    log.info("corral agent starting: server %s, state %s", config.server, config.state_dir)
    return await agent.run()


def _on_signal(agent: Agent, signum: int) -> None:
    log.info("%s: shutting down", signal.Signals(signum).name)
    agent.stop()


def _setup_logging() -> None:
    # The CLI may have configured logging already; only fill the gap for a bare daemon.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    # httpx logs every request at INFO; the agent says what matters about registering itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
