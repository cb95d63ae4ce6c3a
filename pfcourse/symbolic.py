r"""Backward error analysis (BEA) of explicit Euler, in SymPy, to any order.

Gradient descent ``θ_{n+1} = θ_n − h∇E(θ_n)`` is explicit Euler ``y_{n+1} = y_n + h f(y_n)`` on the
gradient flow ``f = −∇E``. Backward error analysis asks which differential equation the iterates
follow *exactly*: it looks for a modified vector field

.. math::

    f_h = f_1 + h f_2 + h^2 f_3 + \dots, \qquad f_1 = f,

whose exact time-``h`` flow equals one Euler step, ``φ_h^{f_h}(y) = y + h f(y)``, to all orders in
``h``. Writing ``L g = g' f_h`` for the Lie derivative along ``f_h``, the flow's Taylor series is

.. math::

    φ_h^{f_h}(y) = y + \sum_{j \ge 1} \frac{h^j}{j!} L^{j-1} f_h(y),

and matching powers of ``h`` with ``y + h f(y)`` gives ``f_2, f_3, …`` one after the other:

.. math::

    f_n = -\sum_{j=2}^{n} \frac{1}{j!} [h^{n-j}]\, L^{j-1} (f_1 + h f_2 + \dots + h^{n-2} f_{n-1}).

This module does the computation in the scalar case ``y ∈ R``, with ``f`` an undefined function
(:data:`f`) of :data:`y`. Internally every expression is a polynomial in the jet variables
``f, f', f'', …`` (and ``h``), differentiated by the total derivative ``D f^{(k)} = f^{(k+1)}``,
with powers of ``h`` above the one needed dropped after every product; order 5 takes milliseconds.

The scalar case is enough for the *principal terms* ``(f')^k f`` (see :func:`is_principal`), which
sum to the principal flow (book, chapter 3). Everything here is exact rational arithmetic.

Book: chapter 2, "Backward error analysis".

References:
    Hairer, Lubich, Wanner, *Geometric Numerical Integration*, 2nd ed., Springer 2006, chapter IX.
    Barrett and Dherin, *Implicit Gradient Regularization*, ICLR 2021.
    Rosca, Wu, Qin, Dherin, *On a continuous time model of gradient descent dynamics and
    instability in deep learning*, TMLR 2023 (arXiv 2302.01952).
"""
from __future__ import annotations

import functools
import math

import sympy
from sympy.polys.domains import QQ
from sympy.polys.rings import ring

from ._checks import check_int

__all__ = [
    "y",
    "h",
    "x",
    "f",
    "modified_field_terms",
    "modified_field",
    "substitute_field",
    "prime_notation",
    "derivative_orders",
    "is_principal",
    "principal_part",
    "principal_coefficient",
    "principal_coefficients",
    "principal_terms_gradient",
    "principal_series_sum",
    "verify_principal_series",
    "igr_correction",
    "igr_regularizer",
    "verify_igr_identity",
]

#: The state variable of the scalar ODE ``y' = f(y)``.
y = sympy.Symbol("y", real=True)
#: The step size (learning rate).
h = sympy.Symbol("h", positive=True)
#: The variable of the principal series, ``x = hλ`` (see :func:`principal_series_sum`).
x = sympy.Symbol("x")
#: The vector field, an undefined function: ``f(y)``, ``f(y).diff(y)``, … build expressions.
f = sympy.Function("f")


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _check_order(order, name: str = "order") -> int:
    """Return ``order`` as an ``int`` ≥ 1, or raise a ``ValueError`` saying what to pass."""
    return check_int(order, name, hint="It is the number of BEA terms: 1 = gradient flow, 2 = IGR, "
                     "5 = up to h^4 f_5.")


# ----------------------------------------------------------------------------------------------
# The BEA recursion on jet polynomials
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _jet_ring(order: int):
    """The ring ``QQ[h, f0, …, f_{order+1}]`` where ``f_k`` stands for the k-th derivative of f."""
    names = ["h"] + [f"f{k}" for k in range(order + 2)]
    R, *gens = ring(names, QQ)
    return R, gens[0], tuple(gens[1:])


