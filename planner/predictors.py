"""Load predictors: forecast the next interval's value (request count, mean ISL, mean OSL)
from the values observed so far, with an upper quantile of that forecast.

One interface for every method (`Predictor`), a plain dict registry (`PREDICTORS`) and
`make_predictor(name, **options)` which validates the options against the method.

Rules shared by every predictor:

- Missing intervals: `observe(None)` or `observe(nan)` (also +-inf) means the interval
  passed but its value is unknown. Nothing is reset. Time advances without a measurement:
  constant and moving average keep what they have; Holt and Holt-Winters move level (and
  season index) on by their own forecast; the Kalman filter does its time update only (its
  variance grows); ARIMA passes a NaN to the state-space filter. Missing intervals before the
  first data are ignored. No one-step error is recorded for a missing interval.
- Leading zeros: a service without traffic yet reports 0s. Zeros seen before the first
  non-zero value are not fed to the model (as Dynamo's ARIMA predictor does), so no model is
  fitted on an idle start; while only zeros have been seen, `predict()` is 0.0 and `upper()`
  None. Zeros after the first non-zero value are ordinary data.
- Negative values (an artefact of counter resets) are read as 0; every forecast and upper
  bound is clipped at >= 0, since loads are non-negative.
- `upper(q)`: the q-quantile of the next value. Kalman and ARIMA use their model's
  predictive variance (normal); the others, and ARIMA while it has no fitted model, use the
  empirical q-quantile of their own past one-step errors (actual - forecast, the last
  `ERROR_WINDOW` of them) once there are `MIN_ERRORS`, else None. For q >= 0.5 the bound is
  never below the point forecast (it is meant as headroom). `steps > 1` scales the empirical
  error quantile by sqrt(steps), an approximation; model-based bounds are exact h-step ones.
- Deterministic: no randomness; the same inputs give the same outputs.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np

from planner.errors import ConfigError, number_in

log = logging.getLogger(__name__)

ERROR_WINDOW = 200
MIN_ERRORS = 10


class Predictor(Protocol):
    name: str

    def observe(self, value: float | None) -> None:
        """Feed the value of the interval that just ended (None or NaN: missing)."""
        ...

    def predict(self, steps: int = 1) -> float | None:
        """Forecast for the next interval (or `steps` ahead); None before any data."""
        ...

    def upper(self, q: float, steps: int = 1) -> float | None:
        """Upper q-quantile of the next value; None when the method cannot tell yet."""
        ...

    def warm_start(self, series: Iterable[float | None]) -> None:
        """Feed a history at once; same state as observing each value in order."""
        ...


# ----------------------------------------------------------------------------- validation


def _key(option: str) -> str:
    return f"planner.predictor_options.{option}"


def _real(
    option: str,
    value: Any,
    *,
    lo: float,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    return number_in(value, _key(option), lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def _integer(option: str, value: Any, *, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        upto = f" and <= {hi}" if hi is not None else ""
        raise ConfigError(
            f"{value!r} is invalid; expected an integer >= {lo}{upto}", key=_key(option)
        )
    return int(value)


def _check_q(q: float, steps: int) -> None:
    if not (isinstance(q, int | float) and 0.0 < q < 1.0):
        raise ValueError(f"quantile q={q!r}; expected 0 < q < 1")
    _check_steps(steps)


def _check_steps(steps: int) -> None:
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r}; expected an integer >= 1")


def _clean(value: float | None) -> float | None:
    """The value as a non-negative float, or None for a missing interval."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        return None
    return max(v, 0.0)


# ----------------------------------------------------------------------------- base


