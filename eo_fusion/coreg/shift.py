"""Sub-pixel shift between two images on the same grid, and its correction.

Method: phase correlation (normalised cross-power spectrum) of *feature images*, refined to
sub-pixel precision with a locally upsampled DFT around the integer peak (the matrix-multiply DFT
of Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 2008).

Feature images, chosen so that different sensors look alike:

* ``optical``: gradient magnitude (Sobel) of the lightly smoothed image, so brightness and
  contrast differences between sensors and dates do not matter, edges do.
* ``sar``: the image is put in log scale (dB) and smoothed with a wider Gaussian before the
  gradient magnitude, which suppresses multiplicative speckle; used for SAR and for SAR↔optical.

No data (the halo beyond a scene edge, cloud masks, SAR layover) never takes part: features are
computed on a mean-filled image, then every pixel whose smoothing/Sobel kernel reached a filled
pixel is dropped (the valid mask is eroded by the kernel radius), and the remaining features are
weighted by an apodised copy of that mask (a cosine taper over :data:`TAPER_PX` pixels inside
the valid edge) times a Tukey window over the tile, so neither the no-data boundary nor the tile
border creates an edge of its own, which would correlate at zero shift.

Convention: ``estimate_shift(ref, mov)`` returns ``(dx, dy)`` in pixels such that
``mov(x, y) ≈ ref(x - dx, y - dy)``: ``dx > 0`` means ``mov`` is displaced east (+columns),
``dy > 0`` south (+rows). :func:`apply_shift` with ``(-dx, -dy)`` realigns ``mov`` on ``ref``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from eo_fusion.errors import CoregistrationError

__all__ = ["ShiftEstimate", "apply_shift", "estimate_shift", "feature_image", "feature_weight"]

#: Width (pixels) of the cosine taper inside the edge of the valid area.
TAPER_PX = 4.0


@dataclass(frozen=True)
class ShiftEstimate:
    """A shift estimate: ``dx``/``dy`` in pixels (east/south positive), ``confidence`` (peak to
    side-lobe ratio of the correlation surface; ~3 is noise, > 8 a clear match), the method."""

    dx: float
    dy: float
    confidence: float
    method: str

    @property
    def magnitude(self) -> float:
        return float(np.hypot(self.dx, self.dy))

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def _sigma(method: str) -> float:
    if method == "sar":
        return 1.5
    if method == "optical":
        return 0.7
    raise CoregistrationError(f"unknown shift method {method!r}", fix="use optical or sar")


def feature_weight(img: np.ndarray, method: str = "optical") -> np.ndarray:
    """Weight in [0, 1] of each pixel's feature: 0 where no data reached its kernel, rising to 1
    over :data:`TAPER_PX` pixels inside the valid area (see module doc)."""
    finite = np.isfinite(np.asarray(img, dtype=np.float64))
    if finite.all():
        return np.ones(finite.shape)  # no no-data edge: the tile's Tukey window suffices
    radius = int(np.ceil(2 * _sigma(method))) + 1  # most of the Gaussian + the 3x3 Sobel
    core = ndimage.binary_erosion(finite, iterations=radius, border_value=1)
    dist = ndimage.distance_transform_edt(core)
    return np.where(core, 0.5 - 0.5 * np.cos(np.pi * np.minimum(dist / TAPER_PX, 1.0)), 0.0)


def feature_image(img: np.ndarray, method: str = "optical") -> np.ndarray:
    """The standardised gradient-magnitude feature image used for matching (see module doc);
    0 where :func:`feature_weight` is 0."""
    a = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(a)
    if finite.sum() < 16:
        raise CoregistrationError(
            "image has fewer than 16 valid pixels; no shift can be estimated",
            fix="check the modality's valid mask or use a larger tile",
        )
    sigma = _sigma(method)
    if method == "sar":
        pos = finite & (a > 0)
        # Linear power → dB (log makes speckle additive); values already in dB are negative.
        if pos.mean() > 0.99 * finite.mean() and np.nanmax(a) < 50:
            a = np.where(pos, 10 * np.log10(np.where(pos, a, 1.0)), np.nan)
    fill = np.nanmean(a)
    a = np.where(np.isfinite(a), a, fill)
    a = ndimage.gaussian_filter(a, sigma)
    g = np.hypot(ndimage.sobel(a, axis=0), ndimage.sobel(a, axis=1))
    weight = feature_weight(img, method)
    use = weight > 0
    if use.sum() < 16:
        raise CoregistrationError(
            "fewer than 16 pixels lie far enough from no data to match; no shift estimated",
            fix="check the modality's valid mask or use a larger tile/halo",
        )
    g = (g - g[use].mean()) / (g[use].std() + 1e-12)
    return np.where(use, g * weight, 0.0)


def _tukey(n: int, alpha: float = 0.25) -> np.ndarray:
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    edge = alpha / 2
    lo = x < edge
    hi = x > 1 - edge
    w[lo] = 0.5 * (1 + np.cos(np.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + np.cos(np.pi * ((x[hi] - 1) / edge + 1)))
    return w


def _upsampled_dft(spec: np.ndarray, size: int, factor: int, offset: tuple[float, float]):
    """Inverse DFT of ``spec`` evaluated on a ``size`` x ``size`` grid of step 1/``factor``
    starting at ``offset`` (row, col) pixels: a zoom on the correlation surface."""
    n_r, n_c = spec.shape
    k_c = np.fft.ifftshift(np.arange(n_c)) - n_c // 2
    k_r = np.fft.ifftshift(np.arange(n_r)) - n_r // 2
    pts = np.arange(size) / factor
    ker_c = np.exp(2j * np.pi * np.outer(k_c, pts + offset[1]) / n_c)  # (n_c, size)
    ker_r = np.exp(2j * np.pi * np.outer(pts + offset[0], k_r) / n_r)  # (size, n_r)
    return ker_r @ spec @ ker_c


def estimate_shift(
    ref: np.ndarray,
    mov: np.ndarray,
    *,
    method: str = "optical",
    upsample: int = 50,
    max_shift_px: float | None = None,
) -> ShiftEstimate:
    """Sub-pixel shift of ``mov`` relative to ``ref`` (same shape, same grid); see module doc.

    Args:
        ref, mov: 2-D images (NaN = no data).
        method: ``optical`` (both optical) or ``sar`` (either is SAR; speckle-robust features).
        upsample: sub-pixel precision is 1/``upsample`` px.
        max_shift_px: ignore correlation peaks farther than this (default: a quarter of the size).
    """
    if ref.shape != mov.shape or ref.ndim != 2:
        raise CoregistrationError(
            f"shift estimation needs two 2-D images of one shape, got {ref.shape} and {mov.shape}",
            fix="warp both onto the same tile grid first",
        )
    fa = feature_image(ref, method)
    fb = feature_image(mov, method)
    win = np.outer(_tukey(ref.shape[0]), _tukey(ref.shape[1]))
    fa_s = np.fft.fft2(fa * win)
    fb_s = np.fft.fft2(fb * win)
    cross = fb_s * np.conj(fa_s)
    cross /= np.abs(cross) + 1e-12 * np.abs(cross).max()
    # A mild low-pass in the frequency domain: the highest frequencies are mostly noise/speckle.
    fy = np.fft.fftfreq(ref.shape[0])[:, None]
    fx = np.fft.fftfreq(ref.shape[1])[None, :]
    cross *= np.exp(-((fx**2 + fy**2) / (2 * 0.2**2)))
    surf = np.fft.ifft2(cross).real
    n_r, n_c = surf.shape
    lim = max_shift_px if max_shift_px is not None else min(n_r, n_c) / 4
    rr = np.fft.fftfreq(n_r, 1 / n_r)[:, None]
    cc = np.fft.fftfreq(n_c, 1 / n_c)[None, :]
    masked = np.where((np.abs(rr) <= lim) & (np.abs(cc) <= lim), surf, -np.inf)
    pr, pc = np.unravel_index(np.argmax(masked), surf.shape)
    r0, c0 = float(rr[pr, 0]), float(cc[0, pc])
    # Confidence: peak height over the spread of the surface away from the peak.
    away = (np.abs(rr - r0) > 3) | (np.abs(cc - c0) > 3)
    side = surf[away]
    confidence = float((surf[pr, pc] - side.mean()) / (side.std() + 1e-12))
    # Zoom ±1.5 px around the integer peak at 1/upsample px steps.
    size = int(np.ceil(upsample * 3))
    start = (r0 - size // 2 / upsample, c0 - size // 2 / upsample)
    zoom = _upsampled_dft(cross, size, upsample, start).real
    zr, zc = np.unravel_index(np.argmax(zoom), zoom.shape)
    dy = start[0] + zr / upsample
    dx = start[1] + zc / upsample
    return ShiftEstimate(float(dx), float(dy), confidence, method)


def apply_shift(arr: np.ndarray, dx: float, dy: float, *, categorical: bool = False) -> np.ndarray:
    """Translate the last two axes of ``arr`` by ``dx`` (east) and ``dy`` (south) pixels.

    Continuous values use linear interpolation (NaN spreads only to the pixels it touches);
    categorical values use nearest neighbour. Pixels shifted in from outside become NaN.
    """
    a = np.asarray(arr, dtype=np.float32)
    shift = (0.0,) * (a.ndim - 2) + (float(dy), float(dx))
    return ndimage.shift(
        a, shift, order=0 if categorical else 1, mode="constant", cval=np.nan, prefilter=False
    ).astype(np.float32)
