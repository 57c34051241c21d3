"""C2PA Content Credentials with c2pa-python (c2pa-rs): every generated image is signed with a manifest that says
an AI model made it, and a file's manifest can be checked (issue 17).

The signing identity is a certificate chain and its ES256 key: a real one from the settings (STUDIOLO_C2PA_CERT_FILE
and _KEY_FILE, e.g. from a CA on the C2PA trust list), else a per-install root and leaf made with ``cryptography``
at first use under data_dir/c2pa/. The verifier trusts this install's own root and the roots of
STUDIOLO_C2PA_TRUST_ANCHORS_FILE, so this install's images read "valid" here and "untrusted" elsewhere until the
install signs with a chain others trust. c2pa is imported on first use: it loads a 23 MB native library (~0.1 s)
that the API processes and the CLI rarely need.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from studiolo import __version__
from studiolo.domain.gallery.imaging import sniff_image_format
from studiolo.domain.safety.ports import Claim, ProvenanceReport
from studiolo.settings import Settings

log = logging.getLogger(__name__)

TRAINED_ALGORITHMIC_MEDIA: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL: Final = "org.studiolo.generation"
SOFTWARE: Final = "Studiolo"
MIME_BY_FORMAT: Final = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

IDENTITY_DIR: Final = "c2pa"
CHAIN_FILE: Final = "chain.pem"  # the leaf, then the root
KEY_FILE: Final = "signer.key"  # the leaf's PKCS#8 key, mode 0600
ROOT_FILE: Final = "root.pem"  # the trust anchor this install's verifier pins
# A manifest without a time stamp is checked against the certificate's validity today: the leaf lives as long as
# the root so an install's images do not turn "invalid" while it runs. The root's key signs the leaf once and is
# never written to disk, so nobody can issue another certificate under it.
_ROOT_YEARS: Final = 30


# A claim thumbnail would triple a PNG's size (research 05: 51 KB -> 212 KB) and repeat what the file shows. c2pa-rs
# reads every signed file back by default: 3.4 of 4.2 ms per image here, for manifests whose every shape the tests
# verify (and GET /images/{id}/provenance verifies each stored one on demand).
_SIGNING: Final = {"builder": {"thumbnail": {"enabled": False}}, "verify": {"verify_after_sign": False}}


@dataclass(frozen=True)
class SigningIdentity:
    """What signs (chain, leaf first, and its key, PEM) and what the verifier trusts (PEM roots)."""

    chain_pem: bytes
    key_pem: bytes
    anchors_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, SOFTWARE)]
    )


def _key_usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not sign,
        crl_sign=not sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_identity(tag: str | None = None) -> tuple[bytes, bytes, bytes]:
    """A fresh root and signing leaf (P-256): (chain PEM, leaf key PEM, root PEM). ``tag`` names the install."""
    tag = tag or secrets.token_hex(4)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=365 * _ROOT_YEARS)
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{SOFTWARE} install {tag} root")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    # c2pa-rs refuses a self-signed signing certificate and wants an end entity with a signing EKU (C2PA 2.x
    # certificate profile): emailProtection is one it accepts.
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{SOFTWARE} install {tag}"))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    root_pem = root.public_bytes(pem)
    return leaf.public_bytes(pem) + root_pem, key_pem, root_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def install_identity(directory: Path) -> tuple[bytes, bytes, bytes]:
    """This install's (chain, key, root) PEMs from ``directory``, made there on first use.

    Race-safe for several worker processes: each makes its pair in a private temporary directory and renames it into
    place; rename(2) of a directory onto a non-empty one fails, so the first process wins and the others read its
    files (one identity per install, never a mix of two)."""
    if not (directory / KEY_FILE).exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".c2pa-", dir=directory.parent))  # mode 0700
        try:
            chain, key, root = make_identity()
            _write(staging / CHAIN_FILE, chain, 0o644)
            _write(staging / ROOT_FILE, root, 0o644)
            _write(staging / KEY_FILE, key, 0o600)
            try:
                os.rename(staging, directory)
                log.info("made this install's C2PA signing certificate in %s", directory)
            except OSError:  # another process was first (or left an empty directory, which rename replaces)
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return (
        (directory / CHAIN_FILE).read_bytes(),
        (directory / KEY_FILE).read_bytes(),
        (directory / ROOT_FILE).read_bytes(),
    )


def load_identity(settings: Settings) -> SigningIdentity:
    """The configured chain and key, else this install's own; anchors: its own root plus the configured ones.

    Raises ValueError for half a configuration (a certificate without a key or the reverse)."""
    anchors = settings.c2pa_trust_anchors_file.read_bytes() if settings.c2pa_trust_anchors_file else b""
    cert_file, key_file = settings.c2pa_cert_file, settings.c2pa_key_file
    if cert_file is not None or key_file is not None:
        if cert_file is None or key_file is None:
            raise ValueError("set both STUDIOLO_C2PA_CERT_FILE and STUDIOLO_C2PA_KEY_FILE, or neither")
        return SigningIdentity(chain_pem=cert_file.read_bytes(), key_pem=key_file.read_bytes(), anchors_pem=anchors)
    chain, key, root = install_identity(settings.data_dir / IDENTITY_DIR)
    return SigningIdentity(chain_pem=chain, key_pem=key, anchors_pem=root + b"\n" + anchors)


def manifest_for(claim: Claim, mime: str, *, edited: bool) -> dict[str, Any]:
    """The manifest definition of ``claim``: an AI creation, or an AI edit of the parent ingredient."""
    agent = {"name": SOFTWARE, "version": __version__}
    what = f"{claim.kind} with the model {claim.model}" + (
        " from a photo the user uploaded" if claim.photo_input else ""
    )
    made: dict[str, Any] = {
        "action": "c2pa.edited" if edited else "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": agent,
        "description": f"Generated by {what}",
    }
    # C2PA 2.x: an edit opens its parent ingredient first; a creation has no parent.
    actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}, made] if edited else [made]
    generation = {"model": claim.model, "kind": claim.kind, "photo_input": claim.photo_input, **claim.generation}
    return {
        "claim_generator_info": [agent],
        "title": claim.title,
        "format": mime,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": actions}},
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


class C2paCredentials:
    """ContentCredentials with c2pa-python: ES256, no claim thumbnail, the identity loaded once on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tsa_url = settings.c2pa_tsa_url or None
        self._identity: SigningIdentity | None = None
        self._lock = threading.Lock()

    def identity(self) -> SigningIdentity:
        """The signing identity (made on first use when none is configured)."""
        with self._lock:
            if self._identity is None:
                self._identity = load_identity(self.settings)
            return self._identity

    def sign(self, data: bytes, mime: str, claim: Claim) -> bytes:
        """``data`` with a C2PA manifest embedded (PNG: a caBX chunk before the pixels; JPEG: APP11)."""
        import c2pa

        identity = self.identity()
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain_pem, identity.key_pem, self.tsa_url)
        out = io.BytesIO()
        with (
            c2pa.Context.from_dict(_SIGNING) as context,
            c2pa.Signer.from_info(info) as signer,
            _builder(context, claim, mime) as builder,
        ):
            builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()

    def verify(self, data: bytes, mime: str | None = None) -> ProvenanceReport:
        """What ``data``'s manifest says, checked against the pixels and this install's trust anchors."""
        import c2pa

        if mime is None:
            mime = MIME_BY_FORMAT.get(sniff_image_format(data) or "", "image/png")
        anchors = self.identity().anchors_pem.decode("ascii", errors="replace")
        settings = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}}
        with c2pa.Context.from_dict(settings) as context:
            try:
                reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context)
            except c2pa.C2paError as exc:
                # The manifest is there but broken (or the file is): nothing it says can be believed.
                return ProvenanceReport(state="invalid", failures=[f"{type(exc).__name__.lstrip('_')}: {exc}"[:300]])
            if reader is None:
                return ProvenanceReport(state="none")
            with reader:
                state, results = reader.get_validation_state(), reader.get_validation_results()
                return report_of(state, results, reader.get_active_manifest())


