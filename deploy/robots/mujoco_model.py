"""`RobotModel` computed by MuJoCo from the Panda MJCF (the sim backend's stand-in for libfranka's model).

The 1 kHz tick evaluates the model once per sample. Through the Python bindings that was nine calls of ~1 µs
overhead each around ~13 µs of MuJoCo's own work; here one compiled kernel (numba, interpreter lock released)
calls MuJoCo's C functions directly (`_call_c`: the address of each C function from libmujoco, which the
bindings already loaded, and of the MjModel / MjData they wrap), so a tick pays one call's overhead.
"""
from __future__ import annotations

import ctypes
import glob
import os

import mujoco
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, Dynamics, RobotModel
from deploy.sim.scene import ARM_JOINTS, TCP_SITE, build_robot_model

# The MuJoCo C functions `evaluate` calls, in the order of their addresses in `MujocoRobotModel._functions`.
_FUNCTIONS = ("mj_kinematics", "mj_comPos", "mj_crb", "mj_jacSite", "mj_fullM", "mj_comVel", "mj_rne",
              "mju_mat2Quat")
_KINEMATICS, _COM_POS, _CRB, _JAC_SITE, _FULL_M, _COM_VEL, _RNE, _MAT2QUAT = range(len(_FUNCTIONS))


@intrinsic
def _call_c(typingctx, function_address, arguments):
    """Call the C function at `function_address` (void return) with `arguments`, a tuple whose uint64 entries
    are pointers and whose other integers are C ints. The address is an argument, not a constant baked into
    the code, so the kernels that use this stay cacheable on disk."""
    if not isinstance(arguments, types.BaseTuple):
        return None
    pointer = ir.IntType(8).as_pointer()
    is_pointer = [argument == types.uint64 for argument in arguments]

    def codegen(context, builder, signature, llvm_arguments):
        address, packed = llvm_arguments
        values = [builder.extract_value(packed, i) for i in range(len(is_pointer))]
        c_values = [builder.inttoptr(v, pointer) if p else builder.trunc(v, ir.IntType(32)) if v.type.width > 32
                    else v for v, p in zip(values, is_pointer)]
        function_type = ir.FunctionType(ir.VoidType(), [v.type for v in c_values])
        builder.call(builder.inttoptr(address, function_type.as_pointer()), c_values)
        return context.get_dummy_value()

    return types.void(types.uint64, arguments), codegen


@intrinsic
def _float_pointer(typingctx, address):
    """The uint64 `address` as a float64 pointer (for numba.carray over MjData's arrays)."""
    def codegen(context, builder, signature, llvm_arguments):
        return builder.inttoptr(llvm_arguments[0], ir.DoubleType().as_pointer())

    return types.CPointer(types.float64)(types.uint64), codegen


@njit(nogil=True, cache=True)
def _float_view(address, n):
    return carray(_float_pointer(address), n)


def _libmujoco() -> ctypes.CDLL:
    """The libmujoco the bindings loaded (shipped inside the wheel; a distro build links the same name)."""
    folder = os.path.dirname(mujoco.__file__)
    candidates = sorted(glob.glob(os.path.join(folder, "libmujoco.so*")))
    return ctypes.CDLL(candidates[0] if candidates else "libmujoco.so", mode=ctypes.RTLD_GLOBAL)


@njit(nogil=True, cache=True)
def packed_dynamics(buffer, n):
    """Views of the packed (n * n + 9 * n + 7,) Dynamics buffer: position (3), quat xyzw (4), jacobian (6, n),
    mass matrix (n, n), gravity (n), coriolis (n)."""
    jacobian_end = 7 + 6 * n
    mass_end = jacobian_end + n * n
    return (buffer[0:3], buffer[3:7], buffer[7:jacobian_end].reshape((6, n)),
            buffer[jacobian_end:mass_end].reshape((n, n)), buffer[mass_end:mass_end + n],
            buffer[mass_end + n:mass_end + 2 * n])


