"""Training losses: the objective of a batch, and terms that target what a reconstruction
breaks: struts, and the stiffness they carry.

:func:`objective` is the paper's loss (Kim, Nam & Jang, eqs. 1-2): the mean absolute error (L1;
the paper's eq. 1 prints a square by mistake, its name and text say MAE) or the mean squared
error (L2) over the HR patch, plus optional terms, each with its weight (0 leaves it out):

* mass consistency: the mean of every ``scale`` x ``scale`` block of the output
  (:func:`block_mean`) should equal the target's, the bone mass of the LR pixel. It is the LR
  density pixel when the LR image is the block mean, and not when a scanner made the LR image
  (:func:`femsr.dataset.scanner_lr`: blurred and noisy), so the target's block mean is used;
* clDice (:func:`cldice_loss`): the centreline Dice of Shit et al. (2021, CVPR, "clDice - a
  novel topology-preserving loss function for tubular structure segmentation"): how much of
  each image's soft skeleton lies inside the other image. A strut cut in two loses skeleton
  that the pixel losses barely see.
* stiffness (:func:`stiffness_term`): the log error of each patch's apparent stiffness.
  :func:`apparent_stiffness` is the homogenized plane-stress stiffness ``C11, C22, C33`` of a
  batch of density patches, differentiable in the density: the torch twin of
  :func:`femsr.evaluate.apparent_stiffness` (kinematic boundary conditions, Q4 pixels, SIMP).
  :func:`stiffness_loss` compares a reconstruction's with its reference's.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from femsr import evaluate, fem

__all__ = [
    "apparent_stiffness",
    "block_mean",
    "cldice_loss",
    "forget_target_stiffness",
    "objective",
    "soft_skeleton",
    "stiffness_loss",
    "stiffness_term",
]

LOSSES = ("l1", "l2")
SOLVERS = ("auto", "cg", "direct")
# The stiffness term's solve (apparent_stiffness): E0 and h cancel in the log ratio of
# stiffness_loss; a void of 1e-3 E0 (the LR FE's, femsr.encoding.VOID_MODULUS) lets CG (on a
# GPU) converge in far fewer iterations than 1e-9 E0, and a 0.1 % residual is ample for a loss.
STIFFNESS_OPTIONS: dict[str, float] = {"E0": 1.0, "h": 1.0, "Emin": 1e-3, "tol": 1e-3}

_EPS = 1e-6
# The targets' apparent stiffness, keyed by the target up to its turns and flips (see
# _reference_stiffness): a training pair's target comes back every epoch, turned or flipped by
# the augmentation, and its solve is half the stiffness term's cost. About 0.3 kB an entry.
_REFERENCES: dict[bytes, np.ndarray] = {}
_REFERENCES_MAX = 1 << 18
# C11, C22, C33 of a patch turned a quarter, from the patch's.
_QUARTER_TURN = [1, 0, 2]


def _erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion by the 3x3 cross: the minimum over the 3x1 and 1x3 neighbourhoods."""
    rows = -F.max_pool2d(-x, (3, 1), stride=1, padding=(1, 0))
    cols = -F.max_pool2d(-x, (1, 3), stride=1, padding=(0, 1))
    return torch.minimum(rows, cols)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def soft_skeleton(x: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Soft morphological skeleton of images in [0, 1], shape (batch, 1, ny, nx).

    Shit et al.'s iteration: the parts of ``x`` an opening removes, collected over
    ``iterations`` erosions; of a binary image, its morphological skeleton (for structures up to
    about ``2 iterations + 1`` pixels thick).
    """
    if x.ndim != 4:
        raise ValueError(f"images must have shape (batch, channels, ny, nx), got {tuple(x.shape)}")
    # Each erosion serves twice: in this step's opening and as the next step's image.
    eroded = _erode(x)
    skeleton = F.relu(x - _dilate(eroded))
    for _ in range(iterations):
        x, eroded = eroded, _erode(eroded)
        delta = F.relu(x - _dilate(eroded))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice_loss(
    prediction: torch.Tensor, target: torch.Tensor, iterations: int = 10
) -> torch.Tensor:
    """``1 - clDice`` of a batch, images in [0, 1] of shape (batch, 1, ny, nx).

    Topology precision (the prediction's skeleton inside the target) and sensitivity (the
    target's skeleton inside the prediction), their harmonic mean over the whole batch.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target differ in shape: {tuple(prediction.shape)}, "
            f"{tuple(target.shape)}"
        )
    skeleton_p = soft_skeleton(prediction, iterations)
    skeleton_t = soft_skeleton(target, iterations)
    precision = ((skeleton_p * target).sum() + _EPS) / (skeleton_p.sum() + _EPS)
    sensitivity = ((skeleton_t * prediction).sum() + _EPS) / (skeleton_t.sum() + _EPS)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)