def _builder(context: Any, claim: Claim, mime: str) -> Any:
    """The c2pa Builder of ``claim``: an edit of its parent ingredient when it has one, else a creation."""
    import c2pa

    if claim.parent is not None:
        builder = c2pa.Builder(manifest_for(claim, mime, edited=True), context=context)
        try:
            builder.add_ingredient(
                {"title": "input", "relationship": "parentOf", "label": "parent"},
                claim.parent_mime,
                io.BytesIO(claim.parent),
            )
            return builder
        except c2pa.C2paError:
            # A parent c2pa-rs cannot parse should not cost the output its credentials: it is then signed as a
            # creation, which still states the photo input.
            log.warning("the parent image of %s is not a readable ingredient; signing without it", claim.title)
            builder.close()
    return c2pa.Builder(manifest_for(claim, mime, edited=False), context=context)


def report_of(state: str | None, results: dict[str, Any] | None, manifest: dict[str, Any] | None) -> ProvenanceReport:
    """A ProvenanceReport from what c2pa's Reader says (validation state "Trusted" / "Valid" / "Invalid")."""
    active = (results or {}).get("activeManifest") or {}
    failures = [str(f.get("code")) for f in active.get("failure", []) if isinstance(f, dict)]
    manifest = manifest or {}
    signature = manifest.get("signature_info") or {}
    issuer = " / ".join(str(signature[k]) for k in ("common_name", "issuer") if signature.get(k)) or None
    actions: list[dict[str, Any]] = []
    generation: dict[str, Any] = {}
    for assertion in manifest.get("assertions") or []:
        label, body = str(assertion.get("label", "")), assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            actions.extend(a for a in body.get("actions", []) if isinstance(a, dict))
        elif label == GENERATION_LABEL and isinstance(body, dict):
            generation = body
    generator = (manifest.get("claim_generator_info") or [{}])[0]
    software = " ".join(str(generator[k]) for k in ("name", "version") if generator.get(k)) or None
    source = next((a["digitalSourceType"] for a in actions if a.get("digitalSourceType")), None)
    # verify_trust is on: "Valid" is an intact manifest whose signer no anchor vouches for.
    verdict: Literal["valid", "untrusted", "invalid"] = (
        "valid" if state == "Trusted" else "untrusted" if state == "Valid" else "invalid"
    )
    return ProvenanceReport(
        state=verdict,
        issuer=issuer,
        signed_at=str(signature["time"]) if signature.get("time") else None,
        software=software,
        actions=[str(a.get("action")) for a in actions],
        digital_source_type=source,
        generation=generation,
        failures=failures,
    )


def build_credentials(settings: Settings) -> C2paCredentials | None:
    """The signer the worker's OutputGuard uses; None when STUDIOLO_C2PA_ENABLED is false."""
    return C2paCredentials(settings) if settings.c2pa_enabled else None
