"""C2PA Content Credentials (safety/provenance.py): sign and verify with c2pa-python, the per-install identity."""

from __future__ import annotations

import io
import stat
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studiolo.domain.gallery import imaging
from studiolo.domain.safety.outputs import OutputGuard, OwnerTerms
from studiolo.domain.safety.ports import Claim
from studiolo.domain.safety.provenance import (
    CHAIN_FILE,
    IDENTITY_DIR,
    KEY_FILE,
    TRAINED_ALGORITHMIC_MEDIA,
    C2paCredentials,
    build_credentials,
    install_identity,
    make_identity,
)
from tests.conftest import make_settings

CLAIM = Claim(
    title="job-0.png",
    model="demo",
    kind="txt2img",
    generation={"prompt": "a red fox", "seed": 7, "steps": 4},
)


def picture(colour: tuple[int, int, int] = (200, 40, 40), size: int = 64) -> Image.Image:
    """A small image with some texture (a flat one compresses to nothing)."""
    rng = np.random.default_rng(sum(colour))
    noise = rng.integers(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8), "RGB")


def generated_png(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return imaging.encode_png(
        picture(colour), parameters="a red fox\nSteps: 4, Seed: 7, Size: 64x64", metadata={"seed": 7, "model": "demo"}
    )


def credentials(tmp_path: Path, name: str = "a", **overrides: object) -> C2paCredentials:
    return C2paCredentials(make_settings(tmp_path / name, **overrides))


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        out.append((png[i + 4 : i + 8], png[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in parts)
    return imaging.PNG_MAGIC + body


def test_signed_image_verifies_as_valid_and_says_what_made_it(tmp_path: Path) -> None:
    creds = credentials(tmp_path)
    png = generated_png()
    signed = creds.sign(png, "image/png", CLAIM)
    assert b"caBX" in [t for t, _ in chunks(signed)] and len(signed) > len(png)
    report = creds.verify(signed, "image/png")
    assert report.state == "valid", report
    assert report.failures == []
    assert report.actions == ["c2pa.created"]
    assert report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.software is not None and report.software.startswith("Studiolo ")
    assert report.issuer is not None and "Studiolo install" in report.issuer
    assert report.generation == {"model": "demo", "kind": "txt2img", "photo_input": False, **CLAIM.generation}
    assert creds.verify(signed).state == "valid"  # the type sniffed from the bytes


def test_signing_keeps_the_png_text_chunks_readable(tmp_path: Path) -> None:
    signed = credentials(tmp_path).sign(generated_png(), "image/png", CLAIM)
    parameters, metadata = imaging.read_png_metadata(signed)
    assert parameters == "a red fox\nSteps: 4, Seed: 7, Size: 64x64"
    assert metadata == {"seed": 7, "model": "demo"}
    with Image.open(io.BytesIO(signed)) as opened:
        assert np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(picture()))


def test_tampered_pixels_are_invalid(tmp_path: Path) -> None:
    creds = credentials(tmp_path)
    signed = creds.sign(generated_png(), "image/png", CLAIM)
    # Other pixels under the same manifest: the chunks of another image replace the signed one's IDAT.
    other = [c for c in chunks(generated_png((10, 180, 60))) if c[0] == b"IDAT"]
    kept = [c for c in chunks(signed) if c[0] != b"IDAT"]
    tampered = assemble(kept[:-1] + other + kept[-1:])
    with Image.open(io.BytesIO(tampered)) as opened:
        opened.load()  # still a well-formed PNG
    report = creds.verify(tampered, "image/png")
    assert report.state == "invalid"
    assert "assertion.dataHash.mismatch" in report.failures
    assert report.actions == ["c2pa.created"]  # what the manifest claims is still shown


def test_another_installs_image_is_untrusted_until_its_root_is_an_anchor(tmp_path: Path) -> None:
    theirs = credentials(tmp_path, "theirs")
    signed = theirs.sign(generated_png(), "image/png", CLAIM)
    report = credentials(tmp_path, "ours").verify(signed, "image/png")
    assert report.state == "untrusted"
    assert report.failures == ["signingCredential.untrusted"]
    assert report.generation["seed"] == 7
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes((tmp_path / "theirs" / IDENTITY_DIR / "root.pem").read_bytes())
    trusting = credentials(tmp_path, "ours", c2pa_trust_anchors_file=anchors)
    assert trusting.verify(signed, "image/png").state == "valid"


def test_a_file_without_a_manifest_reads_none(tmp_path: Path) -> None:
    report = credentials(tmp_path).verify(generated_png(), "image/png")
    assert report.state == "none" and report.actions == [] and report.issuer is None


def test_an_edit_names_its_parent_as_an_ingredient(tmp_path: Path) -> None:
    creds = credentials(tmp_path)
    claim = Claim(title="edit.png", model="demo", kind="img2img", photo_input=True, parent=generated_png((5, 5, 90)))
    signed = creds.sign(generated_png(), "image/png", claim)
    report = creds.verify(signed)
    assert report.state == "valid", report
    assert report.actions == ["c2pa.opened", "c2pa.edited"]
    assert report.generation["photo_input"] is True
    # A parent c2pa-rs cannot read is left out rather than the output left unsigned.
    broken = Claim(title="edit.png", model="demo", kind="img2img", photo_input=True, parent=b"\x89PNG\r\n\x1a\nxx")
    report = creds.verify(creds.sign(generated_png(), "image/png", broken))
    assert report.state == "valid" and report.actions == ["c2pa.created"]


def test_jpeg_and_webp_are_signed_too(tmp_path: Path) -> None:
    creds = credentials(tmp_path)
    for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        buffer = io.BytesIO()
        picture().save(buffer, fmt)
        signed = creds.sign(buffer.getvalue(), mime, CLAIM)
        assert creds.verify(signed).state == "valid", fmt


def test_the_install_identity_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "data" / IDENTITY_DIR
    # Several workers at first use: one identity wins and every one of them reads it.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: install_identity(directory), range(4)))
    assert len({chain for chain, _, _ in results}) == 1
    assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.parent.iterdir()) == [IDENTITY_DIR]  # no staging left behind
    assert install_identity(directory) == results[0]
    creds = C2paCredentials(make_settings(tmp_path / "data"))
    assert creds.identity().chain_pem == (directory / CHAIN_FILE).read_bytes()


def test_a_configured_chain_signs_instead(tmp_path: Path) -> None:
    chain, key, root = make_identity("configured")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "roots.pem").write_bytes(root)
    creds = credentials(
        tmp_path,
        c2pa_cert_file=tmp_path / "chain.pem",
        c2pa_key_file=tmp_path / "key.pem",
        c2pa_trust_anchors_file=tmp_path / "roots.pem",
    )
    report = creds.verify(creds.sign(generated_png(), "image/png", CLAIM))
    assert report.state == "valid" and report.issuer is not None and "install configured" in report.issuer
    assert not (tmp_path / "a" / IDENTITY_DIR).exists()  # no identity of its own is made
    half = credentials(tmp_path, "b", c2pa_cert_file=tmp_path / "chain.pem")
    with pytest.raises(ValueError, match="STUDIOLO_C2PA_KEY_FILE"):
        half.sign(generated_png(), "image/png", CLAIM)


def test_the_output_guard_seals_with_built_credentials(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    creds = build_credentials(settings)
    assert creds is not None
    guard = OutputGuard(
        classifier=None,
        threshold=0.8,
        credentials=creds,
        mark=None,
        payload=None,
        terms=lambda _owner: OwnerTerms(watermark=False, nsfw_policy="allow"),
    )
    sealed, signed = guard.seal(generated_png(), CLAIM)
    assert signed and creds.verify(sealed).state == "valid"
    assert build_credentials(make_settings(tmp_path / "off", c2pa_enabled=False)) is None
    # A signer that cannot sign (a key file gone) stores the image unsigned instead of losing it.
    broken = build_credentials(make_settings(tmp_path / "x", c2pa_cert_file=tmp_path / "none.pem"))
    guard.credentials = broken
    assert guard.seal(b"png", CLAIM) == (b"png", False)