def _total_derivative(p, jets):
    """``D p = Σ_k (∂p/∂f_k) f_{k+1}``: the derivative in y of a polynomial in the jets of f."""
    top = jets[-1]
    if p.diff(top) != 0:  # pragma: no cover - the ring is sized so that this never happens
        raise RuntimeError("jet ring too small; please report this as a bug")
    out = p.ring.zero
    for k in range(len(jets) - 1):
        dk = p.diff(jets[k])
        if dk:
            out += dk * jets[k + 1]
    return out


def _truncate_h(p, max_degree: int):
    """Drop the terms of ``p`` whose power of h exceeds ``max_degree``."""
    return p.ring({m: c for m, c in p.items() if m[0] <= max_degree})


def _h_coefficient(p, degree: int):
    """``[h^degree] p``, as a polynomial in the jets (h set to zero in the monomial)."""
    return p.ring({(0,) + m[1:]: c for m, c in p.items() if m[0] == degree})


@functools.lru_cache(maxsize=None)
def _modified_field_polys(order: int):
    """``(f_1, …, f_order)`` as jet polynomials, by matching the flow of ``f_h`` with one Euler step.

    At power ``h^n`` the exact flow ``y + Σ_j h^j/j! L^{j-1} f_h`` contributes ``f_n`` (from j = 1)
    plus terms built from ``f_1 … f_{n-1}`` only (j ≥ 2); one Euler step contributes nothing for
    n ≥ 2. So ``f_n = −Σ_{j=2}^n [h^{n-j}] L^{j-1} F_{n-1} / j!`` with ``F_{n-1} = Σ_{k<n} h^{k-1} f_k``.
    """
    R, hh, jets = _jet_ring(order)
    terms = [jets[0]]  # f_1 = f
    for n in range(2, order + 1):
        F = R.zero
        for k, fk in enumerate(terms):
            F += hh**k * fk
        lie = F  # L^{j-1} F, truncated to the powers of h still needed
        acc = R.zero
        for j in range(2, n + 1):
            lie = _truncate_h(_total_derivative(lie, jets) * F, n - j)
            acc += _h_coefficient(lie, n - j) * QQ(1, math.factorial(j))
        terms.append(-acc)
    return tuple(terms)


@functools.lru_cache(maxsize=None)
def _jet_exprs(n: int):
    """SymPy expressions ``f(y), f'(y), …`` for the first ``n`` jets."""
    return tuple(f(y) if k == 0 else sympy.Derivative(f(y), (y, k)) for k in range(n))


def _poly_to_expr(p, order: int) -> sympy.Expr:
    """A jet polynomial (no h) as a SymPy expression in ``f(y)`` and its derivatives."""
    jets = _jet_exprs(order + 2)
    out = []
    for monom, coeff in p.terms():
        term = sympy.Rational(coeff.numerator, coeff.denominator)
        for k, e in enumerate(monom[1:]):
            if e:
                term *= jets[k] ** e
        out.append(term)
    return sympy.Add(*out)


def modified_field_terms(order: int) -> list[sympy.Expr]:
    r"""The terms ``[f_1, …, f_order]`` of the modified field of explicit Euler, scalar case.

    Solves, order by order in ``h``, the backward error analysis equation (book: chapter 2,
    §"Modified equations", equations ``eq-bea-modified-field`` and ``eq-bea-flow-series``)

    .. math::

        y + \sum_{j\ge 1} \frac{h^j}{j!} L^{j-1} f_h(y) = y + h f(y), \qquad
        f_h = \sum_{k\ge 1} h^{k-1} f_k,\quad L g = g' f_h,

    for ``f_1 = f, f_2 = −½ f'f, f_3 = ⅓ f'^2 f + 1/12 f'' f^2, …``.

    Args:
        order: how many terms, ``≥ 1``. Order 5 takes milliseconds, order 7 well under a second.

    Returns:
        A list of ``order`` SymPy expressions in ``f(y)`` and its derivatives ``Derivative(f(y),
        (y, k))``, with exact rational coefficients; entry ``k`` multiplies ``h^k`` in ``f_h``.

    Raises:
        ValueError: if ``order`` is not an integer ``≥ 1``.

    References:
        Hairer, Lubich, Wanner (2006), §IX.1.
    """
    order = _check_order(order)
    return [_poly_to_expr(p, order) for p in _modified_field_polys(order)]


