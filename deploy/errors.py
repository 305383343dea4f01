"""One project error type, so callers can catch ours and users get one clear line naming the bad thing."""


class DeployError(Exception):
    """Base of every error `deploy` raises on purpose; its message names the bad file/parameter/topic."""


class ConfigError(DeployError):
    """A launch argument, parameter, YAML file or config value is invalid."""


class RobotConnectionError(DeployError):
    """The robot backend cannot reach its hardware (or the sim process)."""