class _Base:
    """Shared rules (missing values, leading zeros, clipping, empirical errors); a method
    supplies `_update(v)`, `_skip()`, `_forecast(steps)` and optionally `_forecast_std`."""

    name = ""
    # Whether upper() may use the empirical error quantile when the model has no variance.
    empirical_upper = True

    def __init__(self) -> None:
        self._started = False
        self._zeros = 0
        self._errors: deque[float] = deque(maxlen=ERROR_WINDOW)

    # The public interface -------------------------------------------------------------

    def observe(self, value: float | None) -> None:
        v = _clean(value)
        if v is None:
            if self._started:
                self._skip()
            return
        if not self._started:
            if v == 0.0:
                self._zeros += 1
                return
            self._started = True
        else:
            self._errors.append(v - max(self._forecast(1), 0.0))
        self._update(v)

    def predict(self, steps: int = 1) -> float | None:
        _check_steps(steps)
        if not self._started:
            return 0.0 if self._zeros else None
        return max(self._forecast(steps), 0.0)

    def upper(self, q: float, steps: int = 1) -> float | None:
        _check_q(q, steps)
        if not self._started:
            return None
        mean = self._forecast(steps)
        point = max(mean, 0.0)
        std = self._forecast_std(steps)
        if std is not None:
            bound = mean + NormalDist().inv_cdf(q) * std
        elif self.empirical_upper and len(self._errors) >= MIN_ERRORS:
            bound = mean + float(np.quantile(np.fromiter(self._errors, float), q)) * math.sqrt(
                steps
            )
        else:
            return None
        bound = max(bound, 0.0)
        return max(bound, point) if q >= 0.5 else bound

    def warm_start(self, series: Iterable[float | None]) -> None:
        for value in series:
            self.observe(value)

    # What a method supplies ----------------------------------------------------------

    def _update(self, v: float) -> None:
        raise NotImplementedError

    def _skip(self) -> None:
        """A missing interval after the start: advance time without a measurement."""

    def _forecast(self, steps: int) -> float:
        raise NotImplementedError

    def _forecast_std(self, steps: int) -> float | None:
        return None


# ----------------------------------------------------------------------------- methods


class ConstantPredictor(_Base):
    """The next value is the last one observed."""

    name = "constant"

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def _update(self, v: float) -> None:
        self._last = v

    def _forecast(self, steps: int) -> float:
        return self._last


class MovingAveragePredictor(_Base):
    """The next value is the mean of the last `window` observed values."""

    name = "moving_average"

    def __init__(self, window: int = 5) -> None:
        super().__init__()
        self.window = _integer("window", window, lo=1)
        self._values: deque[float] = deque(maxlen=self.window)

    def _update(self, v: float) -> None:
        self._values.append(v)

    def _forecast(self, steps: int) -> float:
        return sum(self._values) / len(self._values)


class _HoltState:
    """Double exponential smoothing recursions (level, trend), without the shared rules;
    with a damped trend when phi < 1 (Gardner & McKenzie 1985)."""

    def __init__(self, alpha: float, beta: float, phi: float = 1.0) -> None:
        self.alpha, self.beta, self.phi = alpha, beta, phi
        self.n = 0
        self.level = 0.0
        self.trend = 0.0
        self.gap = 1  # steps since the first value while the trend is still unknown

    def update(self, v: float) -> None:
        if self.n == 0:
            self.level = v
        elif self.n == 1:
            # The first difference starts the trend (per step, over a missing gap too).
            self.trend = (v - self.level) / self.gap
            self.level = v
        else:
            prev = self.level
            damped = self.phi * self.trend
            self.level = self.alpha * v + (1 - self.alpha) * (prev + damped)
            self.trend = self.beta * (self.level - prev) + (1 - self.beta) * damped
        self.n += 1

    def skip(self) -> None:
        if self.n == 1:
            self.gap += 1
        elif self.n >= 2:
            self.trend *= self.phi
            self.level += self.trend

    def forecast(self, steps: int) -> float:
        phi = self.phi
        if phi == 1.0:
            return self.level + steps * self.trend
        # phi + phi^2 + ... + phi^steps: the trend fades, the forecast levels off.
        return self.level + phi * (1 - phi**steps) / (1 - phi) * self.trend