# Local Q4 node order of femsr.fem.element_stiffness (bottom-left, bottom-right, top-right,
# top-left) as (row, column) offsets of an element's corner nodes; grid row 0 is the top.
_CORNERS = ((1, 0), (1, 1), (0, 1), (0, 0))


def _element_dofs(u: torch.Tensor) -> torch.Tensor:
    """Nodal (batch, 2, ny+1, nx+1) -> element DOFs (batch, 8, ny, nx) in local order."""
    ny, nx = u.shape[-2] - 1, u.shape[-1] - 1
    return torch.cat([u[:, :, r : r + ny, c : c + nx] for r, c in _CORNERS], dim=1)


def _scatter(forces: torch.Tensor) -> torch.Tensor:
    """Element forces (batch, 8, ny, nx) -> nodal sums (batch, 2, ny+1, nx+1)."""
    batch, _, ny, nx = forces.shape
    nodal = forces.new_zeros(batch, 2, ny + 1, nx + 1)
    for k, (r, c) in enumerate(_CORNERS):
        nodal[:, :, r : r + ny, c : c + nx] += forces[:, 2 * k : 2 * k + 2]
    return nodal


def _apply(modulus: torch.Tensor, ke: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``K u`` of the grid: modulus (batch, ny, nx), u (batch, 2, ny+1, nx+1)."""
    forces = torch.einsum("ij,bjyx->biyx", ke, _element_dofs(u)) * modulus[:, None]
    return _scatter(forces)


def _affine(ny: int, nx: int, h: float, like: torch.Tensor) -> torch.Tensor:
    """The three unit macro-strains' nodal fields (3, 2, ny+1, nx+1), as in femsr.evaluate."""
    i = torch.arange(ny + 1, dtype=like.dtype, device=like.device)[:, None].expand(ny + 1, nx + 1)
    j = torch.arange(nx + 1, dtype=like.dtype, device=like.device)[None, :].expand(ny + 1, nx + 1)
    x, y = (j - nx / 2.0) * h, -(i - ny / 2.0) * h
    zero = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([x, zero]), torch.stack([zero, y]), torch.stack([y / 2.0, x / 2.0])]
    )


