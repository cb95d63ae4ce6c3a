"""Tests of pfcourse.symbolic: backward error analysis of explicit Euler (book, chapter 2).

Every displayed equation of chapter 2 (labels ``eq-bea-*``) is checked here; each test names the
labels it backs. The module computes the modified field with Lie derivatives on abstract jets of
f; the tests check it against derivations that share none of that code path:

* the linear field ``f = a y``, whose modified equation is known in closed form;
* concrete polynomial fields, for which the exact flow of an ansatz ``Σ h^{k-1} p_k(y)`` is
  computed by Picard iteration (integrals in t, no Lie derivatives) and the unknown
  coefficients of ``p_k`` are solved for;
* numerical integration in JAX (float64) of the truncated modified field, whose one-step error
  against gradient descent must scale like ``h^{order+1}``.
"""
from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from sympy.polys.domains import QQ
from sympy.polys.rings import ring

from pfcourse import symbolic as S

jax.config.update("jax_enable_x64", True)

y, h, f = S.y, S.h, S.f
fy = f(y)
d1 = fy.diff(y)
d2 = fy.diff(y, 2)


# ------------------------------------------------------------------------------------------------
# Independent derivation 1: Picard iteration for a concrete polynomial field
# ------------------------------------------------------------------------------------------------
def _modified_field_by_picard(field: sympy.Expr, order: int, params=()) -> list[sympy.Expr]:
    """Modified field of explicit Euler for a polynomial ``field(y)``, by ansatz and Picard.

    Ansatz ``g = Σ_{k ≤ n} h^{k-1} p_k(y)`` with ``p_n = Σ_d u_d y^d`` unknown; the exact solution
    of ``Y' = g(Y), Y(0) = y0`` is built by Picard iteration ``Y ← y0 + ∫_0^t g(Y(s)) ds``
    (polynomials in t, h, y0, truncated at total degree n in t and h); at ``t = h`` the
    coefficient of ``h^n`` must equal that of ``y0 + h field(y0)``. Solved for the ``u_d``
    with ``sympy.solve``, order by order.
    """
    Y0 = sympy.Symbol("Y0")
    fpoly = sympy.Poly(field.subs(y, Y0), Y0)
    m = fpoly.degree()
    max_deg = order * m - (order - 1) + 2  # generous: a_k has degree ≤ k m − (k − 1)
    us = sympy.symbols(f"u0:{max_deg + 1}")
    t, hs = sympy.symbols("t hs")
    R, *gens = ring([t, hs, Y0, *us, *params], QQ)
    T, Hh, Yv = gens[:3]
    U = gens[3 : 3 + len(us)]

    def trunc(p, n):
        return R({mon: c for mon, c in p.items() if mon[0] + mon[1] <= n})

    def integrate_t(p):
        return R({(mon[0] + 1,) + mon[1:]: c / (mon[0] + 1) for mon, c in p.items()})

    known: list[sympy.Expr] = []  # p_1 … p_{n-1}, as expressions in Y0 (and params)
    for n in range(1, order + 1):
        unknown = sum(U[d] * Yv**d for d in range(max_deg + 1))
        # g(y) = Σ_k h^{k-1} p_k(y), as coefficients of powers of y (elements of R without Y0)
        g_expr = sum(hs ** (k) * p for k, p in enumerate(known))
        g_known = R(sympy.expand(g_expr)) if known else R.zero
        g = g_known + Hh ** (n - 1) * unknown
        coeffs = {}
        for mon, c in g.items():
            coeffs.setdefault(mon[2], R.zero)
            coeffs[mon[2]] += R({mon[:2] + (0,) + mon[3:]: c})
        top = max(coeffs)
        Y = Yv
        for _ in range(n):
            gy = coeffs.get(top, R.zero)  # Horner: g(Y) = (...(a_top Y + a_{top-1}) Y + ...) + a_0
            for d in range(top - 1, -1, -1):
                gy = trunc(gy * Y, n) + coeffs.get(d, R.zero)
            Y = Yv + integrate_t(trunc(gy, n - 1))
        at_h = sum(c * sympy.Mul(*[s**e for s, e in zip(R.symbols[2:], mon[2:])])
                   for mon, c in Y.items() if mon[0] + mon[1] == n)
        target = fpoly.as_expr() if n == 1 else 0
        eqs = sympy.Poly(sympy.expand(at_h - target), Y0).all_coeffs()
        sol = sympy.solve(eqs, us, dict=True)
        assert len(sol) == 1
        p_n = sum(sol[0].get(u, u) * Y0**d for d, u in enumerate(us))
        assert not p_n.free_symbols & set(us), "ansatz did not determine p_n"
        known.append(sympy.expand(p_n))
    return [sympy.expand(p.subs(Y0, y)) for p in known]