def modified_field(order: int) -> sympy.Expr:
    r"""The truncated modified field ``f_1 + h f_2 + … + h^{order−1} f_order`` as one expression.

    Book: chapter 2, equation ``eq-bea-modified-field``. ``order = 1`` is the gradient flow,
    ``order = 2`` implicit gradient regularisation (IGR). The exact flow of the result over time
    ``h`` differs from one Euler step by ``O(h^{order+1})``.

    Args:
        order: number of terms kept, ``≥ 1``.

    Returns:
        A SymPy expression in :data:`h`, ``f(y)`` and the derivatives of ``f``.

    Raises:
        ValueError: if ``order`` is not an integer ``≥ 1``.
    """
    terms = modified_field_terms(order)
    return sympy.Add(*[h**k * t for k, t in enumerate(terms)])


def substitute_field(expr: sympy.Expr, field: sympy.Expr) -> sympy.Expr:
    r"""Replace the abstract ``f`` in ``expr`` by a concrete field ``field(y)``.

    Every ``Derivative(f(y), (y, k))`` becomes ``d^k field / dy^k`` and ``f(y)`` becomes ``field``.
    Use it to turn :func:`modified_field` into a formula for, e.g., ``f(y) = −sin y``.

    Args:
        expr: an expression built from :data:`f`, :data:`y` (and :data:`h`).
        field: a SymPy expression in :data:`y`.

    Returns:
        ``expr`` with ``f`` replaced, derivatives evaluated.
    """
    field = sympy.sympify(field)
    derivs = sorted(expr.atoms(sympy.Derivative), key=lambda d: -d.derivative_count)
    table = {}
    for d in derivs:
        if d.expr != f(y) or set(d.variables) != {y}:
            raise ValueError(f"substitute_field expects derivatives of f(y) in y only, found {d}.")
        table[d] = sympy.diff(field, y, d.derivative_count)
    table[f(y)] = field
    return expr.xreplace(table)


def prime_notation(expr: sympy.Expr) -> sympy.Expr:
    r"""``expr`` with ``f(y), f'(y), …`` replaced by plain symbols ``f, f', f'', f''', f^{(4)}, …``.

    For display only: ``sympy.latex`` of the result reads like the book (``f'' f^2/12`` instead of
    derivative operators). The symbols commute, so read the products as scalar products.

    Args:
        expr: an expression in ``f(y)`` and its derivatives.

    Returns:
        The same expression in the symbols.
    """
    table = {}
    for d in expr.atoms(sympy.Derivative):
        k = d.derivative_count
        table[d] = sympy.Symbol("f" + "'" * k if k <= 3 else f"f^{{({k})}}")
    table[f(y)] = sympy.Symbol("f")
    return expr.xreplace(table)


# ----------------------------------------------------------------------------------------------
# Principal terms
# ----------------------------------------------------------------------------------------------
def _monomials(term: sympy.Expr, max_jet: int | None = None):
    """Split ``term`` into ``{derivative-order exponents: coefficient}``, checking its form."""
    term = sympy.expand(sympy.sympify(term))
    derivs = term.atoms(sympy.Derivative)
    top = max([d.derivative_count for d in derivs], default=0)
    if max_jet is not None:
        top = max(top, max_jet)
    syms = sympy.symbols(f"_j0:{top + 1}")
    table = {}
    for d in derivs:
        if d.expr != f(y) or set(d.variables) != {y}:
            raise ValueError(f"expected derivatives of f(y) in y only, found {d}.")
        table[d] = syms[d.derivative_count]
    table[f(y)] = syms[0]
    replaced = term.xreplace(table)
    if replaced.has(y) or replaced.has(f):
        raise ValueError(
            "expected a polynomial in f(y) and its derivatives (as from modified_field_terms), "
            f"got {term}."
        )
    poly = sympy.Poly(replaced, *syms)
    return dict(poly.terms())


