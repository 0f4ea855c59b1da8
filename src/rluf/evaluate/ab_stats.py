"""`rluf abtest analyze` / `rluf abtest power`: A/B statistics on the store, real or simulated.

Users, not turns, are randomised, so turns of one user are correlated: a per-impression binomial interval is
too narrow. The love rate per impression of an arm is a ratio of per-user sums, R = Σ loves_u / Σ turns_u,
and its variance comes from the delta method over users (or a user-level bootstrap). The relative lift
R_B / R_A − 1 gets its interval on the log scale, where the ratio of two independent estimates is a
difference. Hand-written because statsmodels has no clustered ratio-metric lift; the building blocks
(normal quantiles, chi-square) come from scipy.

`method="twoway"` clusters by user *and* by answer (statsmodels' two-way cluster-robust covariance): when a
policy answers from a small bank of answers per prompt, as in the simulated A/B tests, every user of an arm
meets the same few answers and the user-only interval is too narrow (in the tests' A/A case it covered the
truth 54 % of the time, the two-way one 91 %). On production logs, where every answer is new, both agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import select

DAY_MS = 86_400_000


@dataclass
class ArmData:
    """Per-user sums of one arm: impressions (turns shown), loves, continued turns, dislikes, unsafe turns."""

    users: np.ndarray
    turns: np.ndarray
    loves: np.ndarray
    continued: np.ndarray
    dislikes: np.ndarray
    unsafe: np.ndarray


def ratio_var(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """(R = Σnum/Σden, Var(R)) by the delta method over independent users."""
    n = len(num)
    r = num.sum() / den.sum()
    if n < 2:
        return float(r), float("nan")
    mean_den = den.mean()
    cov = np.cov(num, den, ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * mean_den**2)
    return float(r), float(max(var, 0.0))


def relative_change(a_num, a_den, b_num, b_den, alpha: float = 0.05, method: str = "delta", n_boot: int = 2000,
                    seed: int = 0) -> dict[str, float]:
    """Relative change of B vs A in a ratio metric, CI and two-sided p-value (H0: no change)."""
    ra, va = ratio_var(a_num, a_den)
    rb, vb = ratio_var(b_num, b_den)
    if method != "bootstrap" or not (ra > 0 and rb > 0):
        return lift_interval(ra, va, rb, vb, alpha)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a_num), size=(n_boot, len(a_num)))
    ib = rng.integers(0, len(b_num), size=(n_boot, len(b_num)))
    ba = a_num[ia].sum(1) / np.maximum(a_den[ia].sum(1), 1e-12)
    bb = b_num[ib].sum(1) / np.maximum(b_den[ib].sum(1), 1e-12)
    lifts = bb / np.maximum(ba, 1e-12) - 1
    lo, hi = np.quantile(lifts, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(np.mean(lifts <= 0), np.mean(lifts >= 0)) + 1 / n_boot)
    return {"control": ra, "treatment": rb, "rel_change": float(rb / ra - 1), "ci_low": float(lo),
            "ci_high": float(hi), "p_value": float(p)}


def _turns_query(arms: tuple[str, ...], reaction: str, window_hours: float):
    """One row per turn of the arms: policy, user, response id, hit (the reaction counted), continued, dislike.

    A turn counts a reaction when its own user left it within the window and did not withdraw it: the latest
    event of that user, turn and reaction inside the window is not a withdrawal (a withdrawal after the
    window does not undo a reaction the window already counted). A turn is continued when its conversation
    has a later turn_index (not necessarily +1: imported logs may number messages, not assistant turns).
    """
    from sqlalchemy import and_, case, false, func

    from rluf.store.schema import reactions, responses

    r, x = responses, reactions
    window = int(window_hours * 3_600_000)
    kinds = sorted({reaction, "dislike"})
    # Latest in-window event of the turn's own user per (turn, reaction); row_number() runs on SQLite ≥ 3.25
    # and PostgreSQL alike.
    ranked = (
        select(x.c.response_id, x.c.reaction, x.c.removed,
               func.row_number().over(partition_by=(x.c.response_id, x.c.reaction),
                                      order_by=(x.c.created_at_ms.desc(), x.c.id.desc())).label("rn"))
        .select_from(x.join(r, and_(r.c.response_id == x.c.response_id, r.c.user_id == x.c.user_id)))
        .where(r.c.policy.in_(arms), x.c.reaction.in_(kinds), x.c.created_at_ms >= r.c.created_at_ms,
               x.c.created_at_ms <= r.c.created_at_ms + window)
    ).subquery()
    net = (
        select(ranked.c.response_id,
               func.max(case((ranked.c.reaction == reaction, 1), else_=0)).label("hit"),
               func.max(case((ranked.c.reaction == "dislike", 1), else_=0)).label("dislike"))
        .where(ranked.c.rn == 1, ranked.c.removed == false())
        .group_by(ranked.c.response_id)
    ).subquery()
    last = (select(r.c.conversation_id, func.max(r.c.turn_index).label("last_turn"))
            .where(r.c.policy.in_(arms)).group_by(r.c.conversation_id)).subquery()
    return (
        select(r.c.policy, r.c.user_id, r.c.response_id, func.coalesce(net.c.hit, 0).label("hit"),
               case((r.c.turn_index < last.c.last_turn, 1), else_=0).label("continued"),
               func.coalesce(net.c.dislike, 0).label("dislike"))
        .select_from(r.join(last, last.c.conversation_id == r.c.conversation_id)
                     .outerjoin(net, net.c.response_id == r.c.response_id))
        .where(r.c.policy.in_(arms))
    )


def _unsafe_turns(conn: Any, arms: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """response_id → (policy, user) of the turns flagged unsafe in their metadata."""
    from rluf.store.schema import responses as r

    # Unsafe flags live in a JSON text column whose functions differ between dialects: a LIKE narrows the
    # rows in SQL, json.loads decides.
    flagged = (select(r.c.response_id, r.c.policy, r.c.user_id, r.c.metadata)
               .where(r.c.policy.in_(arms), r.c.metadata.like('%"unsafe"%')))
    return {rid: (pol, uid) for rid, pol, uid, meta in conn.execute(flagged) if json.loads(meta).get("unsafe")}


def _check_arms(conn: Any, arms: tuple[str, ...], have: set[str]) -> None:
    from rluf.store.schema import responses as r

    missing = [a for a in arms if a not in have]
    if missing:
        found = sorted(v for (v,) in conn.execute(select(r.c.policy).distinct()))
        raise ValueError(f"no traffic for arm(s) {missing} in the store; arms found: {found}")


def load_arms(engine: Any, arms: tuple[str, ...], reaction: str = "love", window_hours: float = 24.0
              ) -> dict[str, ArmData]:
    """Per-user sums for each arm from the store, aggregated in SQL (one row per arm and user comes back);
    what counts as a reaction and a continued turn: `_turns_query`."""
    from sqlalchemy import func

    t = _turns_query(arms, reaction, window_hours).subquery()
    per_user = (select(t.c.policy, t.c.user_id, func.count().label("turns"), func.sum(t.c.hit).label("hits"),
                       func.sum(t.c.continued).label("continued"), func.sum(t.c.dislike).label("dislikes"))
                .group_by(t.c.policy, t.c.user_id))
    with engine.connect() as c:
        rows = c.execute(per_user).all()
        unsafe: dict[tuple[str, str], int] = {}
        for key in _unsafe_turns(c, arms).values():
            unsafe[key] = unsafe.get(key, 0) + 1
        _check_arms(c, arms, {row.policy for row in rows})
    out = {}
    for arm in arms:
        mine = [row for row in rows if row.policy == arm]
        m = np.array([(row.turns, row.hits, row.continued, row.dislikes, unsafe.get((arm, row.user_id), 0))
                      for row in mine], dtype=float).reshape(-1, 5)
        out[arm] = ArmData(np.array([row.user_id for row in mine]), m[:, 0], m[:, 1], m[:, 2], m[:, 3], m[:, 4])
    return out


@dataclass
class ArmTurns:
    """One entry per turn of one arm: who saw it, which answer it was (a hash of the text), and its outcomes."""

    users: np.ndarray
    answers: np.ndarray
    loves: np.ndarray
    continued: np.ndarray
    dislikes: np.ndarray
    unsafe: np.ndarray


def load_turns(engine: Any, arms: tuple[str, ...], reaction: str = "love", window_hours: float = 24.0
               ) -> dict[str, ArmTurns]:
    """Per-turn outcomes of each arm (same counting as `load_arms`), with each answer's identity."""
    import hashlib

    from rluf.store.schema import responses as r

    t = _turns_query(arms, reaction, window_hours).subquery()
    q = select(t, r.c.response).join(r, r.c.response_id == t.c.response_id)
    with engine.connect() as c:
        rows = c.execute(q).all()
        unsafe = _unsafe_turns(c, arms)
        _check_arms(c, arms, {row.policy for row in rows})
    out = {}
    for arm in arms:
        mine = [row for row in rows if row.policy == arm]
        out[arm] = ArmTurns(
            users=np.array([row.user_id for row in mine]),
            answers=np.array([hashlib.blake2b((row.response or "").encode(), digest_size=8).hexdigest()
                              for row in mine]),
            loves=np.array([row.hit for row in mine], dtype=float),
            continued=np.array([row.continued for row in mine], dtype=float),
            dislikes=np.array([row.dislike for row in mine], dtype=float),
            unsafe=np.array([row.response_id in unsafe for row in mine], dtype=float))
    return out