# ------------------------------------------------------------------------------------------------
# Independent derivation 2: numerical one-step error in JAX, float64
# ------------------------------------------------------------------------------------------------
def _rk4_flow(field, y0, T, substeps=400):
    """Flow of ``y' = field(y)`` for time T by classical RK4 (float64, jit-compiled)."""
    dt = T / substeps

    def step(_, yy):
        k1 = field(yy)
        k2 = field(yy + dt / 2 * k1)
        k3 = field(yy + dt / 2 * k2)
        k4 = field(yy + dt * k3)
        return yy + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return jax.lax.fori_loop(0, substeps, step, y0)


def _fitted_slope(hs, errors) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def _scalar_one_step_errors(field_expr, order, y0, hs):
    """|flow of the order-`order` modified field over time h − (y0 + h f(y0))| for each h."""
    expr = S.substitute_field(S.modified_field(order), field_expr)
    fh = sympy.lambdify((y, h), expr, modules="jax")
    f0 = sympy.lambdify(y, field_expr, modules="jax")
    errs = []
    for hv in hs:
        flowed = jax.jit(lambda yy, hv=hv: _rk4_flow(lambda z: fh(z, hv), yy, hv))(jnp.float64(y0))
        errs.append(abs(float(flowed) - float(y0 + hv * f0(y0))))
    return np.array(errs)


# ------------------------------------------------------------------------------------------------
# The terms f_1 … f_5
# ------------------------------------------------------------------------------------------------
def test_first_terms_match_the_literature():
    """eq-bea-f2, eq-bea-f3 (Hairer, Lubich, Wanner 2006, §IX.1): f_1 = f, f_2 = −½ f'f,
    f_3 = ⅓ f'^2 f + 1/12 f'' f^2 (scalar form of ⅓ f'f'f + 1/12 f''(f, f))."""
    f1, f2, f3 = S.modified_field_terms(3)
    assert sympy.simplify(f1 - fy) == 0
    assert sympy.simplify(f2 - (-sympy.Rational(1, 2) * d1 * fy)) == 0
    assert sympy.simplify(f3 - (sympy.Rational(1, 3) * d1**2 * fy
                                + sympy.Rational(1, 12) * d2 * fy**2)) == 0


def test_f4_scalar_form():
    """eq-bea-f4: f_4 = −¼ f'^3 f − ⅙ f'' f' f^2 in the scalar case (no f''' f^3 term).
    (The coefficients are also confirmed by the Picard test below, which shares no code.)"""
    f4 = S.modified_field_terms(4)[3]
    expected = -sympy.Rational(1, 4) * d1**3 * fy - sympy.Rational(1, 6) * d2 * d1 * fy**2
    assert sympy.expand(f4 - expected) == 0


def test_f5_scalar_form():
    r"""eq-bea-f5: f_5 = 1/5 f'^4 f + 29/120 f''f'^2 f^2 + 1/120 f''^2 f^3 - 1/360 f''' f' f^3
    - 1/720 f^(4) f^4 (scalar). Also confirmed by the Picard test, which shares no code."""
    f5 = S.modified_field_terms(5)[4]
    d3, d4 = fy.diff(y, 3), fy.diff(y, 4)
    R = sympy.Rational
    expected = (R(1, 5) * d1**4 * fy + R(29, 120) * d2 * d1**2 * fy**2 + R(1, 120) * d2**2 * fy**3
                - R(1, 360) * d3 * d1 * fy**3 - R(1, 720) * d4 * fy**4)
    assert sympy.expand(f5 - expected) == 0


def test_f3_by_matching_order_h3():
    r"""eq-bea-f3-matching (exercise ex-bea-f3): f_3 + 1/2 (f_2' f + f' f_2) + 1/6 (f'' f^2 + f'^2 f)
    = 0 with f_2 = -1/2 f'f, solved for f_3, equals the module's f_3."""
    f2 = -sympy.Rational(1, 2) * d1 * fy
    f3_unknown = sympy.Symbol("F3")
    eq = (f3_unknown + sympy.Rational(1, 2) * (f2.diff(y) * fy + d1 * f2)
          + sympy.Rational(1, 6) * (d2 * fy**2 + d1**2 * fy))
    (f3,) = sympy.solve(eq, f3_unknown)
    assert sympy.expand(f3 - S.modified_field_terms(3)[2]) == 0