class HoltPredictor(_Base):
    """Holt's linear (double exponential) smoothing: level `alpha`, trend `beta`, and
    `damping` phi in (0, 1] (1: the classic linear trend; below 1 the trend fades over the
    horizon, which stops a forecast several steps ahead from overshooting a turn)."""

    name = "holt"

    def __init__(self, alpha: float = 0.5, beta: float = 0.1, damping: float = 1.0) -> None:
        super().__init__()
        self.alpha = _real("alpha", alpha, lo=0.0, hi=1.0, lo_open=True)
        self.beta = _real("beta", beta, lo=0.0, hi=1.0)
        self.damping = _real("damping", damping, lo=0.0, hi=1.0, lo_open=True)
        self._holt = _HoltState(self.alpha, self.beta, self.damping)

    def _update(self, v: float) -> None:
        self._holt.update(v)

    def _skip(self) -> None:
        self._holt.skip()

    def _forecast(self, steps: int) -> float:
        return self._holt.forecast(steps)


class HoltWintersPredictor(_Base):
    """Additive Holt-Winters (level, trend, season of `period` intervals).

    Until two full periods have been seen it forecasts with Holt (same alpha, beta). Then
    it starts from the first two periods (level = first period's mean, trend = difference of
    the two periods' means / period, season = first period minus its trend line) and runs
    the recursions over the second period, so it is in step with the data.
    """

    name = "holt_winters"

    def __init__(
        self, period: int | None = None, alpha: float = 0.3, beta: float = 0.05, gamma: float = 0.3
    ) -> None:
        super().__init__()
        if period is None:
            raise ConfigError(
                "holt_winters needs a season length; expected an integer >= 2", key=_key("period")
            )
        self.period = _integer("period", period, lo=2)
        self.alpha = _real("alpha", alpha, lo=0.0, hi=1.0, lo_open=True)
        self.beta = _real("beta", beta, lo=0.0, hi=1.0)
        self.gamma = _real("gamma", gamma, lo=0.0, hi=1.0)
        self._holt: _HoltState | None = _HoltState(self.alpha, self.beta)
        self._first: list[float] = []  # the first two periods, missing ones filled by forecast
        self._level = 0.0
        self._trend = 0.0
        self._season = [0.0] * self.period
        self._t = 0  # index of the next interval, for the season

    def _update(self, v: float) -> None:
        if self._holt is not None:
            self._holt.update(v)
            self._buffer(v)
        else:
            self._step(v)

    def _skip(self) -> None:
        if self._holt is not None:
            guess = self._holt.forecast(1)
            self._holt.skip()
            self._buffer(guess)
        else:
            self._level += self._trend
            self._t += 1

    def _buffer(self, v: float) -> None:
        self._first.append(v)
        m = self.period
        if len(self._first) < 2 * m:
            return
        y = self._first
        mean1, mean2 = sum(y[:m]) / m, sum(y[m:]) / m
        self._trend = (mean2 - mean1) / m
        self._season = [y[i] - (mean1 + (i - (m - 1) / 2) * self._trend) for i in range(m)]
        self._level = mean1 + (m - 1) / 2 * self._trend
        self._t = m
        self._holt = None
        for value in y[m:]:
            self._step(value)
        self._first = []

    def _step(self, v: float) -> None:
        i = self._t % self.period
        s_prev, prev = self._season[i], self._level
        self._level = self.alpha * (v - s_prev) + (1 - self.alpha) * (prev + self._trend)
        self._trend = self.beta * (self._level - prev) + (1 - self.beta) * self._trend
        self._season[i] = self.gamma * (v - self._level) + (1 - self.gamma) * s_prev
        self._t += 1

    def _forecast(self, steps: int) -> float:
        if self._holt is not None:
            return self._holt.forecast(steps)
        season = self._season[(self._t + steps - 1) % self.period]
        return self._level + steps * self._trend + season