def derivative_orders(monomial: sympy.Expr) -> tuple[int, ...]:
    r"""The sorted derivative orders of the factors of a monomial in ``f`` and its derivatives.

    ``f'' f' f^2 ↦ (0, 0, 1, 2)``. In several dimensions an elementary differential is a rooted
    tree whose nodes carry ``f^{(m)}``, ``m`` = number of children; in one dimension it becomes the
    product of the ``f^{(m)}``, so the derivative orders are the tree's out-degrees (book: chapter 2,
    §"Principal terms").

    Args:
        monomial: a product of powers of ``f(y)`` and its derivatives (a coefficient is ignored).

    Returns:
        A tuple of non-negative integers, one per factor, sorted ascending.

    Raises:
        ValueError: if ``monomial`` is a sum or not built from ``f``.
    """
    terms = _monomials(monomial)
    if len(terms) != 1:
        raise ValueError(f"expected a single monomial, got {len(terms)} terms: {monomial}.")
    (exps,) = terms
    return tuple(k for k, e in enumerate(exps) for _ in range(e))


def is_principal(monomial: sympy.Expr) -> bool:
    r"""Whether a monomial is a principal term ``(f')^k f`` (only ``f`` and ``f'`` appear, f once).

    Why the scalar case reads these off correctly: the modified field of any B-series method,
    explicit Euler included, is a B-series ``Σ_τ c(τ) h^{|τ|−1} F(τ)`` over rooted trees ``τ``,
    with coefficients ``c(τ)`` that do not depend on the dimension. In one dimension the elementary
    differential ``F(τ)`` collapses to ``Π_nodes f^{(children)}``, so trees of different shape but
    the same out-degrees merge (``f' f''(f, f)`` and ``f''(f, f' f)`` both become ``f'' f' f^2``).
    The tall tree ``(f')^k f`` — a chain — is the *only* tree with out-degrees ``{1, …, 1, 0}``:
    any other tree has a node with two or more children, hence a factor ``f^{(m)}, m ≥ 2``. So
    the scalar coefficient of ``(f')^k f`` is exactly the chain's coefficient in any dimension.

    Book: chapter 2, §"Principal terms".

    Args:
        monomial: a product of powers of ``f(y)`` and its derivatives (a coefficient is ignored).

    Returns:
        ``True`` for ``f, f'f, f'^2 f, …``; ``False`` otherwise.
    """
    orders = derivative_orders(monomial)
    return orders.count(0) == 1 and all(o <= 1 for o in orders)


def principal_part(term: sympy.Expr) -> sympy.Expr:
    r"""The principal part of a BEA term: its monomials of the form ``c (f')^k f``.

    For ``f_{k+1}`` (every monomial of which has ``k+1`` factors and ``k`` derivatives in all)
    this is the single term ``c_k (f')^k f``; the rest involves ``f''`` or higher.

    Book: chapter 2, §"Principal terms".

    Args:
        term: a polynomial in ``f(y)`` and its derivatives, e.g. an entry of
            :func:`modified_field_terms`.

    Returns:
        The sum of its principal monomials (``0`` if none).
    """
    out = []
    for exps, coeff in _monomials(term).items():
        if exps[0] == 1 and all(e == 0 for e in exps[2:]):
            out.append(coeff * _jet_exprs(2)[1] ** exps[1] * f(y) if len(exps) > 1 else coeff * f(y))
    return sympy.Add(*out)


def principal_coefficient(term: sympy.Expr, k: int) -> sympy.Rational:
    r"""The coefficient of ``(f')^k f`` in ``term``.

    Book: chapter 2, §"Principal terms".

    Args:
        term: a polynomial in ``f(y)`` and its derivatives.
        k: the power of ``f'``, ``≥ 0``.

    Returns:
        A SymPy rational (``0`` if the monomial is absent).
    """
    k = check_int(k, "k", minimum=0, hint="It is the power of f'.")
    key = (1, k)
    for exps, coeff in _monomials(term, max_jet=1).items():
        if exps[:2] == key and all(e == 0 for e in exps[2:]):
            return sympy.Rational(coeff)
    return sympy.Integer(0)


