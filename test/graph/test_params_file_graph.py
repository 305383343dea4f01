"""`deploy launch sim params_file:=mine.yaml`: the running nodes hold the user file's values over the shipped
config files (read back through each node's own parameter service), and the shipped values it leaves alone."""
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from harness import wait_until

USER_FILE = """\
controller:
  ros__parameters:
    impedance:
      damping_ratio: 0.8
    safety.max_tcp_speed_m_per_s: 0.3
proprioception:
  ros__parameters:
    rate_hz: 50.0
"""


def get_parameters(probe, node: str, names: list[str]) -> dict:
    client = probe.node.create_client(GetParameters, f"/{node}/get_parameters")
    assert client.wait_for_service(timeout_sec=90.0), f"/{node}/get_parameters never appeared"
    future = client.call_async(GetParameters.Request(names=names))
    assert wait_until(future.done, timeout_s=30.0), f"/{node}/get_parameters did not answer"
    values = {}
    for name, value in zip(names, future.result().values):
        values[name] = {ParameterType.PARAMETER_DOUBLE: value.double_value,
                        ParameterType.PARAMETER_BOOL: value.bool_value}.get(value.type, value)
    return values


def test_params_file_values_reach_the_running_nodes(launch_graph, probe, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(USER_FILE)
    graph = launch_graph("sim", "cameras:=", f"params_file:={user}")
    controller = get_parameters(probe, "controller", ["impedance.damping_ratio", "safety.max_tcp_speed_m_per_s",
                                                      "impedance.add_gravity", "impedance.nullspace_stiffness_nm_per_rad"])
    assert controller == {"impedance.damping_ratio": 0.8,  # shipped 1.0
                          "safety.max_tcp_speed_m_per_s": 0.3,  # shipped 0.5
                          "impedance.add_gravity": True,  # shipped, untouched
                          "impedance.nullspace_stiffness_nm_per_rad": 10.0}, graph.output[-3000:]
    assert get_parameters(probe, "proprioception", ["rate_hz"]) == {"rate_hz": 50.0}  # shipped 100.0