class KalmanPredictor(_Base):
    """Local linear trend model: level' = level + trend + w1, trend' = trend + w2,
    y = level + v, with Var(w1) = q_level, Var(w2) = q_trend, Var(v) = r.

    With `estimate_scale` (the default) the three variances are relative, and their common
    scale is estimated from the standardized innovations (mean of v^2/F over the last
    ERROR_WINDOW of them, as a concentrated likelihood does), so the defaults fit any load
    size; otherwise they are absolute, in squared units of the series. The first value sets
    the level, the trend starts diffuse. upper() is the normal quantile of the predictive
    variance, once MIN_ERRORS innovations have been seen.
    """

    name = "kalman"
    empirical_upper = False
    _DIFFUSE = 1e6

    def __init__(
        self,
        q_level: float = 0.01,
        q_trend: float = 0.0001,
        r: float = 1.0,
        estimate_scale: bool = True,
    ) -> None:
        super().__init__()
        self.q_level = _real("q_level", q_level, lo=0.0)
        self.q_trend = _real("q_trend", q_trend, lo=0.0)
        self.r = _real("r", r, lo=0.0, lo_open=True)
        if not isinstance(estimate_scale, bool):
            raise ConfigError(
                f"{estimate_scale!r} is invalid; expected true or false", key=_key("estimate_scale")
            )
        self.estimate_scale = estimate_scale
        self._x = np.zeros(2)
        self._p = np.zeros((2, 2))
        self._f = np.array([[1.0, 1.0], [0.0, 1.0]])
        self._q = np.diag([self.q_level, self.q_trend])
        self._n = 0
        self._z2: deque[float] = deque(maxlen=ERROR_WINDOW)

    def _update(self, v: float) -> None:
        if self._n == 0:
            self._x = np.array([v, 0.0])
            diffuse = self._DIFFUSE * (self.r + self.q_level + self.q_trend)
            self._p = np.diag([self.r, diffuse])
        else:
            self._time_update()
            innovation = v - self._x[0]
            f = self._p[0, 0] + self.r
            gain = self._p[:, 0] / f
            self._x = self._x + gain * innovation
            self._p = self._p - np.outer(gain, self._p[0, :])
            self._p = (self._p + self._p.T) / 2
            # The first innovation carries the diffuse trend prior: no information on scale.
            if self._n >= 2:
                self._z2.append(innovation * innovation / f)
        self._n += 1

    def _time_update(self) -> None:
        self._x = self._f @ self._x
        self._p = self._f @ self._p @ self._f.T + self._q

    def _skip(self) -> None:
        self._time_update()

    def _forecast(self, steps: int) -> float:
        return float(self._x[0] + steps * self._x[1])

    def _forecast_std(self, steps: int) -> float | None:
        if self.estimate_scale and len(self._z2) < MIN_ERRORS:
            return None
        if not self.estimate_scale and self._n < 2:
            return None
        p = self._p
        for _ in range(steps):
            p = self._f @ p @ self._f.T + self._q
        var = p[0, 0] + self.r
        if self.estimate_scale:
            var *= sum(self._z2) / len(self._z2)
        return math.sqrt(max(var, 0.0))


AUTO_ORDERS = ((0, 1, 1), (1, 1, 0), (1, 1, 1), (2, 1, 1))


