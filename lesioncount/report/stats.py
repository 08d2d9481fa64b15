"""The trial endpoint: cumulative new Gd+ lesions per group, and IL-2 vs placebo.

- :func:`endpoint_curves`: per group and visit, the mean cumulative number of new Gd+
  lesions with a 95% bootstrap interval (percentile, fixed seed), from each patient's line.
- :func:`compare_groups`: a negative binomial (NB2) regression of each patient's final
  cumulative count on group, adjusted for the baseline Gd+ count, with the number of
  follow-up scans as exposure (so a patient with a missing visit is not read as a
  responder); the rate ratio treated/control with its Wald 95% interval and p-value.
  The Mann-Whitney rank-sum test of the same counts is the sensitivity analysis.

Counts in such trials are low, with many zeros and overdispersion (Sormani et al. 2001),
hence the negative binomial. Degenerate data (all counts zero, one group only, fewer
patients than parameters, a group with no lesion at all) give a result with ``note`` set
and the estimates left as ``None`` instead of an exception.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TREATED_NAMES = ("il2", "il-2", "il_2", "treated", "active", "verum")
CONTROL_NAMES = ("placebo", "control", "pbo")
BOOTSTRAP_RESAMPLES = 2000  # percentile interval of a mean: 2000 keeps its MC error < 0.01 SD
SEED = 20231  # the bootstrap is random: fixed so a report is reproducible


def pick_arms(groups: list[str], treated: str | None = None,
              control: str | None = None) -> tuple[str | None, str | None, str]:
    """Which group is the treatment and which the control; returns (treated, control, note).

    Names like ``il2``/``IL-2`` are the treatment and ``placebo`` the control
    (case-insensitive). With two other names the first in sorted order is taken as the
    control, and the note says so.
    """
    names = sorted({g for g in groups if g})
    if treated and control:
        return treated, control, ""
    norm = {g: g.lower().replace(" ", "") for g in names}
    t = treated or next((g for g in names if norm[g] in TREATED_NAMES), None)
    c = control or next((g for g in names if norm[g] in CONTROL_NAMES), None)
    note = ""
    if t is None or c is None:
        rest = [g for g in names if g not in (t, c)]
        if c is None and rest:
            c = rest.pop(0)
        if t is None and rest:
            t = rest.pop(0)
        if t and c:
            note = f"arms named neither IL-2 nor placebo: '{t}' is compared with '{c}'"
    return t, c, note


def _boot_mean_ci(values: np.ndarray, rng: np.random.Generator, level: float = 0.95):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan, math.nan
    idx = rng.integers(0, len(v), size=(BOOTSTRAP_RESAMPLES, len(v)))
    means = v[idx].mean(axis=1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def patient_lines(counts: pd.DataFrame, subjects: pd.DataFrame) -> pd.DataFrame:
    """One row per patient and visit: ``subject, group, visit, session, days, cumulative_new_gd``.

    ``visit`` is 0 at baseline, then 1, 2, ... in the order of ``counts.tsv``.
    """
    groups = dict(zip(subjects["subject"], subjects["group"].fillna("")))
    rows = []
    for subj, df in counts.groupby("subject", sort=False):
        for n, (_, r) in enumerate(df.iterrows()):
            rows.append({"subject": subj, "group": groups.get(subj, ""), "visit": n,
                         "session": r["session"], "days": r.get("days"),
                         "cumulative_new_gd": r["cumulative_new_gd"]})
    return pd.DataFrame(rows, columns=["subject", "group", "visit", "session", "days",
                                       "cumulative_new_gd"])


def endpoint_curves(lines: pd.DataFrame) -> pd.DataFrame:
    """Per group and visit: n, mean cumulative new Gd+ count, 95% bootstrap interval.

    Columns ``group, visit, label, days, n, mean, low, high``; ``label`` is the most common
    session label at that visit, ``days`` the median days since baseline (NaN if unknown).
    """
    rng = np.random.default_rng(SEED)
    rows = []
    for (grp, visit), df in lines.groupby(["group", "visit"], sort=True):
        vals = pd.to_numeric(df["cumulative_new_gd"], errors="coerce").to_numpy(float)
        vals = vals[np.isfinite(vals)]
        mean, lo, hi = _boot_mean_ci(vals, rng)
        days = pd.to_numeric(df["days"], errors="coerce")
        rows.append({"group": grp, "visit": int(visit), "label": df["session"].mode().iloc[0],
                     "days": float(days.median()) if days.notna().any() else math.nan,
                     "n": int(len(vals)), "mean": mean, "low": lo, "high": hi})
    return pd.DataFrame(rows, columns=["group", "visit", "label", "days", "n", "mean", "low",
                                       "high"])


@dataclass
class Comparison:
    """IL-2 vs placebo on each patient's cumulative number of new Gd+ lesions."""

    treated: str | None
    control: str | None
    n_treated: int = 0
    n_control: int = 0
    mean_treated: float | None = None
    mean_control: float | None = None
    median_treated: float | None = None
    median_control: float | None = None
    model: str = ""  # "negative binomial (NB2)", "Poisson (no overdispersion)" or ""
    rate_ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    alpha: float | None = None  # NB2 dispersion (variance = mu + alpha mu^2)
    baseline_adjusted: bool = False
    mannwhitney_u: float | None = None
    mannwhitney_p: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def analysis_table(subjects: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Per patient: ``subject, group, y`` (final cumulative new), ``baseline``, ``followups``."""
    rows = []
    for _, s in subjects.iterrows():
        c = counts[counts["subject"] == s["subject"]]
        follow = max(len(c) - 1, 0)
        y = s.get("cumulative_new_gd")
        if (y is None or pd.isna(y)) and len(c):
            y = c["cumulative_new_gd"].iloc[-1]
        base = s.get("baseline_gd_count")
        if (base is None or pd.isna(base)) and len(c):
            base = c["gd_count"].iloc[0]
        rows.append({"subject": s["subject"], "group": s.get("group") or "", "y": y,
                     "baseline": base, "followups": follow,
                     "eligible": s.get("eligible")})
    df = pd.DataFrame(rows, columns=["subject", "group", "y", "baseline", "followups", "eligible"])
    for c in ("y", "baseline"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def compare_groups(table: pd.DataFrame, treated: str | None = None,
                   control: str | None = None) -> Comparison:
    """Negative binomial regression and rank-sum test of the cumulative count, treated vs control.

    Parameters
    ----------
    table : DataFrame
        From :func:`analysis_table`: ``group``, ``y`` (cumulative new Gd+), ``baseline``
        (baseline Gd+ count), ``followups`` (number of follow-up scans, the exposure).
    treated, control : str, optional
        Group labels; found by name (IL-2 / placebo) when not given.

    Returns
    -------
    Comparison
        ``rate_ratio`` < 1 means fewer new lesions on the treatment. Estimates that cannot
        be made are ``None`` and ``notes`` says why.
    """
    t, c, note = pick_arms(list(table["group"]), treated, control)
    res = Comparison(t, c)
    if note:
        res.notes.append(note)
    if t is None or c is None:
        found = sorted({g for g in table["group"] if g})
        res.notes.append("two arms are needed for a comparison; groups found: "
                         + (", ".join(found) if found else "none (no group column)"))
        return res
    df = table[table["group"].isin([t, c]) & table["y"].notna() & (table["followups"] > 0)].copy()
    dropped = len(table[table["group"].isin([t, c])]) - len(df)
    if dropped:
        res.notes.append(f"{dropped} patient(s) without follow-up counts left out")
    df["treated"] = (df["group"] == t).astype(float)
    yt, yc = df.loc[df["treated"] == 1, "y"], df.loc[df["treated"] == 0, "y"]
    res.n_treated, res.n_control = int(len(yt)), int(len(yc))
    if len(yt):
        res.mean_treated, res.median_treated = float(yt.mean()), float(yt.median())
    if len(yc):
        res.mean_control, res.median_control = float(yc.mean()), float(yc.median())
    if not len(yt) or not len(yc):
        res.notes.append("one arm has no patient with follow-up counts: no comparison")
        return res

    _rank_sum(res, yt.to_numpy(float), yc.to_numpy(float))

    if df["y"].sum() == 0:
        res.notes.append("no new Gd+ lesion in either arm: the rate ratio is not estimable")
        return res
    if yt.sum() == 0 or yc.sum() == 0:
        zero = t if yt.sum() == 0 else c
        res.notes.append(f"no new Gd+ lesion in arm '{zero}': the rate ratio is at the "
                         f"boundary ({'0' if zero == t else 'infinite'}) and not estimable "
                         f"by regression; see the rank-sum test")
        return res
    _regression(res, df)
    return res


def _rank_sum(res: Comparison, yt: np.ndarray, yc: np.ndarray) -> None:
    from scipy.stats import mannwhitneyu

    if np.all(np.concatenate([yt, yc]) == yt[0]):
        res.mannwhitney_u, res.mannwhitney_p = float(len(yt) * len(yc) / 2), 1.0
        res.notes.append("every patient has the same count: the rank-sum test has p = 1")
        return
    u = mannwhitneyu(yt, yc, alternative="two-sided", method="auto")
    res.mannwhitney_u, res.mannwhitney_p = float(u.statistic), float(u.pvalue)


def _regression(res: Comparison, df: pd.DataFrame) -> None:
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, HessianInversionWarning

    cols = ["treated"]
    base = df["baseline"]
    if base.notna().all() and base.nunique() > 1:
        cols.append("baseline")
        res.baseline_adjusted = True
    else:
        res.notes.append("baseline Gd+ count missing or the same for every patient: "
                         "the model is not adjusted for it")
    n_params = len(cols) + 2  # intercept, covariates, NB dispersion
    if len(df) <= n_params:
        res.notes.append(f"{len(df)} patients for {n_params} parameters: too few for a "
                         f"regression; see the rank-sum test")
        return
    X = sm.add_constant(df[cols].astype(float), has_constant="add")
    if "baseline" in cols and np.linalg.matrix_rank(X.to_numpy()) < X.shape[1]:
        X = X.drop(columns="baseline")
        res.baseline_adjusted = False
        res.notes.append("baseline Gd+ count is confounded with group in these patients: "
                         "the model is not adjusted for it")
    y = df["y"].to_numpy(float)
    exposure = df["followups"].to_numpy(float)

    fit, model = None, ""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("error", HessianInversionWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            nb = sm.NegativeBinomial(y, X, loglike_method="nb2", exposure=exposure)
            fit = nb.fit(disp=0, maxiter=500, method="bfgs")
            if not fit.mle_retvals.get("converged", True):
                raise ConvergenceWarning("did not converge")
            alpha = float(fit.params.iloc[-1])
            se = float(fit.bse["treated"])
            if not (math.isfinite(se) and se > 0) or alpha < 1e-6:
                raise ConvergenceWarning("degenerate dispersion")
            res.alpha, model = alpha, "negative binomial (NB2)"
        except (ConvergenceWarning, HessianInversionWarning, np.linalg.LinAlgError, ValueError) as e:
            log.info("NB regression fell back to Poisson: %s", e)
            fit = None
    if fit is None:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit = sm.GLM(y, X, family=sm.families.Poisson(), exposure=exposure).fit()
            if any("separation" in str(w.message).lower() for w in caught):
                res.notes.append("perfect separation in the Poisson model: its rate ratio "
                                 "is not reliable; see the rank-sum test")
            model = "Poisson (the negative binomial did not converge)"
            res.notes.append("the negative binomial model did not converge (too few patients "
                             "or no overdispersion); a Poisson model was fitted instead")
        except (np.linalg.LinAlgError, ValueError) as e:
            res.notes.append(f"the regression failed ({e}); see the rank-sum test")
            return
    b, se = float(fit.params["treated"]), float(fit.bse["treated"])
    if not (math.isfinite(b) and math.isfinite(se)):
        res.notes.append("the regression gave no finite estimate; see the rank-sum test")
        return
    res.model = model
    res.rate_ratio = math.exp(b)
    res.ci_low, res.ci_high = math.exp(b - 1.959964 * se), math.exp(b + 1.959964 * se)
    res.p_value = float(fit.pvalues["treated"])
    if len(df) < 20:
        res.notes.append(f"only {len(df)} patients: Wald intervals of a count regression are "
                         f"approximate in samples this small")