def principal_coefficients(order: int) -> list[sympy.Rational]:
    r"""Coefficients ``c_k`` of ``(f')^k f`` in ``f_{k+1}``, for ``k = 0 … order−1``.

    Read off :func:`modified_field_terms`; they come out as ``c_k = (−1)^k/(k+1)``
    (book: chapter 2, equation ``eq-bea-principal-coefficients``), the Taylor coefficients of
    ``log(1 + z)/z``: for the linear field ``f(y) = a y`` the modified equation is exactly
    ``y' = log(1 + ha)/h · y``.

    Args:
        order: how many coefficients, ``≥ 1``.

    Returns:
        A list of SymPy rationals ``[1, −1/2, 1/3, −1/4, …]``.

    Raises:
        ValueError: if ``order`` is not an integer ``≥ 1``.
    """
    order = _check_order(order)
    out = []
    for k, p in enumerate(_modified_field_polys(order)):
        exps = (0,) + (1, k) + (0,) * (len(p.ring.gens) - 3)
        c = p.get(exps, QQ(0))
        out.append(sympy.Rational(c.numerator, c.denominator))
    return out


def principal_terms_gradient(order: int, dim: int | sympy.Symbol | None = None):
    r"""The principal terms of the modified field of gradient descent, in matrix form.

    With ``f = −∇E`` the Jacobian is ``f' = −H`` (``H`` the Hessian of ``E``) and the tall tree
    ``(f')^k f`` is the matrix product ``(−H)^k (−∇E)``. Its term ``h^k c_k (f')^k f`` becomes

    .. math::

        h^k c_k (-1)^{k+1} H^k ∇E = -\frac{h^k}{k+1} H^k ∇E

    (book: chapter 2, equation ``eq-bea-principal-gradient``), with ``c_k`` from
    :func:`principal_coefficients`, not typed in.

    Args:
        order: how many terms, ``≥ 1``.
        dim: the dimension ``D`` of θ; an int, a SymPy symbol, or ``None`` for a symbol ``D``.

    Returns:
        ``(terms, H, g)``: ``terms`` a list of SymPy matrix expressions ``[−g, −h/2 H g,
        −h^2/3 H^2 g, …]`` in the :class:`sympy.MatrixSymbol` ``H`` (D×D) and ``g`` (D×1, the
        gradient ``∇E``) and the symbol :data:`h`; then ``H`` and ``g`` themselves, so callers can
        substitute concrete matrices.

    Raises:
        ValueError: if ``order`` is not an integer ``≥ 1``.
    """
    coeffs = principal_coefficients(order)
    if dim is None:
        dim = sympy.Symbol("D", integer=True, positive=True)
    H = sympy.MatrixSymbol("H", dim, dim)
    g = sympy.MatrixSymbol("g", dim, 1)
    fprime, fvec = -H, -g
    terms = []
    for k, c in enumerate(coeffs):
        chain = fvec
        for _ in range(k):
            chain = fprime * chain  # (f')^k f as a chain of matrix products
        terms.append(sympy.MatMul(c * h**k, chain).doit())
    return terms, H, g


def principal_series_sum() -> sympy.Expr:
    r"""The sum of the principal series in gradient form, per eigen-direction: ``log(1 − x)/x``.

    Along an eigenvector of ``H`` with eigenvalue ``λ`` the principal terms
    ``−h^k/(k+1) H^k ∇E`` multiply ``∇E`` by ``Σ_k −x^k/(k+1)`` with ``x = hλ``, and

    .. math::

        \sum_{k\ge 0} -\frac{x^k}{k+1} = \frac{\log(1 - x)}{x}, \qquad |x| < 1,

    (book: chapter 2, equation ``eq-bea-principal-sum``; chapter 3 builds the principal flow on
    it). Check the match with the BEA coefficients with :func:`verify_principal_series`.

    Returns:
        ``log(1 − x)/x`` in the symbol :data:`x`.
    """
    return sympy.log(1 - x) / x