class ArimaPredictor(_Base):
    """ARIMA(p, d, q) through statsmodels' SARIMAX on the last `window` values.

    The model is fitted when `min_points` finite values are there and refitted every
    `refit_every` intervals after that, starting from the previous parameters; in between
    the fitted model is only extended by the new values (a filter step, about a millisecond).
    `order="auto"` picks, at each refit, the order of AUTO_ORDERS with the lowest AIC. When
    there are fewer than `min_points` values, when the window is flat, or when the fit fails,
    the forecast is the last value. upper() uses the model's predictive variance.

    warm_start fits once, at the interval where feeding one by one would last have refitted,
    and filters the rest: its forecasts match one-by-one feeding up to the optimizer's
    tolerance (the one-by-one path starts each refit from the previous one's parameters).
    """

    name = "arima"

    def __init__(
        self,
        order: Any = (1, 1, 1),
        window: int = 100,
        refit_every: int = 10,
        min_points: int = 5,
        maxiter: int = 50,
    ) -> None:
        super().__init__()
        if order == "auto":
            self.order: tuple[int, int, int] | str = "auto"
        else:
            ok = (
                isinstance(order, list | tuple)
                and len(order) == 3
                and all(
                    isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= 5 for o in order
                )
            )
            if not ok or order[1] > 2:
                raise ConfigError(
                    f"{order!r} is invalid; expected [p, d, q] with integers 0..5 (d <= 2) "
                    "or 'auto'",
                    key=_key("order"),
                )
            self.order = (int(order[0]), int(order[1]), int(order[2]))
        self.min_points = _integer("min_points", min_points, lo=3)
        self.window = _integer("window", window, lo=max(10, self.min_points))
        self.refit_every = _integer("refit_every", refit_every, lo=1)
        self.maxiter = _integer("maxiter", maxiter, lo=1)
        self._y: deque[float] = deque(maxlen=self.window)
        self._n = 0  # intervals since the start (missing ones included)
        self._fit_n: int | None = None
        self._params: np.ndarray | None = None
        self._fit_order: tuple[int, int, int] | None = None
        self._res: Any = None
        self._last = 0.0
        self._cache: dict[int, tuple[float, float]] = {}

    # The shared rules call these ---------------------------------------------------

    def _update(self, v: float) -> None:
        self._last = v
        self._advance(v)

    def _skip(self) -> None:
        self._advance(math.nan)

    def _forecast(self, steps: int) -> float:
        mean_var = self._mean_var(steps)
        return self._last if mean_var is None else mean_var[0]

    def _forecast_std(self, steps: int) -> float | None:
        mean_var = self._mean_var(steps)
        return None if mean_var is None else math.sqrt(mean_var[1])

    def warm_start(self, series: Iterable[float | None]) -> None:
        values: list[float] = []
        for value in series:
            v = _clean(value)
            if not self._started:
                if v is None:
                    continue
                if v == 0.0:
                    self._zeros += 1
                    continue
                self._started = True
            values.append(math.nan if v is None else v)
        if not values:
            return
        history = list(self._y)
        n0 = self._n
        finite_before = sum(1 for y in history if not math.isnan(y))
        # Replay the refit schedule on counts only, to find the last interval that refits.
        fit_at, fit_n, finite = None, self._fit_n, finite_before
        window = deque(history, maxlen=self.window)
        finite_counts: list[int] = []
        for i, v in enumerate(values):
            window.append(v)
            finite_counts.append(sum(1 for y in window if not math.isnan(y)))
            n = n0 + i + 1
            finite = finite_counts[-1]
            if finite < self.min_points:
                fit_n = None
            elif fit_n is None or n - fit_n >= self.refit_every:
                fit_at, fit_n = i, n
        for v in values:
            if not math.isnan(v):
                self._last = v
        if fit_at is None:
            # No refit due in this stretch: extend the current model (if any) by all of it.
            self._y.extend(values)
            self._n += len(values)
            if self._res is not None and finite >= self.min_points:
                self._extend(values)
                self._add_residuals()
            elif finite < self.min_points:
                self._res, self._fit_n = None, None
            self._cache = {}
            return
        self._y.extend(values[: fit_at + 1])
        self._n = n0 + fit_at + 1
        self._refit()
        # The first residuals of a fit come from the diffuse start: no forecast behind them.
        self._add_residuals(skip=1 + (self._fit_order or (0, 0, 0))[1])
        rest = values[fit_at + 1 :]
        self._y.extend(rest)
        self._n += len(rest)
        if rest and self._res is not None:
            self._extend(rest)
            self._add_residuals()
        self._cache = {}

    def _add_residuals(self, skip: int = 0) -> None:
        """The model's in-sample one-step errors, standing in for those that feeding one by
        one would have recorded (used by upper() only while there is no model)."""
        if self._res is None:
            return
        resid = np.asarray(self._res.resid, dtype=float)[skip:]
        self._errors.extend(float(e) for e in resid if math.isfinite(e))

    # Internals ----------------------------------------------------------------------

    def _advance(self, v: float) -> None:
        self._y.append(v)
        self._n += 1
        self._cache = {}
        finite = sum(1 for y in self._y if not math.isnan(y))
        if finite < self.min_points:
            self._res, self._fit_n = None, None
        elif self._fit_n is None or self._n - self._fit_n >= self.refit_every:
            self._refit()
        elif self._res is not None:
            self._extend([v])

    def _extend(self, values: list[float]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._res = self._res.extend(np.asarray(values, dtype=float))
        except Exception as exc:  # statsmodels raises a variety of numeric errors
            log.debug("ARIMA extend failed (%s); refitting", exc)
            self._refit()

    def _refit(self) -> None:
        self._fit_n = self._n
        self._res = None
        y = np.asarray(self._y, dtype=float)
        finite = y[~np.isnan(y)]
        if finite.size < self.min_points or finite.max() == finite.min():
            # A flat window has no variance to fit; the last value is the exact forecast.
            return
        orders = AUTO_ORDERS if self.order == "auto" else (self.order,)
        best = None
        for order in orders:
            res = self._fit(y, order)
            if res is not None and (best is None or res.aic < best.aic):
                best = res
        if best is not None:
            self._res = best
            self._params = np.asarray(best.params)
            self._fit_order = best.model.order

    def _fit(self, y: np.ndarray, order: tuple[int, int, int]) -> Any:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # The scale stays a parameter (not concentrated out) so extend() keeps it.
                model = SARIMAX(y, order=order, concentrate_scale=False)
                start = None
                if order == self._fit_order and self._params is not None:
                    start = _shrink(self._params, model.param_names)
                res = model.fit(
                    start_params=start, disp=False, method="lbfgs", maxiter=self.maxiter
                )
        except Exception as exc:  # statsmodels raises a variety of numeric errors
            log.debug("ARIMA%s fit failed (%s); using the last value", order, exc)
            return None
        if not np.all(np.isfinite(res.params)) or not math.isfinite(res.aic):
            return None
        return res

    def _mean_var(self, steps: int) -> tuple[float, float] | None:
        if self._res is None:
            return None
        if steps not in self._cache:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fc = self._res.get_forecast(steps)
                    mean = float(np.asarray(fc.predicted_mean)[-1])
                    var = float(np.asarray(fc.var_pred_mean)[-1])
            except Exception as exc:  # statsmodels raises a variety of numeric errors
                log.debug("ARIMA forecast failed (%s); using the last value", exc)
                return None
            if not (math.isfinite(mean) and math.isfinite(var) and var >= 0):
                return None
            self._cache[steps] = (mean, var)
        return self._cache[steps]


def _shrink(params: np.ndarray, names: list[str]) -> np.ndarray:
    """Previous ARIMA parameters moved inside the stationary/invertible region.

    Starting exactly from a fit that sits on the boundary (AR and MA roots near 1, common
    on short windows) traps the optimizer there; scaling lag-i coefficients by 0.9**i
    divides every root's inverse by 0.9, so the start is strictly interior.
    """
    out = np.array(params, dtype=float)
    for i, name in enumerate(names):
        m = re.fullmatch(r"(ar|ma)\.L(\d+)", name)
        if m:
            out[i] *= 0.9 ** int(m.group(2))
    return out


# ----------------------------------------------------------------------------- registry

PredictorFactory = Callable[..., Predictor]
PREDICTORS: dict[str, PredictorFactory] = {
    "constant": ConstantPredictor,
    "moving_average": MovingAveragePredictor,
    "holt": HoltPredictor,
    "holt_winters": HoltWintersPredictor,
    "kalman": KalmanPredictor,
    "arima": ArimaPredictor,
}


def make_predictor(name: str, **options: Any) -> Predictor:
    """Build the predictor `name` with `options` (planner.predictor_options in a scenario).

    ConfigError on an unknown name, an unknown option or a bad value, naming the key.
    """
    factory = PREDICTORS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ConfigError(
            f"unknown predictor {name!r}; expected one of {', '.join(sorted(PREDICTORS))}",
            key="planner.predictor",
        )
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    for option in options:
        if option not in accepted:
            expected = ", ".join(accepted) if accepted else "no options"
            raise ConfigError(
                f"unknown option {option!r} for predictor {name!r}; expected {expected}",
                key=_key(option),
            )
    return factory(**options)