def _per_user(t: ArmTurns) -> ArmData:
    users, idx = np.unique(t.users, return_inverse=True)

    def sums(x: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=x, minlength=len(users))

    return ArmData(users, sums(np.ones(len(idx))), sums(t.loves), sums(t.continued), sums(t.dislikes),
                   sums(t.unsafe))


def twoway_rate_var(y: np.ndarray, users: np.ndarray, answers: np.ndarray) -> tuple[float, float]:
    """(rate per impression, Var) with standard errors clustered two ways, by user and by answer (Cameron,
    Gelbach & Miller 2011, through statsmodels' OLS on an intercept). Turns that share an answer are
    correlated as much as turns that share a user when a policy answers from a small bank — as the simulated
    A/B tests do — and the user-only interval misses that. A negative two-way estimate (possible in small
    samples) falls back to the larger one-way variance, as CGM advise."""
    import statsmodels.api as sm

    n = len(y)
    if n < 2:
        return (float(y.mean()) if n else float("nan")), float("nan")
    codes = [np.unique(g, return_inverse=True)[1] for g in (users, answers)]
    x = np.ones((n, 1))

    def var(groups) -> float:
        fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups})
        return float(fit.cov_params()[0, 0])

    # A dimension with a single group carries no clustering information (and statsmodels' G / (G − 1)
    # factor divides by zero): cluster by the other one alone.
    usable = [c for c in codes if c.max() >= 1]
    if not usable:
        return float(y.mean()), float("nan")
    v = var(np.column_stack(codes)) if len(usable) == 2 else float("nan")
    if not v > 0:
        v = max(var(c) for c in usable)
    return float(y.mean()), v


