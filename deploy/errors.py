"""One project error type, so callers can catch ours and users get one clear line naming the bad thing."""


class DeployError(Exception):
    """Base of every error `deploy` raises on purpose; its message names the bad file/parameter/topic."""


class ConfigError(DeployError):
    """A launch argument, parameter, YAML file or config value is invalid."""


class RobotConnectionError(DeployError):
    """The robot backend cannot reach its hardware (or the sim process)."""


class PermanentRobotError(DeployError):
    """The robot answered, and retrying cannot help (no real-time kernel, wrong model or version, FCI off):
    fail once, naming the fix. Not a RobotConnectionError, so start-up does not retry it."""


class RobotLostError(DeployError):
    """The robot stopped answering while the loop ran (reflex, link or process gone): the controller gives up."""
