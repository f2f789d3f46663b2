"""Provenance evidence in the file itself: C2PA manifests and generator traces.

Strong evidence when present (a C2PA manifest declaring ``trainedAlgorithmicMedia``,
Stable Diffusion's ``parameters`` PNG chunk, a generator named in EXIF ``Software``).
Absent metadata proves nothing: most platforms strip it on upload.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from PIL import Image

GENERATORS = (
    "stable diffusion",
    "stablediffusion",
    "sdxl",
    "midjourney",
    "dall-e",
    "dall·e",
    "dalle",
    "firefly",
    "imagen",
    "novelai",
    "comfyui",
    "automatic1111",
    "invokeai",
    "flux",
    "leonardo",
    "ideogram",
    "gpt-4o",
    "openai",
    "sora",
    "runway",
    "craiyon",
    "nightcafe",
    "dreamstudio",
    "fooocus",
    "diffusers",
)
PNG_GENERATOR_KEYS = (
    "parameters",
    "prompt",
    "workflow",
    "dream",
    "sd-metadata",
    "invokeai_metadata",
    "generation_data",
)
TEXT_KEYS = (
    "Software",
    "software",
    "Description",
    "Comment",
    "comment",
    "Title",
    "Author",
    "Source",
    "Artist",
)
EXIF_TAGS = {
    0x0131: "Software",
    0x010E: "ImageDescription",
    0x013B: "Artist",
    0x010F: "Make",
    0x0110: "Model",
    0x9286: "UserComment",
}
AI_SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeSynthetic",
    "algorithmicallyEnhanced",
    "compositeWithTrainedAlgorithmicMedia",
)
ABSENCE_NOTE = (
    "No generator metadata or C2PA manifest was found. This proves nothing: "
    "most platforms strip metadata on upload, and generators need not write it."
)


def _named_generator(text: str) -> str | None:
    lowered = text.lower()
    for name in GENERATORS:
        if name in lowered:
            return name
    return None


def _c2pa(data: bytes, mime: str) -> dict[str, Any]:
    try:
        import c2pa
    except ImportError:
        return {"checked": False, "present": False, "error": "c2pa-python is not installed"}
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
    except Exception as exc:
        if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in str(exc):
            return {"checked": True, "present": False}
        return {"checked": True, "present": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    text = json.dumps(store)
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    return {
        "checked": True,
        "present": True,
        "claim_generator": active.get("claim_generator"),
        "declares_ai_generated": any(t in text for t in AI_SOURCE_TYPES),
        "validation_status": [s.get("code") for s in store.get("validation_status", [])][:10],
    }


def inspect_metadata(data: bytes) -> dict[str, Any]:
    traces: list[dict[str, str]] = []
    camera: dict[str, str] = {}
    mime = "application/octet-stream"
    try:
        image = Image.open(io.BytesIO(data))
        mime = Image.MIME.get(str(image.format), mime)
        for key, value in (image.info or {}).items():
            if not isinstance(value, str | bytes):
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if key in PNG_GENERATOR_KEYS:
                traces.append({"source": f"png:{key}", "value": text[:300]})
            elif key in TEXT_KEYS and _named_generator(text):
                traces.append({"source": f"text:{key}", "value": text[:300]})
            elif key in ("xmp", "XML:com.adobe.xmp"):
                for source_type in AI_SOURCE_TYPES:
                    if source_type in text:
                        traces.append({"source": "xmp:DigitalSourceType", "value": source_type})
        exif = image.getexif()
        for tag, name in EXIF_TAGS.items():
            raw = exif.get(tag)
            if raw is None:
                continue
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            text = re.sub(r"[\x00-\x1f]", " ", text).strip()
            if name in ("Make", "Model"):
                camera[name.lower()] = text[:100]
            elif _named_generator(text):
                traces.append({"source": f"exif:{name}", "value": text[:300]})
    except Exception as exc:  # metadata is best effort; the pixels were already validated
        traces.append({"source": "error", "value": f"metadata unreadable: {exc}"[:200]})
    c2pa_result = _c2pa(data, mime)
    found = bool(traces) or c2pa_result.get("present", False)
    return {
        "c2pa": c2pa_result,
        "generator_traces": traces,
        "camera": camera or None,
        "ai_indicated": bool([t for t in traces if t["source"] != "error"])
        or bool(c2pa_result.get("declares_ai_generated")),
        "note": None if found else ABSENCE_NOTE,
    }
