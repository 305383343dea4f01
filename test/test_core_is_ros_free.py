"""The core (deploy/, policies/) must import no rclpy and no ROS message package (STYLE.md, rule 1)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = ("rclpy", "launch", "launch_ros", "builtin_interfaces", "rosgraph_msgs")
# The launch-file translation is the one core module allowed to touch `launch` (lazily, on a distro only).
ALLOWED = {"deploy/graph/ros_launch.py": {"launch", "launch_ros"}}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def is_ros(module: str) -> bool:
    return module in ROS_MODULES or module.endswith(("_msgs", "_srvs", "_interfaces"))


def test_core_modules_import_nothing_from_ros():
    files = sorted((ROOT / "deploy").rglob("*.py")) + sorted((ROOT / "policies").rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        bad = {m for m in imported_roots(path) if is_ros(m)} - ALLOWED.get(rel, set())
        if bad:
            offenders[rel] = sorted(bad)
    assert offenders == {}
