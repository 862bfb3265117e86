"""Projection onto the entropy-regularized local Wasserstein ball (projected Sinkhorn, Wong et al. 2019).

Problem, per example (X the clean image, Y the candidate, both divided by the clean image's mass):

    minimize (λ/2)‖Z − Y‖² + Σ Π log Π   s.t.   Π1 = X,  Πᵀ1 = Z,  ⟨Π, C⟩ ≤ ε,

where Π moves mass only within a channel and within a k×k window, at cost C[o] = ‖o‖₂^p for offset o.
The dual has variables α, β (per pixel) and ψ ≥ 0 (per example); Π_ij = e^{−α_i} K_ij e^{−β_j} with
K = exp(−ψC − 1). The local operator (K∗v)[i] = Σ_o K[o] v[i+o] (zero padding: mass never leaves the image)
is a depthwise convolution, one group per (example, channel), so no k² shifted copies are materialized.

Numerics (float32 must work at λ = 1000–3000, where the textbook β update exp(λY) overflows):
* every quantity of the form e^{v} enters an operator as exp(v − max v)·e^{max v}, with the max taken per
  example and channel; results stay in log space;
* the β update W₀(λ e^{λY} (K∗e^{−α})) is evaluated as the Wright omega function of its logarithm;
* the ψ step uses ⟨e^{−α}, (C⊙K)∗e^{−β}⟩ = Σ exp(−α + log((C⊙K)∗e^{−β})), finite by construction;
* α = +∞ exactly where X = 0 (those pixels send nothing); ⟨α, X⟩ sums over X > 0 only.
Stopping is per example (``docs/attacks.md`` §Stopping): an example stops being updated once the plan whose
column sums are Z satisfies the constraints, |Σ Z − Σ X| ≤ tol·Σ X and ⟨Π, C⟩ ≤ ε(1 + cost_tol), or at the
iteration cap (then it is reported as not converged). A small change of the dual objective is *not* a
stopping rule: it only says the ascent is slow.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F


def local_cost(kernel_size: int, p: float = 1.0, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Cost kernel [k, k]: C[a, b] = ((a − c)² + (b − c)²)^{p/2} with c = k // 2 (k odd)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    if not isinstance(p, numbers.Real) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"p must be a finite number > 0, got {p!r}")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return dist2.pow(p / 2.0).to(dtype=dtype, device=device)


def wright_omega(u: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Wright omega ω(u), the solution w > 0 of w + log w = u; equals W₀(e^u) without forming e^u.

    Initial guess: u − log u + log u / u for u > 1 (the asymptotic series), log(1 + e^u) below (≈ e^u as
    u → −∞, exact-ish near 0). Refined by Fritsch's fourth-order iteration (Lawrence et al. 2012,
    ACM TOMS Alg. 917); three steps reach float64 precision from these guesses. ω(−∞) = 0.
    """
    big = u > 1
    safe_big = torch.where(big, u, torch.ones_like(u))
    log_u = torch.log(safe_big)
    w = torch.where(big, safe_big - log_u + log_u / safe_big, F.softplus(torch.where(big, 0 * u, u)))
    for _ in range(iterations):
        positive = w > 0  # w underflowed to 0 only where ω(u) is below the dtype's smallest number
        safe_w = torch.where(positive, w, torch.ones_like(w))
        z = u - safe_w - torch.log(safe_w)
        q = 2 * (1 + safe_w) * (1 + safe_w + 2 * z / 3) - z
        step = safe_w * (1 + z / (1 + safe_w) * (q - z) / (q - 2 * z))
        w = torch.where(positive, step, w)
    return w