def lift_interval(ra: float, va: float, rb: float, vb: float, alpha: float = 0.05) -> dict[str, float]:
    """Relative change rb / ra − 1 of two independent rate estimates with their variances: CI on the log
    scale (Var(log R) ≈ Var(R) / R²) and the two-sided p-value of no change."""
    if not (ra > 0 and rb > 0):
        return {"control": ra, "treatment": rb, "rel_change": float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan"), "p_value": float("nan")}
    z = stats.norm.ppf(1 - alpha / 2)
    se = np.sqrt(va / ra**2 + vb / rb**2)
    log_lift = np.log(rb / ra)
    p = float(2 * stats.norm.sf(abs(log_lift) / se)) if se > 0 else float("nan")
    return {"control": ra, "treatment": rb, "rel_change": float(rb / ra - 1),
            "ci_low": float(np.exp(log_lift - z * se) - 1), "ci_high": float(np.exp(log_lift + z * se) - 1),
            "p_value": p}


POSITIVE_REACTIONS = ("love", "like")


def analyze(engine: Any, arms: tuple[str, str] = ("A", "B"), reaction: str = "love", window_hours: float = 24.0,
            alpha: float = 0.05, method: str = "delta", expected_split: tuple[float, ...] | None = None,
            continuation_margin: float = 0.02, dislike_margin: float = 0.10, safety_margin: float = 0.10,
            power_target: float = 0.8, seed: int = 0, bot_max_rate: float | None = 0.3) -> dict[str, Any]:
    """Control = arms[0], treatment = arms[1]. Guardrail margins are relative: continuation may not drop more
    than `continuation_margin`, dislikes and safety violations may not rise more than their margin (the CI
    bound must clear the margin for `non_inferior`).

    Bot filter (`bot_max_rate`, None = off; positive reactions only): users whose `reaction` rate is anomalous
    by the labelled set's rate filter (`rate_anomalous`: above this rate on 10+ turns, or improbably far above
    it on fewer) are dropped from both arms before any statistic but the sample-ratio check, which tests the
    assignment itself. A
    handful of accounts that heart everything otherwise decide the lift: in a demo A/B test (reference vs cgpo,
    745 users) the 6 users this filter flags made 46 of the 122 loves, 32 of them in the control arm. The
    threshold sits far above human love rates (~2 % per impression), so a treatment that really pleases people
    does not get its users filtered."""
    if len(arms) != 2 or arms[0] == arms[1]:
        raise ValueError(f"--arms needs two different arm names (control,treatment), got {list(arms)}")
    if method not in ("delta", "bootstrap", "twoway"):
        raise ValueError(f"--method must be delta, bootstrap or twoway, got {method!r}")
    if method == "twoway":
        turns = load_turns(engine, arms, reaction, window_hours)
        ta, tb = turns[arms[0]], turns[arms[1]]
        data = {arm: _per_user(t) for arm, t in turns.items()}  # the same sums load_arms would fetch again
    else:
        data = load_arms(engine, arms, reaction, window_hours)
    n_users = np.array([len(data[arms[0]].users), len(data[arms[1]].users)], dtype=float)  # assignment, for SRM
    bots = {arm: np.zeros(len(d.users), bool) for arm, d in data.items()}
    if bot_max_rate is not None and reaction not in POSITIVE_REACTIONS:
        # Users who dislike a third of the answers are the harm a dislike analysis measures, not bots.
        bot_filter = {"max_rate": None, "off_because": f"the filter flags heavy positive reactors; {reaction!r} "
                                                       "is not one"}
    elif bot_max_rate is not None:
        from rluf.data.labels import rate_anomalous

        bots = {arm: rate_anomalous(d.turns, d.loves, bot_max_rate) for arm, d in data.items()}
        bot_filter = {"max_rate": bot_max_rate, **{
            arm: {"users": int(m.sum()), "impressions": int(data[arm].turns[m].sum()),
                  "reactions": int(data[arm].loves[m].sum())} for arm, m in bots.items()}}
        if method == "twoway":
            ta, tb = (_drop_users(turns[arm], data[arm].users[bots[arm]]) for arm in arms)
        data = {arm: _keep(d, ~bots[arm]) for arm, d in data.items()}
    else:
        bot_filter = {"max_rate": None}
    a, b = data[arms[0]], data[arms[1]]
    if method == "twoway":

        def change(metric: str) -> dict[str, float]:
            return lift_interval(*twoway_rate_var(getattr(ta, metric), ta.users, ta.answers),
                                 *twoway_rate_var(getattr(tb, metric), tb.users, tb.answers), alpha)
    else:
        def change(metric: str) -> dict[str, float]:
            return relative_change(getattr(a, metric), a.turns, getattr(b, metric), b.turns, alpha, method,
                                   seed=seed)

    main = change("loves")
    split = np.array(expected_split or [1.0, 1.0], dtype=float)
    srm_p = float(stats.chisquare(n_users, split / split.sum() * n_users.sum()).pvalue)
    guardrails = []
    cont = change("continued")
    guardrails.append({"metric": "continuation_rate", **_g(cont), "margin": -continuation_margin,
                       "non_inferior": bool(cont["ci_low"] > -continuation_margin)})
    if a.dislikes.sum() + b.dislikes.sum() > 0:
        d = change("dislikes")
        ok = bool(d["ci_high"] < dislike_margin) if np.isfinite(d["ci_high"]) else False
        guardrails.append({"metric": "dislike_rate", **_g(d), "margin": dislike_margin, "non_inferior": ok})
    if a.unsafe.sum() + b.unsafe.sum() > 0:
        u = change("unsafe")
        # A margin of 0 would be a superiority test: equal unsafe rates would always fail the guardrail.
        ok = bool(u["ci_high"] < safety_margin) if np.isfinite(u["ci_high"]) else False
        guardrails.append({"metric": "safety_violation_rate", **_g(u), "margin": safety_margin, "non_inferior": ok})
    m = float(np.mean(np.concatenate([a.turns, b.turns])))
    # No MDE (NaN, like an undefined lift) when the control rate is 0 or 1: there is no baseline to scale.
    mde = (power(main["control"], users_per_arm=float(min(len(a.users), len(b.users))), impressions_per_user=m,
                 design_effect=_design_effect(a.loves, a.turns), alpha=alpha, power_target=power_target)
           if 0 < main["control"] < 1 else {"mde_rel": float("nan")})
    return {
        "arms": {name: {"users": len(d.users), "impressions": int(d.turns.sum()), "loves": int(d.loves.sum()),
                        "love_rate": float(d.loves.sum() / max(d.turns.sum(), 1)),
                        "continuation_rate": float(d.continued.sum() / max(d.turns.sum(), 1))}
                 for name, d in data.items()},
        "control": arms[0], "treatment": arms[1], "reaction": reaction, "method": method, "alpha": alpha,
        "lift": main["rel_change"], "ci_low": main["ci_low"], "ci_high": main["ci_high"], "p_value": main["p_value"],
        "srm_p": srm_p, "srm_ok": srm_p >= 0.001, "guardrails": guardrails, "mde_rel": mde["mde_rel"],
        "bot_filter": bot_filter,
    }


def _keep(d: ArmData, mask: np.ndarray) -> ArmData:
    return ArmData(d.users[mask], d.turns[mask], d.loves[mask], d.continued[mask], d.dislikes[mask], d.unsafe[mask])


def _drop_users(t: ArmTurns, users: np.ndarray) -> ArmTurns:
    keep = ~np.isin(t.users, users)
    return ArmTurns(t.users[keep], t.answers[keep], t.loves[keep], t.continued[keep], t.dislikes[keep],
                    t.unsafe[keep])


def _g(r: dict[str, float]) -> dict[str, float]:
    return {"control": r["control"], "treatment": r["treatment"], "rel_change": r["rel_change"],
            "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


def _design_effect(num: np.ndarray, den: np.ndarray) -> float:
    """Var of the clustered ratio estimate over the binomial variance of as many independent impressions."""
    r, v = ratio_var(num, den)
    binom = r * (1 - r) / den.sum()
    return float(v / binom) if binom > 0 and np.isfinite(v) else 1.0


def power(baseline: float, mde_rel: float | None = None, users_per_arm: float | None = None,
          impressions_per_user: float = 1.0, design_effect: float | None = None, icc: float = 0.0,
          alpha: float = 0.05, power_target: float = 0.8) -> dict[str, Any]:
    """Users per arm needed for a relative MDE, or the MDE at a given traffic. Two-sided z-test on the
    rate per impression, variance inflated by the design effect 1 + (m − 1)·ICC (or as given)."""
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be in (0, 1), got {baseline}")
    if (mde_rel is None) == (users_per_arm is None):
        raise ValueError("give exactly one of mde_rel (→ users needed) or users_per_arm (→ MDE)")
    deff = design_effect if design_effect is not None else 1 + (impressions_per_user - 1) * icc
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power_target)
    m = impressions_per_user
    if mde_rel is not None:
        p2 = baseline * (1 + mde_rel)
        n = z**2 * (baseline * (1 - baseline) + p2 * (1 - p2)) * deff / (m * (p2 - baseline) ** 2)
        return {"baseline": baseline, "mde_rel": mde_rel, "users_per_arm": int(np.ceil(n)),
                "impressions_per_arm": int(np.ceil(n * m)), "design_effect": deff, "alpha": alpha,
                "power": power_target}
    var = 2 * baseline * (1 - baseline) * deff / (users_per_arm * m)
    return {"baseline": baseline, "users_per_arm": users_per_arm, "mde_rel": float(z * np.sqrt(var) / baseline),
            "design_effect": deff, "alpha": alpha, "power": power_target}
