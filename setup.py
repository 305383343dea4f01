"""ament_python package `deploy`: ROS 2 deployment of learned manipulation policies."""
from glob import glob

from setuptools import setup

PACKAGE = "deploy"

# Pinned runtime dependencies of the ROS-free core. The ROS 2 wheels are an extra so that on a ROS 2
# distro the distro's rclpy and message packages are used instead of being shadowed by pip copies.
CORE_REQUIRES = [
    "numpy==2.4.6",
    "scipy==1.17.1",
    "mujoco==4.0.0",
    "numba==0.68.1",  # the 1 kHz tick's kernels (impedance law, safety filter, plan sampling), GIL released
    "pyyaml==6.0.3",
    "safetensors==0.8.0",
    "torch==2.13.0",
    "opencv-python-headless==5.0.0.93",
    "rosbags==0.11.9",
    "pyrealsense2==2.59.1.11053",
    "imageio==2.38.1",
    "imageio-ffmpeg==0.8.1",
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
    "pyarrow==26.0.1",  # parquet for the LeRobotDataset export
]
ROS_WHEELS = [
    "ros-rclpy==9.1.2",
    "ros-rmw-fastrtps-cpp==9.3.3",
    "ros-std-msgs==5.5.1",
    "ros-sensor-msgs==5.5.1",
    "ros-geometry-msgs==5.5.1",
    "ros-trajectory-msgs==5.5.1",
    "ros-std-srvs==5.5.1",
    "ros-diagnostic-msgs==5.5.1",
    "ros-lifecycle-msgs==2.3.0",
    "ros-rosgraph-msgs==2.3.0",
    "ros-builtin-interfaces==2.3.0",
    "ros-rcl-interfaces==2.3.0",
]
# mcap + mcap-ros2-support: the MCAP reader Foxglove is built on, to check our bags without rosbags.
# colcon (core, ros, python-setup-py) builds the package as a distro user does (test/test_ros_package.py);
# colcon-core needs setuptools < 80 and torch >= 77.0.3, hence its pin; the pytest plugins are colcon-core's own
# requirements, pinned here (inactive unless their options are given).
TEST_REQUIRES = ["pytest==9.2.0", "pytest-timeout==2.4.0", "mcap==1.6.0", "mcap-ros2-support==0.6.0",
                 "colcon-core==0.21.3", "colcon-ros==0.5.0", "colcon-python-setup-py==0.2.9", "catkin-pkg==1.1.1",
                 "setuptools==79.0.1", "pytest-cov==7.1.0", "pytest-repeat==0.9.4", "pytest-rerunfailures==16.7"]

# Every node executable any graph starts (deploy/graph/description.py); test/test_ros_package.py checks.
NODES = ["sim", "controller", "camera", "proprioception", "policy", "intervention", "frame_recorder", "recorder",
         "replay", "operator", "episode", "learner"]
OPERATORS = ["keyboard", "gamepad", "spacemouse"]  # `ros2 run deploy keyboard_operator` in the operator's terminal

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[
        "deploy",
        "deploy.robots",
        "deploy.control",
        "deploy.sensing",
        "deploy.sim",
        "deploy.data",
        "deploy.teleop",
        "deploy.learning",
        "deploy.graph",
        "deploy.bags",
        "deploy.nodes",
        "deploy.policies",
    ],
    package_dir={"deploy.nodes": "nodes", "deploy.policies": "policies"},
    package_data={"deploy.sim": ["assets/*.xml"], "deploy.graph": ["*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        *[("share/" + PACKAGE + "/" + d, glob(d + "/*")) for d in sorted(glob("checkpoints/*"))],
    ],
    install_requires=CORE_REQUIRES,
    extras_require={"ros": ROS_WHEELS, "test": TEST_REQUIRES,
                    "franka": ["pylibfranka==0.21.3", "franky-sim==1.0.4", "pin==4.1.0"], "ur": ["ur-rtde==1.6.5"],
                    # operator devices: SpaceMouse (HID via easyhid -> libhidapi-hidraw0), gamepad (evdev)
                    "teleop": ["pyspacemouse==2.1.0", "easyhid==0.0.10", "evdev==2.0.0"]},
    zip_safe=True,
    maintainer="deploy developers",
    maintainer_email="deploy@example.com",
    description="Deploy learned manipulation policies on ROS 2 robot arms and improve them from corrections.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name}_node = deploy.nodes.{name}_node:main" for name in NODES]
        + [f"{name}_operator = deploy.nodes.operator_node:{name}_main" for name in OPERATORS]
        + ["deploy = deploy.cli:main"],
    },
)