def verify_principal_series(order: int) -> bool:
    r"""Whether the Taylor series of :func:`principal_series_sum` matches BEA to ``x^{order−1}``.

    Compares ``[x^k] log(1 − x)/x`` with the gradient-form coefficient ``(−1)^{k+1} c_k`` of
    ``h^k H^k ∇E``, ``c_k`` from :func:`principal_coefficients`, for ``k = 0 … order−1``.

    Args:
        order: how many coefficients to compare, ``≥ 1``.

    Returns:
        ``True`` if all match exactly.

    Raises:
        ValueError: if ``order`` is not an integer ``≥ 1``.
    """
    coeffs = principal_coefficients(order)
    series = sympy.series(principal_series_sum(), x, 0, order).removeO()
    poly = sympy.Poly(series, x)
    return all(
        sympy.simplify(poly.coeff_monomial(x**k) - (-1) ** (k + 1) * c) == 0
        for k, c in enumerate(coeffs)
    )


# ----------------------------------------------------------------------------------------------
# Implicit gradient regularisation (first order)
# ----------------------------------------------------------------------------------------------
def _default_loss():
    t1, t2 = sympy.symbols("theta1 theta2", real=True)
    E = t1**4 / 4 - t1**2 / 2 + t1 * t2 + t2**2 + t1**2 * t2**2 / 2
    return E, [t1, t2]


def igr_correction(E: sympy.Expr, variables) -> sympy.Matrix:
    r"""The first-order BEA term of gradient descent: ``h f_2 = −(h/2) H ∇E`` for a concrete ``E``.

    Derived from :func:`principal_coefficients`: ``f_2 = c_1 f'f`` with ``f = −∇E``, ``f' = −H``, so
    ``h f_2 = c_1 h H ∇E`` with ``c_1 = −1/2`` (book: chapter 2, equation ``eq-bea-igr``).

    Args:
        E: a SymPy expression, the loss.
        variables: the parameters θ, a sequence of SymPy symbols.

    Returns:
        A column :class:`sympy.Matrix` in ``variables`` and :data:`h`.
    """
    variables = list(variables)
    c1 = principal_coefficients(2)[1]
    grad = sympy.Matrix([sympy.diff(E, v) for v in variables])
    hess = sympy.hessian(E, variables)
    return c1 * h * (-hess) * (-grad)


def igr_regularizer(E: sympy.Expr, variables) -> sympy.Expr:
    r"""The IGR penalty ``(h/4)‖∇E‖²``: the IGR flow is ``θ' = −∇(E + (h/4)‖∇E‖²)``.

    Since ``∇(½‖∇E‖²) = H∇E``, the term ``c_1 h H ∇E`` of :func:`igr_correction` is
    ``−∇(−(c_1 h/2)‖∇E‖²)``, i.e. the penalty ``(h/4)‖∇E‖²`` (Barrett and Dherin, ICLR 2021;
    book: chapter 2, equation ``eq-bea-igr``).

    Args:
        E: a SymPy expression, the loss.
        variables: the parameters θ, a sequence of SymPy symbols.

    Returns:
        A SymPy scalar expression.
    """
    variables = list(variables)
    c1 = principal_coefficients(2)[1]
    grad = sympy.Matrix([sympy.diff(E, v) for v in variables])
    return -c1 * h / 2 * grad.dot(grad)


def verify_igr_identity(E: sympy.Expr | None = None, variables=None) -> bool:
    r"""Check ``−(h/2) H∇E = −∇((h/4)‖∇E‖²)`` symbolically (``simplify(lhs − rhs) == 0``).

    Args:
        E: a SymPy loss; default a non-quadratic 2-D polynomial
            ``θ₁⁴/4 − θ₁²/2 + θ₁θ₂ + θ₂² + θ₁²θ₂²/2``.
        variables: its parameters (required with ``E``).

    Returns:
        ``True`` if :func:`igr_correction` equals minus the gradient of :func:`igr_regularizer`.
    """
    if E is None:
        E, variables = _default_loss()
    elif variables is None:
        raise ValueError("pass the loss's parameters too: verify_igr_identity(E, [theta1, theta2]).")
    variables = list(variables)
    lhs = igr_correction(E, variables)
    reg = igr_regularizer(E, variables)
    rhs = -sympy.Matrix([sympy.diff(reg, v) for v in variables])
    return all(sympy.simplify(d) == 0 for d in (lhs - rhs))