def apparent_stiffness(
    density: torch.Tensor,
    *,
    E0: float,
    nu: float = 0.3,
    penal: float = 3.0,
    Emin: float | None = None,
    h: float,
    tol: float = 1e-6,
    max_iter: int = 2000,
    solver: str = "auto",
) -> torch.Tensor:
    """``C11, C22, C33`` (MPa) of each density patch, differentiable in the density.

    The solve of :func:`femsr.evaluate.apparent_stiffness` (every outline node moved by a unit
    macro-strain, the inner nodes free), outside autograd: by Jacobi-preconditioned conjugate
    gradients on the whole batch, matrix-free (``solver="cg"``, the default on a GPU), or patch
    by patch by a sparse LU factorization (``"direct"``, :func:`femsr.evaluate.kinematic_solution`,
    the default on the CPU, where it is about 4 times faster on 60 x 60 bone patches). The
    stiffness is then the energy form ``uᵀ K u / V``, whose derivative in the density at the
    solution is ``uᵀ (dK/d density) u / V`` (the solution is stationary: the envelope theorem),
    so autograd through ``K`` alone gives the exact gradient.

    Parameters
    ----------
    density : Tensor, shape (batch, 1, ny, nx) or (batch, ny, nx)
        Densities in [0, 1].
    E0, nu, penal, Emin, h
        As :func:`femsr.evaluate.apparent_stiffness` (``Emin`` defaults to ``1e-9 E0``; CG
        converges in fewer iterations with a stiffer void, e.g. ``1e-3 E0``).
    tol : float
        CG stops when every residual is below ``tol`` times its right-hand side's norm.
    max_iter : int
        CG iterations at most.
    solver : {"auto", "cg", "direct"}
        ``"auto"``: direct on the CPU, CG elsewhere.

    Returns
    -------
    Tensor, shape (batch, 3)
        ``C11, C22, C33`` (the paper's E_x, E_y, E_xy).
    """
    rho = density[:, 0] if density.ndim == 4 else density
    if rho.ndim != 3 or min(rho.shape[1:]) < 1:
        raise ValueError(
            f"density must have shape (batch, [1,] ny, nx), got {tuple(density.shape)}"
        )
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    Emin = 1e-9 * E0 if Emin is None else Emin
    batch, ny, nx = rho.shape
    ke = torch.as_tensor(fem.element_stiffness(nu), dtype=rho.dtype, device=rho.device)
    modulus = Emin + rho.clamp(0.0, 1.0) ** penal * (E0 - Emin)
    if solver == "direct" or (solver == "auto" and rho.device.type == "cpu"):
        u = _direct(rho, E0=E0, nu=nu, penal=penal, Emin=Emin, h=h)
    else:
        cases = _affine(ny, nx, h, rho)  # (3, 2, ny+1, nx+1)
        free = torch.zeros(ny + 1, nx + 1, dtype=torch.bool, device=rho.device)
        free[1:-1, 1:-1] = True
        with torch.no_grad():
            fixed_modulus = modulus.detach().repeat_interleave(3, dim=0)
            prescribed = (cases * ~free).repeat(batch, 1, 1, 1)
            rhs = -_apply(fixed_modulus, ke, prescribed) * free
            u = prescribed + _cg(fixed_modulus, ke, rhs, free, tol, max_iter)
    energy = (u * _apply(modulus.repeat_interleave(3, dim=0), ke, u)).sum(dim=(1, 2, 3))
    return energy.reshape(batch, 3) / (ny * nx * h * h)


def _direct(
    rho: torch.Tensor, *, E0: float, nu: float, penal: float, Emin: float, h: float
) -> torch.Tensor:
    """The nodal displacements ``(batch * 3, 2, ny+1, nx+1)`` of each patch's three
    macro-strains, solved on the CPU by :func:`femsr.evaluate.kinematic_solution`."""
    ny, nx = rho.shape[1:]
    fields = []
    for patch in rho.detach().clamp(0.0, 1.0).to("cpu", torch.float64).numpy():
        _, u = evaluate.kinematic_solution(patch, E0=E0, nu=nu, penal=penal, Emin=Emin, h=h)
        fields.append(u.reshape(ny + 1, nx + 1, 2, 3).transpose(3, 2, 0, 1))
    return torch.as_tensor(np.concatenate(fields), dtype=rho.dtype, device=rho.device)


def _cg(
    modulus: torch.Tensor,
    ke: torch.Tensor,
    rhs: torch.Tensor,
    free: torch.Tensor,
    tol: float,
    max_iter: int,
) -> torch.Tensor:
    """Solve ``K_ff u = rhs`` for each item of the batch (zero on the prescribed nodes)."""
    diagonal = _scatter(modulus[:, None] * torch.diagonal(ke)[None, :, None, None])
    inverse = torch.where(free, 1.0 / diagonal, torch.zeros_like(diagonal))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    u = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r * inverse
    p = z.clone()
    rz = dot(r, z)
    goal = tol * dot(rhs, rhs).sqrt()
    for _ in range(max_iter):
        if bool((dot(r, r).sqrt() <= goal).all()):
            break
        q = _apply(modulus, ke, p) * free
        step = rz / dot(p, q).clamp_min(torch.finfo(rhs.dtype).tiny)
        u = u + step * p
        r = r - step * q
        z = r * inverse
        rz_new = dot(r, z)
        p = z + rz_new / rz.clamp_min(torch.finfo(rhs.dtype).tiny) * p
        rz = rz_new
    return u