def log_local_operator(log_v: torch.Tensor, log_kernels: torch.Tensor) -> torch.Tensor:
    """log(K_j ∗ e^{log_v}) for several per-example kernels at once, exact in log space.

    Args:
        log_v: [B, C, H, W], entries may be −inf (zero mass).
        log_kernels: [B, J, k, k] logarithms of non-negative kernels (−inf for zero entries), symmetric
            under o → −o (so correlation = convolution).
    Returns:
        [B, J, C, H, W]; −inf where every term is zero.

    One grouped convolution of exp(log_v − max) does the bulk of the work without materializing k² copies.
    Where that result is so small relative to the max that terms may have underflowed (the values of
    log_v can span far more than the ~88 nats of float32 at λ = 3000), the few affected outputs are
    recomputed exactly with a logsumexp over their k×k neighbourhoods.
    """
    bsz, chans, h, w = log_v.shape
    n_ker, k = log_kernels.shape[1], log_kernels.shape[-1]
    shift = log_v.amax(dim=(2, 3), keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # all −inf: nothing to scale
    v = torch.exp(log_v - shift)
    kernels = torch.exp(log_kernels).to(v.dtype)
    # clamp: fast convolution algorithms may return tiny negatives where the exact result is 0
    out = torch.log(_local_sum_conv(v, kernels).clamp_min(0)) + shift[:, None]
    # Terms below e^{shift + log(tiny)} were lost; an output above threshold is accurate to ~e^-30.
    threshold = shift[:, None] + math.log(torch.finfo(log_v.dtype).tiny) + 30.0
    redo = out < threshold
    if bool(redo.any()):
        # outputs with no finite input in their window are exactly −inf already: skip those
        finite = torch.isfinite(log_v)
        if not bool(finite.all()):
            reach = _local_sum_conv(finite.to(v.dtype), torch.ones(bsz, 1, k, k, dtype=v.dtype, device=v.device))
            redo &= reach > 0.5
    if bool(redo.any()):
        out[redo] = _exact_log_local(log_v, log_kernels, redo)
    return out


def _local_sum_conv(v: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Σ_o K_j[o] v[i+o] as one grouped convolution: group (b, c) makes J channels, j with kernel [b, j].

    [B, C, H, W] × [B, J, k, k] -> [B, J, C, H, W]; zero padding, so mass never enters from outside.
    """
    bsz, chans, h, w = v.shape
    n_ker, k = kernels.shape[1], kernels.shape[-1]
    weight = kernels[:, None].expand(bsz, chans, n_ker, k, k).reshape(bsz * chans * n_ker, 1, k, k)
    cudnn, mkldnn = torch.backends.cudnn, torch.backends.mkldnn
    # TF32 convolutions (cuDNN's default for float32) keep ~10 mantissa bits: too coarse for Sinkhorn. oneDNN
    # (and cuDNN) choose their algorithm by the number of groups, i.e. by how many examples share the batch, so
    # an example's projection would change in its last bits with its batch: a resumed or re-batched attack would
    # differ from the uninterrupted one. PyTorch's own grouped convolution computes every group alike.
    mkldnn_before = mkldnn.enabled
    mkldnn.enabled = False
    try:
        with cudnn.flags(enabled=False, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            out = F.conv2d(v.reshape(1, bsz * chans, h, w), weight, padding=k // 2, groups=bsz * chans)
    finally:
        mkldnn.enabled = mkldnn_before
    return out.reshape(bsz, chans, n_ker, h, w).transpose(1, 2)


def _exact_log_local(log_v, log_kernels, mask):
    """logsumexp over the k×k neighbourhood of the outputs selected by ``mask`` [B, J, C, H, W]."""
    k = log_kernels.shape[-1]
    c = k // 2
    padded = F.pad(log_v, (c, c, c, c), value=-math.inf)  # mass never enters from outside the image
    bi, ji, ci, hi, wi = mask.nonzero(as_tuple=True)
    da, db = torch.meshgrid(torch.arange(k, device=log_v.device), torch.arange(k, device=log_v.device),
                            indexing="ij")
    rows = hi[:, None] + da.reshape(1, -1)
    cols = wi[:, None] + db.reshape(1, -1)
    values = padded[bi[:, None], ci[:, None], rows, cols] + log_kernels[bi, ji].reshape(-1, k * k)
    return torch.logsumexp(values, dim=1)


def _check_upper(upper, X):
    """The cap on Z as a tensor broadcastable to X (None: no cap); every cap must admit X itself."""
    if upper is None:
        return None
    upper = torch.as_tensor(upper, dtype=X.dtype, device=X.device)
    try:
        torch.broadcast_shapes(upper.shape, X.shape)
    except RuntimeError:
        raise ValueError(f"upper must broadcast to X's shape {tuple(X.shape)}, got {tuple(upper.shape)}") from None
    if bool(torch.isnan(upper).any()) or bool((upper < X).any()):
        raise ValueError("upper must be >= X everywhere (the clean image must lie in the box)")
    return upper


def _check_projection_args(X, Y, epsilon, lam, cost_kernel, max_iter, tol, cost_tol=0.0):
    for name, t in (("X", X), ("Y", Y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor [B, C, H, W], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must have the same shape, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if bool((X < 0).any()) or not bool(torch.isfinite(X).all()) or not bool(torch.isfinite(Y).all()):
        raise ValueError("X must be non-negative and finite, Y finite")
    eps = torch.as_tensor(epsilon, dtype=X.dtype, device=X.device).reshape(-1)
    if eps.numel() == 1:
        eps = eps.expand(X.shape[0]).clone()
    if eps.numel() != X.shape[0] or not bool((eps > 0).all()) or not bool(torch.isfinite(eps).all()):
        raise ValueError(f"epsilon must be a positive finite number or one per example ({X.shape[0]}), "
                         f"got {epsilon!r}")
    if not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam (the regularization λ) must be a finite number > 0, got {lam!r}")
    if (not isinstance(cost_kernel, torch.Tensor) or cost_kernel.dim() != 2
            or cost_kernel.shape[0] != cost_kernel.shape[1] or cost_kernel.shape[0] % 2 == 0):
        raise ValueError("cost_kernel must be a square [k, k] tensor with k odd (see local_cost)")
    if not torch.equal(cost_kernel, cost_kernel.flip(0, 1)) or bool((cost_kernel < 0).any()):
        raise ValueError("cost_kernel must be non-negative and symmetric under o -> -o")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < 1:
        raise ValueError(f"tol (relative mass error) must be a number in [0, 1), got {tol!r}")
    if isinstance(cost_tol, bool) or not isinstance(cost_tol, numbers.Real) or not 0 <= cost_tol < math.inf:
        raise ValueError(f"cost_tol must be a finite number >= 0, got {cost_tol!r}")
    return eps


def _column_update(na, lk_a, y_a, lam: float, caps):
    """Step 2 of projected_sinkhorn for the active examples: (Z, β) from e^{−α} (``na`` = −α, log K = ``lk_a``).

    Z = W₀(z)/λ and β = λ(Z − Y) with z = λ e^{λY} (K∗e^{−α}); with ``caps`` = (upper, log upper), the columns
    above the box are held at the cap (κ > 0 there) by β = log(K∗e^{−α}) − log upper.
    """
    log_ka = log_local_operator(na, lk_a[:, None])[:, 0]
    omega = wright_omega(math.log(lam) + lam * y_a + log_ka)
    z_a = omega / lam
    beta_a = omega - lam * y_a
    if caps is not None:
        u_a, log_u_a = caps
        capped = z_a > u_a
        z_a = torch.where(capped, u_a, z_a)
        beta_a = torch.where(capped, log_ka - log_u_a, beta_a)
    return z_a, beta_a


def _newton_step_psi(psi_a, na, beta_a, lk_a, log_cost, eps_a):
    """Step 3 of projected_sinkhorn: (new ψ, ⟨Π, C⟩ of the current plan), one Newton step on ψ for the
    constraint ⟨Π, C⟩ = ε, the step halved (at most 30 times) where it would make ψ negative."""
    moments = log_local_operator(-beta_a, torch.stack((log_cost + lk_a, 2 * log_cost + lk_a), dim=1))
    first = torch.exp(na[:, None] + moments).sum(dim=(2, 3, 4))
    cost_now = first[:, 0]
    grad = cost_now - eps_a
    hess = -first[:, 1]
    delta = grad / torch.minimum(hess, torch.full_like(hess, -torch.finfo(hess.dtype).tiny))
    t = torch.ones_like(psi_a)
    for _ in range(30):  # halve the step where it would make ψ negative (floor 2^-30)
        negative = psi_a - t * delta < 0
        if not bool(negative.any()):
            break
        t = torch.where(negative, t / 2, t)
    return (psi_a - t * delta).clamp_min(0), cost_now


def projected_sinkhorn(X: torch.Tensor, Y: torch.Tensor, epsilon, lam: float, cost_kernel: torch.Tensor,
                       max_iter: int = 400, tol: float = 1e-4, *, cost_tol: float = 1e-3, upper=None,
                       return_info: bool = False):
    """Entropic projection of Y onto the local Wasserstein ball of radius ε around X (batched), optionally
    intersected with the box Z ≤ ``upper`` (Hu, Swaminathan, Salman & Yang 2020).

    The box enters the dual as one more variable κ ≥ 0 per target pixel (Z = Y + (β − κ)/λ): for the current
    α, the unconstrained column update Z* = W₀(λ e^{λY} (K∗e^{−α}))/λ is kept where Z* ≤ upper; elsewhere
    the column is held at the cap, Z = upper, by β = log(K∗e^{−α}) − log upper (and κ = β − λ(upper − Y) ≥ 0).
    The mass of Z still converges to Σ X, so an image projected with upper = 1/s needs no clamp afterwards.

    Args:
        X: clean images [B, C, H, W], non-negative (mass-normalized by the caller: Σ X = 1 per example).
        Y: candidates [B, C, H, W], same normalization (divided by the *clean* image's mass).
        epsilon: radius, a float or a tensor [B] (one per example), > 0, in the units of ``cost_kernel``.
        lam: regularization λ (the paper: 1000 on MNIST, 3000 on CIFAR-10); larger = closer to the exact
            Euclidean projection.
        cost_kernel: [k, k] local cost (``local_cost(k, p)``), k odd.
        upper: None (no box), or a cap on Z broadcastable to X ([B, 1, 1, 1]: 1/s for pixels ≤ 1), ≥ X.
        max_iter: iteration limit per example.
        tol, cost_tol: stop an example once the plan whose column sums are Z has relative mass error
            |Σ Z − Σ X| / Σ X ≤ tol and transport cost ⟨Π, C⟩ ≤ ε·(1 + cost_tol).
        return_info: also return {"iterations": [B] int, "psi": [B], "transport_cost": [B] (⟨Π, C⟩ of the
            returned Z's plan), "mass_error": [B] (Σ Z / Σ X − 1), "converged": [B] bool (both constraints
            met before the cap)}.
    Returns:
        Z [B, C, H, W] ≥ 0, the column marginal of the regularized plan (Z = Y + β/λ).
    """
    eps = _check_projection_args(X, Y, epsilon, lam, cost_kernel, max_iter, tol, cost_tol)
    upper = _check_upper(upper, X)
    if upper is not None:
        upper = upper.expand_as(X)
        log_upper = torch.log(upper)
    bsz = X.shape[0]
    dtype, device = X.dtype, X.device
    cost = cost_kernel.to(dtype=dtype, device=device)
    lam = float(lam)
    log_x = torch.log(X)  # −inf where X = 0
    has_mass = X > 0
    numel = X[0].numel()
    beta = torch.full_like(X, -math.log(numel))  # β = log(1/m)
    psi = torch.ones(bsz, dtype=dtype, device=device)
    z_out = Y.clone()
    neg_alpha = torch.zeros_like(X)
    iterations = torch.zeros(bsz, dtype=torch.int64, device=device)
    transport = torch.zeros(bsz, dtype=dtype, device=device)
    mass_error = torch.zeros(bsz, dtype=dtype, device=device)
    converged = torch.zeros(bsz, dtype=torch.bool, device=device)
    x_mass = X.sum(dim=(1, 2, 3), dtype=torch.float64)  # mass test in float64: float32 sums drift by ~1e-6
    active = torch.arange(bsz, device=device)

    log_cost = torch.log(cost)  # −inf at zero cost (the centre)

    def log_kernel(psi_a):  # log K = −ψC − 1, one [k, k] kernel per example
        return -psi_a[:, None, None] * cost - 1.0

    # log(K ∗ e^{−β}) for the active examples; carried from one iteration's objective to the next α update
    log_kb = log_local_operator(-beta, log_kernel(psi)[:, None])[:, 0]
    for it in range(max_iter):
        x_a, y_a, lx_a, m_a = X[active], Y[active], log_x[active], has_mass[active]
        psi_a, eps_a = psi[active], eps[active]
        lk_a = log_kernel(psi_a)
        # 1. α: rows of the plan sum to X (e^{−α} = X / (K∗e^{−β}); exactly 0 where X = 0)
        na = torch.where(m_a, lx_a - log_kb, torch.full_like(lx_a, -math.inf))
        # 2. β through the Wright omega of log z, z = λ e^{λY} (K∗e^{−α}); Z = W₀(z)/λ, β = λ(Z − Y)
        caps = None if upper is None else (upper[active], log_upper[active])
        z_a, beta_a = _column_update(na, lk_a, y_a, lam, caps)
        # 3. Newton step on ψ for the constraint ⟨Π, C⟩ = ε, with backtracking to keep ψ ≥ 0
        psi_a, cost_now = _newton_step_psi(psi_a, na, beta_a, lk_a, log_cost, eps_a)
        # 4. K∗e^{−β} at the new ψ, for the next α update
        log_kb_new = log_local_operator(-beta_a, log_kernel(psi_a)[:, None])[:, 0]
        # write back
        beta[active], psi[active], z_out[active], neg_alpha[active] = beta_a, psi_a, z_a, na
        transport[active] = cost_now
        iterations[active] = it + 1
        # 5. stop where the plan of steps 1-3 (columns Z, cost cost_now) meets both constraints
        x_mass_a = x_mass[active]
        err = z_a.sum(dim=(1, 2, 3), dtype=torch.float64) / x_mass_a - 1
        mass_error[active] = err.to(dtype)
        done = (err.abs() <= tol) & (cost_now <= eps_a * (1 + cost_tol))
        converged[active] = done
        # cannot improve further (reported as not converged; Z itself is never NaN)
        done = done | ~torch.isfinite(err) | ~torch.isfinite(cost_now) | ~torch.isfinite(psi_a)
        keep = ~done
        active, log_kb = active[keep], log_kb_new[keep]
        if active.numel() == 0:
            break
    if return_info:
        return z_out, {"iterations": iterations, "psi": psi, "transport_cost": transport,
                       "mass_error": mass_error, "converged": converged}
    return z_out