def test_igr_on_linear_fields():
    """Exercise ex-bea-linear and the double-well discussion: for f = −λy the IGR field is
    −λ(1 + hλ/2) y (decays for every h); for f = +λy (negative curvature) it is λ(1 − hλ/2) y,
    which changes sign at hλ = 2 although GD, y ↦ (1 + hλ) y, always escapes. The exact
    modified equation of GD on E = λy²/2, y' = log(1 − hλ)/h · y, is real only for hλ < 1."""
    lam = sympy.Symbol("lambda", positive=True)
    igr = S.modified_field(2)
    assert sympy.expand(S.substitute_field(igr, -lam * y) + lam * (1 + h * lam / 2) * y) == 0
    assert sympy.expand(S.substitute_field(igr, lam * y) - lam * (1 - h * lam / 2) * y) == 0
    exact = sympy.log(1 - h * lam) / h
    assert exact.subs({h: sympy.Rational(1, 2), lam: 1}).is_real
    assert exact.subs({h: 3, lam: 1}).is_real is False


def test_double_well_y_factors():
    """Chapter 2, §"Gradient descent, gradient flow and IGR on a 2-D loss": along y the double well
    is κy²/2, so per step GD multiplies y by 1 − hκ, NGF by e^{−hκ}, IGR by e^{−hκ(1 + hκ/2)}."""
    from pfcourse import flows, landscapes

    kappa, hv = 2.0, 0.35
    E = landscapes.double_well(kappa=kappa).loss
    theta0 = jnp.array([-0.25, 0.9])
    gd = flows.gradient_descent(E, theta0, hv, 1)[-1]
    igr = flows.integrate(flows.igr_flow(E, hv), theta0, [0.0, hv], method="rk4")[-1]
    ngf = flows.integrate(flows.gradient_flow(E), theta0, [0.0, hv], method="rk4")[-1]
    x = hv * kappa
    assert abs(float(gd[1]) - 0.9 * (1 - x)) < 1e-12
    assert abs(float(ngf[1]) - 0.9 * np.exp(-x)) < 1e-9
    assert abs(float(igr[1]) - 0.9 * np.exp(-x * (1 + x / 2))) < 1e-9


def test_gd_is_explicit_euler():
    """eq-bea-gd-euler: one GD step is θ + h f(θ) with f = −∇E (checked on the double well)."""
    from pfcourse import flows, landscapes

    E = landscapes.double_well(kappa=2.0).loss
    theta0 = jnp.array([-0.25, 0.9])
    f_theta = flows.gradient_flow(E)(theta0)
    step = flows.gradient_descent(E, theta0, 0.35, 1)[-1]
    assert float(jnp.max(jnp.abs(step - (theta0 + 0.35 * f_theta)))) < 1e-15


def test_prime_notation():
    """Display helper: f(y), f', f'', f''', f'''' become the symbols f, f', f'', f''', f^{(4)}."""
    expr = S.prime_notation(S.modified_field_terms(5)[4])
    names = {s.name for s in expr.free_symbols}
    assert names == {"f", "f'", "f''", "f'''", "f^{(4)}"}
    assert not expr.has(sympy.Derivative)


def test_modified_field_is_the_truncated_sum():
    """eq-bea-modified-field: f_h = f_1 + h f_2 + … + h^{order-1} f_order."""
    terms = S.modified_field_terms(5)
    total = S.modified_field(5)
    assert sympy.expand(total - sum(h**k * t for k, t in enumerate(terms))) == 0
    assert sympy.expand(S.modified_field(1) - fy) == 0


@pytest.mark.parametrize("order", [5, 7])
def test_linear_field_closed_form(order):
    """eq-bea-linear, eq-bea-principal-coefficients: for f(y) = a y one GD/Euler step multiplies y
    by 1 + ha = exp(h · log(1 + ha)/h), so the modified equation is exactly
    y' = (log(1 + ha)/h) y. Its h-series must equal the module's f_h with f = a y."""
    a = sympy.Symbol("a")
    exact = sympy.series(sympy.log(1 + h * a) / h * y, h, 0, order).removeO()
    ours = S.substitute_field(S.modified_field(order), a * y)
    assert sympy.expand(ours - exact) == 0