def stiffness_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    E0: float,
    h: float,
    pool: int = 1,
    **options: Any,
) -> torch.Tensor:
    """Mean ``|log C(prediction) - log C(target)|`` over the batch and ``C11, C22, C33``.

    The log makes an error of a soft patch weigh as much as one of a stiff patch, and a
    halving as much as a doubling. Both patches are average-pooled ``pool`` x ``pool`` first
    (``h`` is the pooled pixel's side). ``options`` go to :func:`apparent_stiffness`. Each
    target's stiffness is solved once per process, whichever way the augmentation turns or
    flips it, and kept (about 0.3 kB a target, up to 2^18 targets;
    :func:`forget_target_stiffness`).
    """
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be an integer >= 1, got {pool!r}")
    floor = 1e-9 * E0
    pooled = F.avg_pool2d(prediction, pool) if pool > 1 else prediction
    predicted = apparent_stiffness(pooled, E0=E0, h=h, **options).clamp_min(floor)
    reference = _reference_stiffness(target, pool, E0=E0, h=h, **options).clamp_min(floor)
    return (predicted.log() - reference.log()).abs().mean()


def _reference_stiffness(target: torch.Tensor, pool: int, **options: Any) -> torch.Tensor:
    """:func:`apparent_stiffness` of the ``pool`` x ``pool``-pooled targets ``(batch, 3)``,
    each solved once per process.

    A patch turned by a quarter has the same stiffness with ``C11`` and ``C22`` swapped, and a
    flipped one the same (the grid, the Q4 pixel and the macro-strains' energies map onto
    themselves), so each target is kept under the least of its 8 forms' bytes. The key is the
    target before pooling, whose forms are exact permutations of one another (a pooled pixel's
    sum is rounded in an order that turns with the patch), so the pooling's blocks must turn
    with it: sides that ``pool`` does not divide are solved every time.
    """
    rho = (target[:, None] if target.ndim == 3 else target).detach()
    pooled = F.avg_pool2d(rho, pool) if pool > 1 else rho
    if rho.shape[-2] % pool or rho.shape[-1] % pool:
        with torch.no_grad():
            return apparent_stiffness(pooled, **options)
    setting = repr((pool, sorted(options.items()))).encode()
    keys, swaps = [], []
    for patch in rho[:, 0].to("cpu").numpy():
        form, swapped = _least_form(patch)
        keys.append(hashlib.blake2b(setting + form, digest_size=16).digest())
        swaps.append(swapped)
    values = np.empty((len(keys), 3))
    missing = []
    for i, (key, swapped) in enumerate(zip(keys, swaps, strict=True)):
        known = _REFERENCES.get(key)
        if known is None:
            missing.append(i)
        else:
            values[i] = known[_QUARTER_TURN] if swapped else known
    if missing:
        with torch.no_grad():
            solved = apparent_stiffness(pooled[missing], **options)
        values[missing] = solved.to("cpu", torch.float64).numpy()
        for i in missing:
            if len(_REFERENCES) < _REFERENCES_MAX:
                _REFERENCES[keys[i]] = values[i][_QUARTER_TURN] if swaps[i] else values[i].copy()
    return torch.as_tensor(values, dtype=rho.dtype, device=rho.device)


def forget_target_stiffness() -> None:
    """Drop the targets' stiffness that :func:`stiffness_loss` keeps."""
    _REFERENCES.clear()


def _least_form(patch: np.ndarray) -> tuple[bytes, bool]:
    """The least of a patch's 8 turns and flips (its shape and bytes), and whether it is an
    odd number of quarter turns from the patch."""
    forms = []
    for mirrored in (patch, patch[:, ::-1]):
        for quarters in range(4):
            turned = np.ascontiguousarray(np.rot90(mirrored, quarters))
            form = f"{turned.shape}{turned.dtype}".encode() + turned.tobytes()
            forms.append((form, quarters % 2))
    form, odd = min(forms)
    return form, bool(odd)


