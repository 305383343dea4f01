"""Start-up retries for devices that come up in any order (robots, cameras, the sim), ROS-free: the node's
logger or a child process's stderr says what it waits for."""
from __future__ import annotations

import time
from typing import Callable

from deploy.errors import RobotConnectionError
from deploy.sensing.cameras import CameraError

RETRY_PERIOD_S = 0.2


def connect_with_retry(connect: Callable[[], None], what: str, timeout_s: float, say: Callable[[str], None]) -> None:
    """Keep calling `connect` for `timeout_s`, saying once what it waits for, then fail with the device's own
    clear error. Only transient errors (RobotConnectionError, CameraError) are retried; a PermanentRobotError
    (no real-time kernel, wrong robot version, FCI off) fails at once."""
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            connect()
            if said:
                say(f"connected to {what}")
            return
        except (RobotConnectionError, CameraError) as error:
            if time.monotonic() > deadline:
                raise
            if not said:
                say(f"waiting for {what}: {error}")
                said = True
            time.sleep(RETRY_PERIOD_S)
