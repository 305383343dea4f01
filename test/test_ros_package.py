"""The repo root is a ROS 2 ament_python package: a valid manifest, and a colcon build that installs what
`ros2 launch deploy <file>.launch.py` needs. Built here with colcon from PyPI (no distro), as a user's
`colcon build --packages-select deploy` would; nothing is sourced, the install tree is read as files."""
import json
import os
import subprocess
import sys
from importlib.metadata import distribution, distributions
from pathlib import Path

from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "deploy"
COLCON = Path(sys.executable).with_name("colcon")


def graph_executables() -> dict[str, str]:
    """executable -> module of every node of every graph the package registers (a fresh interpreter, so
    graphs that tests register in this process are not counted)."""
    code = ("import json; from deploy.graph.description import GRAPHS; "
            "print(json.dumps({n.executable: n.module for g in GRAPHS.values() for n in g.nodes}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    executables = json.loads(out)
    assert {"sim_node", "episode_node", "learner_node", "replay_node"} <= set(executables)
    return executables


def test_manifest_is_a_valid_format_3_package_without_warnings():
    warnings: list[str] = []
    package = parse_package(str(ROOT / "package.xml"), warnings=warnings)  # parsing also validates
    package.validate(warnings=warnings)
    assert warnings == []
    assert package.name == PACKAGE and package.package_format == 3
    assert [e.content for e in package.exports if e.tagname == "build_type"] == ["ament_python"]
    assert all("@" in m.email and "." in m.email.split("@")[1] for m in package.maintainers)


def test_every_graph_executable_is_a_console_script_of_the_package():
    scripts = {ep.name: ep.value for ep in distribution(PACKAGE).entry_points if ep.group == "console_scripts"}
    missing = {exe: f"{module}:main" for exe, module in graph_executables().items()
               if scripts.get(exe) != f"{module}:main"}
    assert missing == {}, "add these to setup.py's NODES (console_scripts)"


def test_colcon_build_installs_an_ament_package_with_every_graph_executable(tmp_path):
    cmd = [str(COLCON), "--log-base", "log", "build", "--base-paths", str(ROOT), "--packages-select", PACKAGE,
           "--build-base", "build", "--install-base", "install", "--event-handlers", "console_direct-"]
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # colcon-ros warns (and falls back to a plain Python build: no hooks) when it cannot parse the manifest
    assert [line for line in done.stderr.splitlines() if "WARNING" in line] == []
    prefix = tmp_path / "install" / PACKAGE
    share = prefix / "share" / PACKAGE

    assert (prefix / "share/ament_index/resource_index/packages" / PACKAGE).is_file()  # what `ros2 pkg` finds
    # `source install/setup.bash` runs package.dsv's hooks; this one puts the prefix on AMENT_PREFIX_PATH
    assert "source;share/deploy/hook/ament_prefix_path.dsv" in (share / "package.dsv").read_text().splitlines()
    assert (share / "hook/ament_prefix_path.dsv").read_text().strip() == "prepend-non-duplicate;AMENT_PREFIX_PATH;"
    assert (share / "hook/ament_prefix_path.sh").is_file()
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()
    launch_files = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert launch_files and sorted(p.name for p in (share / "launch").iterdir()) == launch_files
    assert (share / "config/fastdds_localhost.xml").is_file()
    for checkpoint in ("push_demo", "push_weak"):
        assert (share / "checkpoints" / checkpoint / "model.safetensors").is_file()

    # every graph's executable in lib/deploy (where `ros2 launch`/`ros2 run` look), loading the installed module
    site = next((prefix / "lib").glob("python3*/site-packages"))
    installed = next(d for d in distributions(path=[str(site)]) if d.metadata["Name"] == PACKAGE)
    entry_points = {ep.name: ep.value for ep in installed.entry_points if ep.group == "console_scripts"}
    for exe, module in graph_executables().items():
        script = prefix / "lib" / PACKAGE / exe
        assert script.is_file() and os.access(script, os.X_OK), f"lib/deploy/{exe} not installed"
        assert f"'console_scripts', '{exe}'" in script.read_text()
        assert entry_points[exe] == f"{module}:main"
        assert (site / (module.replace(".", "/") + ".py")).is_file(), module