@pytest.mark.parametrize(
    "field, params",
    [
        (lambda c: y**2 + c * y, "c"),   # f''' = 0: checks every monomial with f, f', f''
        (lambda c: y**4 - 2 * y + 1, None),  # f''' and f'''' non-zero: f_4, f_5 in full
    ],
)
def test_terms_to_order_5_against_picard_ansatz(field, params):
    """eq-bea-flow-series, eq-bea-recursion, eq-bea-modified-field, eq-bea-f2 … eq-bea-f5:
    f_1 … f_5 against an
    independent derivation (polynomial ansatz in y, Picard iteration for the flow, linear solve)."""
    c = sympy.Symbol(params) if params else None
    fexpr = field(c)
    expected = _modified_field_by_picard(fexpr, 5, params=(c,) if c is not None else ())
    ours = [sympy.expand(S.substitute_field(t, fexpr)) for t in S.modified_field_terms(5)]
    for k, (a, b) in enumerate(zip(ours, expected), start=1):
        assert sympy.expand(a - b) == 0, f"f_{k} differs"


def test_quartic_field_distinguishes_every_monomial_of_f5():
    """The Picard check with f = y⁴ − 2y + 1 pins all five coefficients of f_5: the five scalar
    monomials f''''f⁴, f'''f'f³, f''²f³, f''f'²f², f'⁴f become linearly independent polynomials."""
    fexpr = y**4 - 2 * y + 1
    f5 = sympy.expand(S.modified_field_terms(5)[4])
    monomials = [sympy.Mul(*[m for m in term.as_ordered_factors() if not m.is_number])
                 for term in f5.as_ordered_terms()]
    assert len(monomials) == 5
    polys = [sympy.Poly(sympy.expand(S.substitute_field(m, fexpr)), y) for m in monomials]
    deg = max(p.degree() for p in polys)
    M = sympy.Matrix([[p.coeff_monomial(y**d) for d in range(deg + 1)] for p in polys])
    assert M.rank() == 5


def test_homogeneity_of_terms():
    """Every monomial of f_{k+1} has k+1 factors f^{(m)} and k derivatives in all (trees with
    k+1 nodes); each f_{k+1} holds exactly one principal monomial."""
    for k, term in enumerate(S.modified_field_terms(6)):
        monos = sympy.expand(term).as_ordered_terms()
        principal = 0
        for mono in monos:
            orders = S.derivative_orders(mono)
            assert len(orders) == k + 1 and sum(orders) == k
            principal += S.is_principal(mono)
        assert principal == 1


# ------------------------------------------------------------------------------------------------
# Principal terms
# ------------------------------------------------------------------------------------------------
def _rooted_trees(n):
    """All rooted trees with n nodes, as nested sorted tuples of children (brute force)."""
    if n == 1:
        return [()]
    out = set()

    def forests(m, max_tree=None):
        if m == 0:
            yield ()
            return
        for size in range(1, m + 1):
            for tree in _rooted_trees(size):
                key = (size, tree)
                if max_tree is not None and key > max_tree:
                    continue
                for rest in forests(m - size, key):
                    yield (key,) + rest

    for forest in forests(n - 1):
        out.add(tuple(sorted(t for _, t in forest)))
    return sorted(out)


def _out_degrees(tree):
    return [len(tree)] + [d for child in tree for d in _out_degrees(child)]


def test_tall_tree_is_the_only_tree_with_out_degrees_one():
    """Docstring claim of is_principal: among rooted trees with k+1 nodes, only the chain has
    out-degrees {1, …, 1, 0}, so the scalar coefficient of (f')^k f is the chain's coefficient."""
    counts = {1: 1, 2: 1, 3: 2, 4: 4, 5: 9, 6: 20, 7: 48}  # OEIS A000081
    for n, count in counts.items():
        trees = _rooted_trees(n)
        assert len(trees) == count
        tall = [t for t in trees if sorted(_out_degrees(t)) == [0] + [1] * (n - 1)]
        assert len(tall) == 1


def test_is_principal_and_principal_part():
    """eq-bea-principal-coefficients: principal monomials are (f')^k f, the principal part of f_{k+1}
    is c_k (f')^k f."""
    assert S.is_principal(fy)
    assert S.is_principal(3 * d1**4 * fy)
    assert not S.is_principal(d2 * fy**2)
    assert not S.is_principal(d1 * fy**2)
    assert not S.is_principal(d1**2)
    assert S.derivative_orders(d2 * d1 * fy**2) == (0, 0, 1, 2)
    for k, term in enumerate(S.modified_field_terms(5)):
        part = S.principal_part(term)
        assert sympy.expand(part - sympy.Rational((-1) ** k, k + 1) * d1**k * fy) == 0
        assert S.principal_coefficient(term, k) == sympy.Rational((-1) ** k, k + 1)
        # the remainder has no principal monomial left
        rest = sympy.expand(term - part)
        if rest != 0:
            assert not any(S.is_principal(m) for m in rest.as_ordered_terms())