@njit(nogil=True, cache=True)
def evaluate(functions, pointers, q_rad, dq_rad_s, with_velocity, cache, scratch, out):
    """Fill `out` (`packed_dynamics`) at (q, dq): the position-dependent part when q differs from the cached
    one (gravity by RNE at dq = 0), C(q, dq) dq when `with_velocity` and dq differs. `pointers` = [model, data,
    qpos of joint 1, qvel of joint 1, site_xpos, site_xmat, site id, first dof, nv]; `cache` (2 n + 2,) =
    [q valid, q, dq valid, dq]; `scratch` = jac_pos (3 nv), jac_rot (3 nv), full inertia (nv nv), rne (nv),
    quat wxyz (4)."""
    n = q_rad.shape[0]
    model, data, qpos, qvel, site_xpos, site_xmat = pointers[0], pointers[1], pointers[2], pointers[3], \
        pointers[4], pointers[5]
    site, first_dof, nv = np.int32(pointers[6]), int(pointers[7]), int(pointers[8])
    arm_qpos = _float_view(qpos, n)
    arm_qvel = _float_view(qvel, n)
    jac_pos, jac_rot = scratch[0:3 * nv], scratch[3 * nv:6 * nv]
    full_mass, rne = scratch[6 * nv:6 * nv + nv * nv], scratch[6 * nv + nv * nv:7 * nv + nv * nv]
    quat_wxyz = scratch[7 * nv + nv * nv:7 * nv + nv * nv + 4]
    position, quat_xyzw, jacobian, mass_matrix, gravity_nm, coriolis_nm = packed_dynamics(out, n)
    same_q = cache[0] == 1.0
    for i in range(n):
        same_q = same_q and cache[1 + i] == q_rad[i]
    if not same_q:
        for i in range(n):
            arm_qpos[i] = q_rad[i]
            arm_qvel[i] = 0.0
            cache[1 + i] = q_rad[i]
        _call_c(functions[_KINEMATICS], (model, data))
        _call_c(functions[_COM_POS], (model, data))
        _call_c(functions[_CRB], (model, data))
        _call_c(functions[_JAC_SITE], (model, data, jac_pos.ctypes.data, jac_rot.ctypes.data, site))
        _call_c(functions[_FULL_M], (model, data, full_mass.ctypes.data))
        _call_c(functions[_COM_VEL], (model, data))  # rne reads the com velocities: zero here
        _call_c(functions[_RNE], (model, data, np.int32(0), rne.ctypes.data))  # gravity
        _call_c(functions[_MAT2QUAT], (quat_wxyz.ctypes.data, site_xmat))
        position[:] = _float_view(site_xpos, 3)
        quat_xyzw[0], quat_xyzw[1], quat_xyzw[2], quat_xyzw[3] = quat_wxyz[1], quat_wxyz[2], quat_wxyz[3], quat_wxyz[0]
        for j in range(n):
            for i in range(3):
                jacobian[i, j] = jac_pos[i * nv + first_dof + j]
                jacobian[3 + i, j] = jac_rot[i * nv + first_dof + j]
            for k in range(n):
                mass_matrix[j, k] = full_mass[(first_dof + j) * nv + first_dof + k]
            gravity_nm[j] = rne[first_dof + j]
            coriolis_nm[j] = 0.0  # coriolis at dq = 0
            cache[n + 2 + j] = 0.0
        cache[0] = cache[n + 1] = 1.0
    if not with_velocity:
        return
    same_dq = same_q and cache[n + 1] == 1.0
    for i in range(n):
        same_dq = same_dq and cache[n + 2 + i] == dq_rad_s[i]
    if same_dq:
        return
    for i in range(n):
        arm_qvel[i] = dq_rad_s[i]
        cache[n + 2 + i] = dq_rad_s[i]
    _call_c(functions[_COM_VEL], (model, data))
    _call_c(functions[_RNE], (model, data, np.int32(0), rne.ctypes.data))  # C(q, dq) dq + g, zero acceleration
    for j in range(n):
        coriolis_nm[j] = rne[first_dof + j] - gravity_nm[j]