def block_mean(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over each ``scale`` x ``scale`` block: HR ``(N, 1, H, W)`` → LR ``(N, 1, H/s, W/s)``.

    This is the downscaling that makes the LR density from the HR one.

    Examples
    --------
    >>> import torch
    >>> block_mean(torch.arange(16.0).reshape(1, 1, 4, 4), 2).flatten().tolist()
    [2.5, 4.5, 10.5, 12.5]
    """
    return F.avg_pool2d(image, kernel_size=scale, stride=scale)


def stiffness_term(prediction: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """The stiffness loss term: :func:`stiffness_loss` on 2 x 2-pooled patches.

    Mean ``|log C(prediction) - log C(hr)|`` over the batch and ``C11, C22, C33``, the apparent
    stiffness of each patch under kinematic boundary conditions (Q4 pixels, SIMP p = 3,
    nu = 0.3), differentiable in ``prediction``. It is computed on the patches average-pooled
    2 x 2 (60 x 60 instead of 120 x 120 pixels) for speed: a batch of three 120 x 120 patches
    takes about 2.2 s unpooled and 0.25 s pooled on one CPU core. ``E0 = 1`` and ``h = 1``
    (the log ratio does not depend on them), a void modulus of ``1e-3 E0`` (CG converges much
    faster than with ``1e-9 E0``) and a CG tolerance of ``1e-3``: :data:`STIFFNESS_OPTIONS`.

    Parameters
    ----------
    prediction, hr : torch.Tensor
        Network output and target, ``(N, 1, H, W)`` in [0, 1], ``H, W >= 2``.

    Returns
    -------
    torch.Tensor
        A scalar.

    See Also
    --------
    stiffness_loss, femsr.evaluate.apparent_stiffness

    Examples
    --------
    >>> import torch
    >>> hr = torch.full((2, 1, 8, 8), 0.5)
    >>> float(stiffness_term(hr, hr))
    0.0
    """
    return stiffness_loss(prediction, hr, pool=2, **STIFFNESS_OPTIONS)


def objective(
    prediction: torch.Tensor,
    hr: torch.Tensor,
    *,
    loss: str = "l1",
    mass_weight: float = 0.0,
    cldice_weight: float = 0.0,
    stiffness_weight: float = 0.0,
    scale: int = 10,
) -> torch.Tensor:
    """The training loss of a batch: L1 or L2 against ``hr``, plus the weighted optional terms.

    Parameters
    ----------
    prediction, hr : torch.Tensor
        Network output and target, ``(N, 1, P*scale, P*scale)``.
    loss : {"l1", "l2"}
        Mean absolute or mean squared error per pixel (paper eqs. 1-2).
    mass_weight : float
        Weight of the mass term: the same error (absolute or squared) between the block means
        of ``prediction`` and of ``hr``. 0 leaves it out.
    cldice_weight : float
        Weight of ``1 - clDice`` between ``prediction`` and ``hr`` (:func:`cldice_loss`, Shit
        et al. 2021, 10 skeleton iterations). 0 leaves it out.
    stiffness_weight : float
        Weight of the apparent-stiffness log error between ``prediction`` and ``hr``
        (:func:`stiffness_term`, on 2 x 2-pooled patches). 0 leaves it out.
    scale : int
        HR pixels per LR pixel along a side.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> import torch
    >>> hr = torch.ones(1, 1, 20, 20)
    >>> float(objective(hr * 0.5, hr, loss="l2", mass_weight=1.0, scale=10))
    0.5
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    distance = F.l1_loss if loss == "l1" else F.mse_loss
    value = distance(prediction, hr)
    if mass_weight:
        value = value + mass_weight * distance(block_mean(prediction, scale), block_mean(hr, scale))
    if cldice_weight:
        value = value + cldice_weight * cldice_loss(prediction, hr)
    if stiffness_weight:
        value = value + stiffness_weight * stiffness_term(prediction, hr)
    return value