@pytest.mark.parametrize("order", [5, 7])
def test_principal_coefficients(order):
    """eq-bea-principal-coefficients: c_k = (−1)^k/(k+1), k = 0 … order−1."""
    coeffs = S.principal_coefficients(order)
    assert coeffs == [sympy.Rational((-1) ** k, k + 1) for k in range(order)]
    # and read off the full terms the same way
    assert coeffs == [S.principal_coefficient(t, k)
                      for k, t in enumerate(S.modified_field_terms(order))]


def test_principal_terms_in_gradient_form_with_explicit_matrices():
    """eq-bea-principal-gradient: h^k c_k (f')^k f with f = −∇E, f' = −H is −h^k/(k+1) H^k ∇E.
    Substituted with a concrete symmetric 3×3 H and vector g."""
    order = 6
    terms, H, g = S.principal_terms_gradient(order, dim=3)
    rng = np.random.default_rng(0)
    A = rng.integers(-4, 5, size=(3, 3))
    Hm = sympy.Matrix(A + A.T)
    gm = sympy.Matrix(rng.integers(-3, 4, size=(3, 1)))
    for k, term in enumerate(terms):
        value = sympy.Matrix(term.subs({H: Hm, g: gm}).doit())
        expected = -(h**k) / (k + 1) * Hm**k * gm
        assert (value - expected).applyfunc(sympy.expand) == sympy.zeros(3, 1)
    # symbolic dimension by default
    terms_D, H_D, _ = S.principal_terms_gradient(3)
    assert H_D.shape[0].is_Symbol
    assert len(terms_D) == 3


def test_principal_series_sum():
    """eq-bea-principal-sum: Σ_k −x^k/(k+1) = log(1 − x)/x, checked against the BEA
    coefficients to x^6 and against the series of the closed form to x^9."""
    x = S.x
    closed = S.principal_series_sum()
    assert S.verify_principal_series(7)
    series = sympy.series(closed, x, 0, 10).removeO()
    assert sympy.expand(series - sum(-x**k / (k + 1) for k in range(10))) == 0
    # the closed form at a sample point inside the radius of convergence
    partial = sum(Fraction(-1, k + 1) * Fraction(1, 3) ** k for k in range(80))
    assert abs(float(closed.subs(x, sympy.Rational(1, 3))) - float(partial)) < 1e-14


def test_verify_principal_series_can_fail(monkeypatch):
    """The verifier is not vacuous: a wrong closed form is rejected."""
    monkeypatch.setattr(S, "principal_series_sum", lambda: sympy.log(1 + S.x) / S.x)
    assert not S.verify_principal_series(3)


# ------------------------------------------------------------------------------------------------
# IGR (first order) and the third-order term in gradient form
# ------------------------------------------------------------------------------------------------
def test_igr_identity_symbolic():
    """eq-bea-igr: −(h/2) H∇E = −∇((h/4)‖∇E‖²), on two concrete 2-D polynomial losses."""
    assert S.verify_igr_identity()
    a, b = sympy.symbols("a b", real=True)
    E = (a**2 - 1) ** 2 / 4 + (b - a**2) ** 2
    assert S.verify_igr_identity(E, [a, b])
    corr = S.igr_correction(E, [a, b])
    grad = sympy.Matrix([E.diff(a), E.diff(b)])
    expected = -h / 2 * sympy.hessian(E, [a, b]) * grad
    assert (corr - expected).applyfunc(sympy.simplify) == sympy.zeros(2, 1)
    reg = S.igr_regularizer(E, [a, b])
    assert sympy.simplify(reg - h / 4 * (grad.T * grad)[0]) == 0
    rhs = -sympy.Matrix([reg.diff(a), reg.diff(b)])
    assert (corr - rhs).applyfunc(sympy.simplify) == sympy.zeros(2, 1)


def _loss_2d(theta):
    """A non-quadratic 2-D loss for the numeric checks (analytic, curved valley)."""
    a, b = theta[0], theta[1]
    return (a**2 - 1) ** 2 / 4 + (b - a**2 / 2) ** 2 + 0.1 * a * b


