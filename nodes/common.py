"""What every node shell shares: parameters declared from a config dataclass, and the `main()` runner."""
from __future__ import annotations

import dataclasses
import faulthandler
import os
import signal
import sys
import threading
import typing
from typing import Callable, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data

from deploy.errors import ConfigError, DeployError
from deploy.retry import connect_with_retry as retry_connect

ConfigT = TypeVar("ConfigT")
STOP_WATCHDOG_S = 30.0  # a stop request not finished by then is a hang: stacks printed, exit 1

SENSOR_QOS = qos_profile_sensor_data  # REP-2003: best effort, shallow, for camera/state streams
COMMAND_QOS = QoSProfile(depth=10)  # reliable: chunks and commands must not be dropped silently
LATCHED_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)  # late joiners get the last value


def declare_config(node: Node, config_cls: type[ConfigT], prefix: str = "") -> ConfigT:
    """Declare one ROS parameter per dataclass field (defaults from the dataclass) and build the config.

    The dataclass validates itself in `__post_init__`, so a bad value fails with a message naming it.
    """
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if isinstance(default, tuple):
            default = list(default)
        value = node.declare_parameter(prefix + field.name, default).value
        if isinstance(value, list) and "tuple" in str(hints[field.name]):
            value = tuple(value)
        values[field.name] = value
    return config_cls(**values)


def declare_prefixed(node: Node, prefix: str) -> dict:
    """Declare whatever parameters under `prefix` the params file gives (backend-specific options, e.g.
    `robot_params.ip`) and return them without the prefix; the backend validates the names."""
    names = [name for name in node._parameter_overrides if name.startswith(prefix)]
    return {name[len(prefix):]: node.declare_parameter(name, node._parameter_overrides[name].value).value
            for name in names}


def connect_with_retry(node: Node, connect: Callable[[], None], what: str, timeout_s: float = 60.0,
                       spin: bool = False) -> None:
    """Graph nodes start in any order: deploy.retry.connect_with_retry, said on the node's log.
    `spin`: run the node's callbacks meanwhile (a backend fed by a subscription needs its first state)."""
    if spin:
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        connected = threading.Event()

        def spin_until_connected():
            while not connected.is_set():
                executor.spin_once(timeout_sec=0.05)

        spinner = threading.Thread(target=spin_until_connected, name="connect_spinner", daemon=True)
        spinner.start()
        try:
            return connect_with_retry(node, connect, what, timeout_s)
        finally:
            connected.set()
            spinner.join()
            executor.remove_node(node)
            executor.shutdown()
    retry_connect(connect, what, timeout_s, node.get_logger().info)


def reject_unknown_parameters(node: Node) -> None:
    """A misspelt key in a params file would be ignored silently by rclpy; name it and refuse to start."""
    unknown = sorted(set(node._parameter_overrides) - set(node._parameters))
    if unknown:
        raise ConfigError(f"node '{node.get_name()}' has no parameter(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(node._parameters))})")


class BackgroundSpin:
    """Spin a node of a private context on a thread, for code that drives the graph from its main thread (the
    episode runner, the test probe). close() stops the spinner before the node goes: rclpy livelocked, holding
    the GIL, when a node's handles were destroyed while the spinning thread's wait set still held them."""

    def __init__(self, node: Node, context: rclpy.Context):
        self.node, self.context = node, context
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(node)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=f"spin {node.get_name()}", daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._closing.is_set() and self.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def close(self):
        self._closing.set()
        self._thread.join(timeout=10.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class _StopSignals:
    """SIGINT/SIGTERM as one stop request, however many arrive: `ros2 launch` signals every node at once and a
    terminal's Ctrl-C reaches the whole group too, so a node commonly gets two SIGINTs (or SIGTERM, then SIGINT).
    Only the first, and only while the node is still being built (maybe blocked connecting or loading a model),
    unwinds with KeyboardInterrupt; once spinning the loop just sees the request within its 0.1 s wake-up, and a
    later signal can no longer interrupt close() (it used to: a KeyboardInterrupt traceback and exit -2)."""

    def __init__(self):
        self.requested = threading.Event()
        self.interrupt = True

    def __call__(self, signum, frame):
        first = not self.requested.is_set()
        self.requested.set()
        if first:
            # A stop that hangs (a thread or a C++ teardown that never returns) must not leave a live process
            # until SIGKILL: print every thread's stack, which names where it hung, and exit 1.
            faulthandler.dump_traceback_later(STOP_WATCHDOG_S, exit=True)
            if self.interrupt:
                raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], executor_cls=None, skip_teardown: bool = False) -> None:
    """init -> build -> spin -> shutdown; a DeployError becomes one clear line and exit code 2; SIGINT/SIGTERM
    (once or repeated) a clean stop with exit code 0.

    `skip_teardown`: after a clean stop (node closed, context shut down) exit at once. For torch nodes: the
    interpreter's own teardown then took ~5 s here (measured: close() done in 0.05 s, exit 5 s later), past
    the graph's stop grace."""
    # Our own signal handling: the node stops its threads (close()) before the context goes down; rclpy's
    # handler would invalidate publishers under them.
    rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = _StopSignals()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a & job)
    node = None
    try:
        node = make_node()
        reject_unknown_parameters(node)
        # SingleThreaded, not the experimental EventsExecutor: that one ignores SIGINT here and then spins
        # a core at 100 % (rclpy 9.1.2). The 1 kHz loop runs in its own thread, not on the executor.
        executor = (executor_cls or SingleThreadedExecutor)()
        executor.add_node(node)
        stop.interrupt = False
        while node.context.ok() and not stop.requested.is_set():  # wake every 0.1 s to see a stop request
            executor.spin_once(timeout_sec=0.1)
    except DeployError as error:
        print(f"{sys.argv[0]}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # the stop signal landed inside a pybind11 call (rclpy's take_message turns the
        if not stop.requested.is_set():  # KeyboardInterrupt into "Unable to convert call argument"): a stop
            raise
    finally:
        stop.interrupt = False
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
        # Stopped: later signals change nothing. Ignored, not left to our handler: the interpreter's teardown
        # resets Python-handled signals to the default, and a SIGINT then killed the node (exit -2).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if skip_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