class MujocoRobotModel(RobotModel):
    """Evaluates kinematics/dynamics on a private MjData; gripper joints are held at their reference.

    A control tick asks for pose, Jacobian, inertia and bias at one (q, dq): evaluated once per distinct q by
    MuJoCo's pieces the law needs (kinematics, com positions, composite-rigid-body inertia, site Jacobian,
    RNE at dq = 0 for gravity; no collision or constraint pass), plus one RNE per distinct dq, in one compiled
    call into preallocated arrays (`evaluate`).
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        self._model = model if model is not None else build_robot_model()
        self._data = mujoco.MjData(self._model)
        m, d = self._model, self._data
        joint_ids = [m.joint(name).id for name in ARM_JOINTS]
        qpos_idx = np.array([m.jnt_qposadr[j] for j in joint_ids])
        dof_idx = np.array([m.jnt_dofadr[j] for j in joint_ids])
        if not ((np.diff(qpos_idx) == 1).all() and (np.diff(dof_idx) == 1).all()):
            raise ConfigError(f"MujocoRobotModel needs the arm joints {ARM_JOINTS} consecutive in the MJCF")
        self._limits = m.jnt_range[joint_ids].copy()
        actuator_ids = [i for i in range(m.nu) if m.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
                        and m.actuator_trnid[i, 0] in joint_ids]
        self._tau_limits = np.abs(m.actuator_ctrlrange[actuator_ids, 1]).copy()
        assert len(self._tau_limits) == ARM_DOF
        site_id = m.site(TCP_SITE).id
        d.qvel[:] = 0.0
        library = _libmujoco()
        self._functions = np.array([ctypes.cast(getattr(library, name), ctypes.c_void_p).value
                                    for name in _FUNCTIONS], dtype=np.uint64)
        self._pointers = np.array([m._address, d._address, d.qpos[qpos_idx[0]:].ctypes.data,
                                   d.qvel[dof_idx[0]:].ctypes.data, d.site_xpos[site_id].ctypes.data,
                                   d.site_xmat[site_id].ctypes.data, site_id, dof_idx[0], m.nv], dtype=np.uint64)
        n = len(dof_idx)
        self._cache = np.zeros(2 * n + 2)
        self._scratch = np.zeros(7 * m.nv + m.nv * m.nv + 4)
        self._buffer = np.zeros(n * n + 9 * n + 7)
        self._out = Dynamics(*packed_dynamics(self._buffer, n))
        self._zero_dq = np.zeros(n)
        self.dynamics(np.zeros(n), np.ones(n))  # compiles (or loads from cache) the kernel now, not in a tick

    @property
    def native(self) -> tuple[np.ndarray, ...]:
        """The arrays `evaluate` works on (functions, pointers, cache, scratch, packed dynamics): for a compiled
        tick that evaluates the model inside its own kernel."""
        return self._functions, self._pointers, self._cache, self._scratch, self._buffer

    def _at(self, q_rad, dq_rad_s=None) -> Dynamics:
        evaluate(self._functions, self._pointers, np.asarray(q_rad, dtype=float),
                  self._zero_dq if dq_rad_s is None else np.asarray(dq_rad_s, dtype=float), dq_rad_s is not None,
                  self._cache, self._scratch, self._buffer)
        return self._out

    def dynamics(self, q_rad, dq_rad_s) -> Dynamics:
        """The model's own arrays (overwritten at the next call with another q or dq)."""
        return self._at(q_rad, dq_rad_s)

    def ee_pose(self, q_rad):
        out = self._at(q_rad)
        return out.position_m.copy(), out.quat_xyzw.copy()

    def jacobian(self, q_rad):
        return self._at(q_rad).jacobian.copy()

    def mass_matrix(self, q_rad):
        return self._at(q_rad).mass_matrix.copy()

    def bias_torque(self, q_rad, dq_rad_s):
        out = self._at(q_rad, dq_rad_s)
        return out.gravity_nm + out.coriolis_nm

    @property
    def joint_limits_rad(self):
        return self._limits

    @property
    def torque_limits_nm(self):
        return self._tau_limits
