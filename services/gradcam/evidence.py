"""Measured image statistics, inside each ROI and for the whole image.

Each statistic is named, documented here and in the README, and reported with its
ratio to the whole-image value (``relative``), so an explanation can say "this region
has 2.3x the image's high-frequency energy" instead of guessing.

* ``high_freq_energy`` — share of the spectral energy (2-D FFT of the luminance,
  Hann-windowed, mean removed) above half the Nyquist frequency. Generators often leave
  too little (over-smoothing) or periodic excess (upsampling grids).
* ``noise_residual`` — standard deviation of luminance minus its 3x3 median (0-255
  scale): the sensor-noise-like residual, often weak or unnaturally uniform in
  generated images.
* ``edge_sharpness`` — mean Sobel gradient magnitude of the luminance (0-255 scale).
* ``laplacian_var`` — variance of the Laplacian (a focus/blur measure).
* ``saturation_mean`` / ``saturation_std`` — HSV saturation (0-1); generated images
  tend to over-saturated, evenly saturated colour.
* ``luminance_mean`` — mean luminance (0-255), for context.
"""

from __future__ import annotations

import cv2
import numpy as np

STATISTICS = (
    "high_freq_energy",
    "noise_residual",
    "edge_sharpness",
    "laplacian_var",
    "saturation_mean",
    "saturation_std",
    "luminance_mean",
)
MIN_FFT_SIDE = 8


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def high_freq_energy(gray: np.ndarray) -> float | None:
    h, w = gray.shape
    if min(h, w) < MIN_FFT_SIDE:
        return None
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2((gray - gray.mean()) * window))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    total = float(spectrum.sum())
    if total <= 0:
        return 0.0
    return float(spectrum[radius > 0.25].sum() / total)


def measure(rgb: np.ndarray) -> dict[str, float | None]:
    """All statistics of one RGB uint8 array (H, W, 3)."""
    gray = _luminance(rgb)
    median = cv2.medianBlur(gray.astype(np.uint8), 3).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    saturation = hsv[..., 1] / 255.0
    return {
        "high_freq_energy": high_freq_energy(gray),
        "noise_residual": float((gray - median).std()),
        "edge_sharpness": float(np.sqrt(gx**2 + gy**2).mean()),
        "laplacian_var": float(cv2.Laplacian(gray, cv2.CV_32F).var()),
        "saturation_mean": float(saturation.mean()),
        "saturation_std": float(saturation.std()),
        "luminance_mean": float(gray.mean()),
    }


def compare(region: dict[str, float | None], whole: dict[str, float | None]) -> dict[str, object]:
    """Each statistic with its ratio to the whole image's value."""
    out: dict[str, object] = {}
    for name in STATISTICS:
        value, reference = region.get(name), whole.get(name)
        relative = None
        if value is not None and reference not in (None, 0.0):
            relative = round(value / reference, 3)
        out[name] = {"value": None if value is None else round(value, 4), "relative": relative}
    return out


def rounded(stats: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(v, 4)) for k, v in stats.items()}