def _fields_2d(h_):
    g = jax.grad(_loss_2d)

    def ngf(t):
        return -g(t)

    def igr(t):  # −∇(E + (h/4)‖∇E‖²)
        return -jax.grad(lambda s: _loss_2d(s) + h_ / 4 * jnp.sum(g(s) ** 2))(t)

    def third(t):  # −g − (h/2)Hg − (h²/3)H²g − (h²/12)∇³E(g, g)
        gt = g(t)
        hvp = lambda v: jax.jvp(g, (t,), (v,))[1]  # noqa: E731
        Hg = hvp(gt)
        d3 = jax.grad(lambda s: gt @ jax.jvp(g, (s,), (gt,))[1])(t)  # ∇_θ(gᵀH(θ)g), g fixed
        return -gt - h_ / 2 * Hg - h_**2 / 3 * hvp(Hg) - h_**2 / 12 * d3

    return {"ngf": ngf, "igr": igr, "third": third}


def test_one_step_error_orders_2d():
    """eq-bea-igr, eq-bea-error-order, eq-bea-third-gradient (exercise ex-bea-third, including the
    sign of the −(h²/12)∇³E(g, g) term): on a 2-D non-quadratic loss the
    exact time-h flow of NGF / IGR / the third-order field differs from one GD step by O(h²),
    O(h³), O(h⁴) — fitted log-log slopes within ±0.3."""
    theta0 = jnp.array([0.4, -0.7])
    g0 = jax.grad(_loss_2d)(theta0)
    hs = np.array([0.0125, 0.025, 0.05])
    errs = {}
    for name in ("ngf", "igr", "third"):
        # one compilation per field: h is a traced argument
        one_step = jax.jit(lambda t0, hv, name=name: _rk4_flow(_fields_2d(hv)[name], t0, hv, 100))
        errs[name] = [float(jnp.linalg.norm(one_step(theta0, hv) - (theta0 - hv * g0))) for hv in hs]
    for name, expected in (("ngf", 2), ("igr", 3), ("third", 4)):
        slope = _fitted_slope(hs, errs[name])
        assert abs(slope - expected) < 0.3, (name, slope, errs[name])


# ------------------------------------------------------------------------------------------------
# Numeric check of the order-5 field through JAX
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field_expr, y0",
    [(-sympy.sin(y), 0.5), (-(y + y**3), 0.7)],
)
def test_truncated_modified_field_one_step_error(field_expr, y0):
    """eq-bea-error-order: the exact time-h flow of f_1 + … + h^{N−1} f_N matches one Euler step
    up to O(h^{N+1}): fitted slope ≈ 6 for N = 5, ≈ 2 for N = 1 (gradient flow), ≈ 3 for N = 2."""
    hs = np.array([0.025, 0.05, 0.1])
    for order, expected in ((5, 6), (1, 2), (2, 3)):
        errs = _scalar_one_step_errors(field_expr, order, y0, hs)
        assert np.all(errs > 1e-13), errs  # well above round-off and RK4 error
        slope = _fitted_slope(hs, errs)
        assert abs(slope - expected) < 0.5, (order, slope, errs)


# ------------------------------------------------------------------------------------------------
# Bad input, order 7
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True, None])
def test_bad_order_raises(bad):
    for fn in (S.modified_field_terms, S.modified_field, S.principal_coefficients,
               S.principal_terms_gradient, S.verify_principal_series):
        with pytest.raises(ValueError, match="positive integer"):
            fn(bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="non-negative integer"):
        S.principal_coefficient(fy, -1)
    with pytest.raises(ValueError, match="polynomial in f"):
        S.principal_part(sympy.sin(y) * fy)
    with pytest.raises(ValueError, match="single monomial"):
        S.derivative_orders(fy + d1)
    with pytest.raises(ValueError, match="parameters"):
        S.verify_igr_identity(y**2)


def test_numpy_integer_order_is_accepted():
    assert S.principal_coefficients(np.int64(3)) == [1, sympy.Rational(-1, 2), sympy.Rational(1, 3)]


def test_order_7_works():
    """Order 7 is computed (its timing is in benchmarks/symbolic_benchmark.py, not here): seven terms,
    and the principal coefficient of h^6 f_7 is (-1)^6 / 7."""
    terms7 = S.modified_field_terms(7)
    assert len(terms7) == 7
    assert S.principal_coefficients(7)[6] == sympy.Rational(1, 7)
