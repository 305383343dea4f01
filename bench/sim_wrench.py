"""Cost of the sim's external-wrench measurement (PandaSim.ee_wrench) in the 1 kHz physics loop.

Median µs per call next to one physics step (mj_step with the arm's torques), in three situations: free space
(the cube's contacts with the table are the only ones), fingers closed on each other (internal contacts, skipped),
and the closed hand pressed onto the table (contacts between the fingertips and the table).

    /tmp/venvtest/bin/python bench/sim_wrench.py [--steps 3000]
"""
import argparse
import os
import time

import numpy as np

from deploy.control.ik import solve_ik
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim.physics import PandaSim

STIFFNESS_NM_PER_RAD, DAMPING_NM_S_PER_RAD = 200.0, 20.0
DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])


def run(sim: PandaSim, model: MujocoRobotModel, q_target_rad: np.ndarray, gripper_width_m: float, steps: int):
    """Hold q_target (gravity compensation + joint PD) for `steps`; -> (step µs, ee_wrench µs, contacts) medians
    over the second half (settled)."""
    step_us, wrench_us, contacts = [], [], []
    for _ in range(steps):
        q, dq, _ = sim.joint_state()
        tau = model.bias_torque(q, dq) + STIFFNESS_NM_PER_RAD * (q_target_rad - q) - DAMPING_NM_S_PER_RAD * dq
        start = time.perf_counter()
        sim.step(tau, gripper_width_m)
        stepped = time.perf_counter()
        sim.ee_wrench()
        step_us.append((stepped - start) * 1e6)
        wrench_us.append((time.perf_counter() - stepped) * 1e6)
        contacts.append(sim.data.ncon)
    half = steps // 2
    return np.median(step_us[half:]), np.median(wrench_us[half:]), int(np.median(contacts[half:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    steps = parser.parse_args().steps
    model = MujocoRobotModel()
    sim = PandaSim()
    home_q, _, _ = sim.joint_state()
    below_table = solve_ik(model, np.array([0.45, 0.05, -0.02]), DOWN_XYZW, home_q).q_rad
    sim.set_cube_pose(np.array([0.3, 0.35, 0.02]), np.array([0.0, 0.0, 0.0, 1.0]))  # away from the pressed spot
    print(f"load average {os.getloadavg()[0]:.1f}; medians over the settled half of {steps} steps")
    print(f"{'situation':32s} {'mj step µs':>11s} {'ee_wrench µs':>13s} {'contacts':>9s}")
    for name, q_target, width_m in (("free space, fingers open", home_q, 0.085),
                                    ("fingers closed on each other", home_q, 0.0),
                                    ("closed hand pressed on table", below_table, 0.0)):
        step_us, wrench_us, contacts = run(sim, model, q_target, width_m, steps)
        print(f"{name:32s} {step_us:11.1f} {wrench_us:13.1f} {contacts:9d}")


if __name__ == "__main__":
    main()
